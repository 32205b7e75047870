"""Withdrawals: a consent id's identified rows leave the backlog at once; the DELETE in ClickHouse
is owed (a journaled tombstone) until it has run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from ..rows import RowBuilder
from ..store import Store
from ..store.statements import erase_visitor
from .backlog import Backlog
from .journal import erase_rows
from .stats import PipelineStats

logger = logging.getLogger("consent_gateway.pipeline")

# How long a withdrawn consent id stays on the list that turns late records anonymous.
_WITHDRAWN_MEMORY = 600.0


class Erasure:
    """``erase`` runs on the committer thread, in order with the records; ``run_owed`` on the
    inserter thread, after any insert in flight, so no row slips past the DELETE."""

    def __init__(self, backlog: Backlog, rows: RowBuilder, stats: PipelineStats, *, cluster: str) -> None:
        self._backlog = backlog
        self._rows = rows
        self._stats = stats
        self._cluster = cluster
        # Consent ids withdrawn lately, and when: records of theirs still arriving lose the identity.
        self.withdrawn: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"Erasure(withdrawn={len(self.withdrawn)})"

    def erase(self, consent_id: str, done: Callable[[Any], None] | None) -> None:
        now = time.monotonic()
        self.withdrawn = {k: t for k, t in self.withdrawn.items() if now - t < _WITHDRAWN_MEMORY}
        self.withdrawn[consent_id] = now
        visitor = self._rows.visitor_of(consent_id)
        b = self._backlog
        with b.lock:
            removed = 0
            for group in [g for p in b.plans for g in p.groups] + b.groups:
                removed += erase_rows(group, {visitor})
            # The tombstone keeps the rows out of any replay: they are still in older segments.
            seq = b.journal.append_tombstone(visitor)
            b.journal.sync()
            b.tombstones[seq] = visitor
            if done is not None:
                b.tomb_waiters[seq] = done
            b.lock.notify_all()
        self._stats.erased_rows(removed)

    def run_owed(self, store: Callable[[], Store], back_off: Callable[[], object]) -> None:
        """Run the owed DELETEs in order. When ClickHouse fails one, ``back_off`` is called (with the
        lock held), the waiting withdrawals are answered False and the DELETEs stay owed."""
        b = self._backlog
        with b.lock:
            owed = list(b.tombstones.items())
        for seq, visitor in owed:
            try:
                erase_visitor(store(), visitor, self._cluster)
            except StoreError as exc:
                logger.error("erasure of a visitor's rows in ClickHouse failed; will retry: %s", exc)
                with b.lock:
                    back_off()
                    waiters = [b.tomb_waiters.pop(s) for s, _ in owed if s in b.tomb_waiters]
                for waiter in waiters:
                    waiter(False)  # the erasure is owed, and still happens once ClickHouse is back
                return
            with b.lock:
                del b.tombstones[seq]
                done = b.tomb_waiters.pop(seq, None)
                b.journal.append_done(seq)
                b.journal.sync()
                b.journal.release()
                b.publish()
            if done is not None:
                done(True)
