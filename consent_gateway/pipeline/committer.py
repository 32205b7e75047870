"""The committer: takes records off the queue, builds their rows through ``RowBuilder`` (so only
pseudonymised rows ever reach disk), appends them to the journal as one group commit, syncs once
and answers the waiting ``/collect`` requests."""

from __future__ import annotations

import collections
import queue
import time
from collections.abc import Callable
from typing import Any

from msgspec import structs

from ..policy import withdrawn
from ..records import LINK, CollectedEvents, RawRecord, ReceiptRecord
from ..rows import RowBuilder
from .backlog import Backlog
from .config import WriterConfig
from .erasure import Erasure
from .messages import Command, EventBatch, notify
from .stats import PipelineStats

_Record = RawRecord | ReceiptRecord | CollectedEvents


class Committer:
    """Runs on the writer thread; ``loop`` returns the stop command's deadline."""

    def __init__(
        self,
        source: queue.SimpleQueue[Any],
        visits: collections.deque[RawRecord],
        backlog: Backlog,
        erasure: Erasure,
        *,
        rows: RowBuilder,
        config: WriterConfig,
        stats: PipelineStats,
        taken: Callable[[int], None],
        visits_taken: Callable[[int], None],
    ) -> None:
        self._source = source
        # Visit records arrive here, not through ``source``: appending to a deque wakes nobody,
        # so a page costs the writer no thread switch (Pipeline.submit).
        self._visits = visits
        self._backlog = backlog
        self._erasure = erasure
        self._rows = rows
        self._cfg = config
        self._stats = stats
        self._taken = taken
        self._visits_taken = visits_taken

    def __repr__(self) -> str:
        return f"Committer(visits={len(self._visits)})"

    def loop(self) -> float:
        source = self._source
        limit = self._cfg.batch_size
        visit_window = self._cfg.visit_window
        while True:
            try:
                # Records that arrived while the last group was being committed: they have waited
                # one fsync already, so they are committed at once, together.
                first = source.get_nowait()
                idle = False
            except queue.Empty:
                try:
                    first = source.get(timeout=visit_window)
                    idle = True
                except queue.Empty:
                    if self._visits:
                        stop = self._handle([])
                        if stop is not None:
                            return stop
                    continue
            items = [first]
            if not isinstance(first, Command):
                if idle and self._cfg.commit_window:
                    # Group commit from idle, when a window is set: sleep through it, then take
                    # what gathered. Without one (the default) the first record is committed at
                    # once and whatever arrives during its fsync forms the next group: a window
                    # would keep the writer idle while the event loop answers the last group, so
                    # clients that wait on their answers would reach it in lockstep.
                    time.sleep(self._cfg.commit_window)
                while len(items) < limit and not isinstance(items[-1], Command):
                    try:
                        items.append(source.get_nowait())
                    except queue.Empty:
                        break
            stop = self._handle(items)
            if stop is not None:
                return stop

    def _take_visits(self) -> list[RawRecord]:
        visits = self._visits
        taken = [visits.popleft() for _ in range(len(visits))]
        self._visits_taken(len(taken))
        return taken

    def _handle(self, items: list[Any]) -> float | None:
        """Commit the records among ``items`` in order around their commands; the deadline on stop.

        Visit records waiting on the side go first: each was submitted before this group was
        taken, so before any command in it (a flush then covers them, an erasure sees them).
        """
        records: list[_Record] = list(self._take_visits())
        waiters: list[Callable[[Any], None]] = []
        taken = 0  # visits are counted apart (Pipeline.visits_taken)
        for item in items:
            if isinstance(item, Command):
                self.commit(records, waiters)
                records, waiters = [], []
                self._taken(taken)
                taken = 0
                if item.kind == "stop":
                    return float(item.arg)
                if item.kind == "erase":
                    self._erasure.erase(str(item.arg), item.done)
                else:
                    b = self._backlog
                    with b.lock:
                        b.flush_waiters.append(item.done or (lambda _: None))
                        b.lock.notify_all()
            elif isinstance(item, EventBatch):
                records.append(item.events)
                waiters.append(item.done)
                taken += len(item.events)
            else:
                records.append(item)
                taken += 1
        self.commit(records, waiters)
        self._taken(taken)
        return None

    def drain(self) -> None:
        """Commit what is still queued (at stop); commands left behind are answered False."""
        records: list[_Record] = list(self._take_visits())
        waiters: list[Callable[[Any], None]] = []
        queued = 0  # records counted in Pipeline.queued (visits are counted apart)
        while True:
            try:
                item = self._source.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Command):
                if item.done is not None:
                    item.done(False)
            elif isinstance(item, EventBatch):
                records.append(item.events)
                waiters.append(item.done)
                queued += len(item.events)
            else:
                records.append(item)
                queued += 1
        records.extend(self._take_visits())  # the last ones, submitted while the stop was queued
        self.commit(records, waiters)
        self._taken(queued)

    def commit(self, records: list[_Record], waiters: list[Callable[[Any], None]]) -> None:
        """One group commit: rows of ``records`` into the journal, then ``waiters`` answered."""
        if not records:
            notify(waiters, True)
            return
        full = self._backlog.journal.bytes >= self._cfg.journal_max_bytes
        events, keys, receipts, refused_events = self._lines(records, full=full)
        if full and refused_events:
            # The requests awaiting these records get 503 (nothing acknowledged is lost).
            self._stats.shed("event", "journal", refused_events)
            notify(waiters, False)
            waiters = []
        if not events and not receipts:
            notify(waiters, False)
            return
        self._append(events, keys, receipts, waiters)

    def _lines(self, records: list[_Record], *, full: bool) -> tuple[list[bytes], list[int], list[bytes], int]:
        """The event lines, their erasure keys and the receipt lines of ``records``, and how many
        events were refused because the journal is ``full`` (visits are shed and counted here)."""
        receipts: list[bytes] = []
        to_store: list[RawRecord] = []
        collected: list[CollectedEvents] = []
        erased_ids = self._erasure.withdrawn
        refused_events = 0
        for rec in records:
            if isinstance(rec, CollectedEvents):
                if full:
                    refused_events += len(rec)
                else:
                    collected.append(rec)
                continue
            if isinstance(rec, ReceiptRecord):
                # Receipts are proof of a choice already made: never shed, even past the limit.
                receipts.append(self._rows.receipt_line(rec))
                continue
            if full:
                if rec.kind in ("visit", LINK):  # neither is awaited by a request: shed and counted
                    self._stats.shed(rec.kind, "journal")
                else:
                    refused_events += 1
                continue
            if erased_ids and rec.consent_id is not None and rec.consent_id in erased_ids:
                if rec.kind == LINK:
                    continue  # a link is identifying by nature: a withdrawn one is not stored at all
                # A request that raced the withdrawal: keep the statistics, lose the identity.
                rec = structs.replace(rec, consent_id=None, action=withdrawn(rec.action))
            to_store.append(rec)
        events, keys = self._rows.event_lines(to_store)
        if collected:
            # Events of a request that raced a withdrawal are stored pseudonymised, as above.
            lines, collected_keys = self._rows.collected_lines(collected, erased_ids)
            events += lines
            keys += collected_keys
        return events, keys, receipts, refused_events

    def _append(
        self, events: list[bytes], keys: list[int], receipts: list[bytes], waiters: list[Callable[[Any], None]]
    ) -> None:
        b = self._backlog
        journal = b.journal
        started = time.perf_counter()
        with b.lock:
            group = journal.append_group(events, keys, receipts)
            journal.sync()
            was_idle = not (b.plans or b.groups)
            b.groups.append(group)
            if not journal.durable:
                # Nothing outlives the process: 202 waits for the insert, done now rather than at
                # the interval.
                group.waiters, waiters = waiters, []
                b.urgent = b.urgent or bool(group.waiters)
            b.publish()
            # An idle inserter sleeps with no deadline: wake it for the first rows so it schedules
            # their insert at the flush interval, and again when a full batch is waiting.
            if was_idle or not journal.durable or b.pending_rows() >= self._cfg.batch_size:
                b.lock.notify_all()
        if journal.durable:
            self._stats.committed(group.size, time.perf_counter() - started)
        notify(waiters, True)
