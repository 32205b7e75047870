"""The work between the committer and the inserter: durable groups, fixed plans, owed erasures.

One condition guards all of it, and the journal too: the committer appends groups and
tombstones, the inserter plans, commits and resolves them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .config import WriterConfig
from .journal import Group, Journal, MemoryJournal, Plan
from .stats import PipelineStats


class Backlog:
    """Groups not yet in a plan, plans not yet inserted (oldest first) and DELETEs still owed."""

    def __init__(self, journal: Journal | MemoryJournal, config: WriterConfig, stats: PipelineStats) -> None:
        self.lock = threading.Condition()
        self.journal = journal
        self.plans: list[Plan] = []
        self.groups: list[Group] = []
        self.tombstones: dict[int, int] = {}  # tombstone seq -> visitor whose DELETE is still owed
        self.tomb_waiters: dict[int, Callable[[Any], None]] = {}
        self.flush_waiters: list[Callable[[Any], None]] = []
        self.urgent = False  # insert now rather than at the flush interval
        self.stop_at: float | None = None
        self._cfg = config
        self._stats = stats

    def __repr__(self) -> str:
        return f"Backlog(plans={len(self.plans)}, groups={len(self.groups)}, tombstones={len(self.tombstones)})"

    def idle(self) -> bool:
        """Nothing to insert and nothing to delete (called with the lock held)."""
        return not (self.plans or self.groups or self.tombstones)

    def pending_rows(self) -> int:
        return sum(p.size for p in self.plans) + sum(g.size for g in self.groups)

    def has_waiters(self) -> bool:
        with self.lock:
            return any(g.waiters for g in self.groups) or any(g.waiters for p in self.plans for g in p.groups)

    def next_plan(self) -> Plan:
        """The oldest plan, made from the oldest groups if there is none (called with the lock held)."""
        if self.plans:
            return self.plans[0]
        taken: list[Group] = []
        size = 0
        while self.groups and (not taken or size + self.groups[0].size <= self._cfg.batch_size):
            group = self.groups.pop(0)
            taken.append(group)
            size += group.size
        plan = self.journal.append_plan(taken)
        # The plan (and its token) must be durable before the insert it names.
        self.journal.sync()
        self.plans.append(plan)
        return plan

    def publish(self) -> None:
        """Copy the numbers the request side reads (called with the lock held)."""
        self._stats.publish(
            self.pending_rows(),
            self.journal.bytes,
            journal_max=self._cfg.journal_max_bytes,
            visit_fraction=self._cfg.visit_shed_fraction,
        )
