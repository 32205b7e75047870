"""The writer: group commits to the journal, batched inserts into ClickHouse, erasure.

Two threads. The committer (``Writer`` itself) takes records off the queue, builds their rows
through the policy (so only pseudonymised rows ever reach disk), appends them to the journal with
the other records of the same group commit, fsyncs once and answers the waiting ``/collect``
requests. The inserter gathers committed groups into plans of up to ``batch_size`` rows; a plan is
journaled (with its deduplication token) before it is inserted, so after a crash the very same
insert is repeated and ClickHouse drops it if it already arrived (``insert_deduplication_token``
on tables with ``non_replicated_deduplication_window``; see docs/pipeline.md). A slow or
unreachable ClickHouse therefore never delays an acknowledgement.
"""

from __future__ import annotations

import collections
import logging
import queue
import random
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreError
from ..policy import RowBuilder
from ..records import CollectedEvents, RawRecord, ReceiptRecord
from ..store import EVENT_COLUMNS, RECEIPT_COLUMNS, Store
from ..store.cluster import render
from .journal import Group, Journal, Plan, Recovered, erase_rows
from .metrics import PipelineMetrics

logger = logging.getLogger("consent_gateway.pipeline")

_EVENT_NAMES = [n for n, _ in EVENT_COLUMNS]
_RECEIPT_NAMES = [n for n, _ in RECEIPT_COLUMNS]
# The tables' column types, for the embedded engine's converting insert (Store.insert_lines).
_COLUMN_TYPES = {"events": [t for _, t in EVENT_COLUMNS], "consent_receipts": [t for _, t in RECEIPT_COLUMNS]}
# ClickHouse error codes that blame the data rather than the server: CANNOT_PARSE_TEXT,
# INCORRECT_NUMBER_OF_COLUMNS, CANNOT_PARSE_QUOTED_STRING, CANNOT_PARSE_INPUT_ASSERTION_FAILED,
# CANNOT_PARSE_DATE, CANNOT_PARSE_DATETIME, TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE,
# CANNOT_PARSE_NUMBER, INCORRECT_DATA, TOO_LARGE_STRING_SIZE, CANNOT_PARSE_UUID (errorCodeToName).
_DATA_ERRORS = frozenset({6, 7, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 376})
_CODE = re.compile(r"Code: (\d+)")
# More refused rows than this in one plan means the table changed, not the rows: retry instead.
_MAX_REFUSED = 16


# A repeated insert (same token) must not reach the daily rollup either: its materialized view
# derives a token of its own from the insert's, which events_daily then remembers (store/schema.py).
INSERT_DEDUP_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}


def _error_code(exc: Exception) -> int:
    found = _CODE.search(str(exc))
    return int(found.group(1)) if found else 0


# How long a withdrawn consent id stays on the list that turns late records anonymous.
_ERASED_MEMORY = 600.0


def notify(waiters: list[Callable[[Any], None]], value: Any) -> None:
    """Answer waiters; those of one event loop are answered with a single wake-up of that loop."""
    if not waiters:
        return
    by_loop: dict[Any, list[Any]] = {}
    for done in waiters:
        loop = getattr(done, "loop", None)
        if loop is None:
            done(value)
        else:
            by_loop.setdefault(loop, []).append(done)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, group, value)
        except RuntimeError:  # that loop is closed; nobody is waiting there any more
            pass


def _settle(waiters: list[Any], value: Any) -> None:
    for waiter in waiters:
        waiter.settle(value)


@dataclass(slots=True)
class Command:
    """An instruction that travels in order with the records."""

    kind: str  # "flush" | "erase" | "stop"
    arg: Any
    done: Callable[[Any], None] | None


@dataclass(slots=True)
class EventBatch:
    """The events of one ``/collect`` request; ``done(True)`` once they are durable."""

    events: CollectedEvents
    done: Callable[[Any], None]


@dataclass(slots=True)
class PipelineState:
    """What the request side reads about the writer (plain values, written by the writer only)."""

    journal_bytes: int = 0
    journal_full: bool = False
    visits_full: bool = False
    clickhouse_up: bool = True
    pending_rows: int = 0
    last_error: str = ""


@dataclass(slots=True)
class WriterStats:
    inserted_events: int = 0
    inserted_receipts: int = 0
    batches: int = 0
    failed_batches: int = 0
    dropped: int = 0
    rejected: int = 0
    erased: int = 0
    replayed: int = 0
    last_batch_size: int = 0
    last_insert_seconds: float = 0.0
    last_error: str = ""
    retrying: list[int] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class WriterConfig:
    """The writer's knobs, taken from Settings by the runtime."""

    batch_size: int = 50_000
    flush_interval: float = 1.0
    max_pending: int = 100_000
    commit_window: float = 0.001
    # How long visit records (awaited by nobody) may gather before a group commit of their own;
    # they also ride along with any earlier group commit.
    visit_window: float = 0.1
    journal_max_bytes: int = 512 * 1024 * 1024
    visit_shed_fraction: float = 0.9
    retry_initial: float = 0.25
    retry_max: float = 30.0
    insert_settings: tuple[tuple[str, str], ...] = ()
    cluster: str = ""  # a ClickHouse cluster: deletes go to each shard's local table ON CLUSTER


class Writer(threading.Thread):
    """Owns the journal and, through its inserter thread, the insert client.

    ``connect`` opens the insert client; it is called again after a failure to connect, so a
    ClickHouse server that is down when the gateway starts is simply retried with backoff.
    """

    def __init__(
        self,
        source: queue.SimpleQueue[Any],
        *,
        connect: Callable[[], Store],
        rows: RowBuilder,
        config: WriterConfig,
        journal: Journal | None = None,
        recovered: Recovered | None = None,
        metrics: PipelineMetrics | None = None,
        state: PipelineState | None = None,
        taken: Callable[[int], None] | None = None,
        visits: collections.deque[RawRecord] | None = None,
        visits_taken: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(name="consent-gateway-writer", daemon=True)
        self._source = source
        # Visit records arrive here, not through ``source``: appending to a deque wakes nobody,
        # so a page costs the writer no thread switch (Pipeline.submit).
        self._visits: collections.deque[RawRecord] = visits if visits is not None else collections.deque()
        self._connect = connect
        self._store: Store | None = None
        self._rows = rows
        self._cfg = config
        self._journal = journal
        self._recovered = recovered or Recovered()
        self.metrics = metrics or PipelineMetrics()
        self.state = state or PipelineState()
        self._taken = taken or (lambda n: None)
        self._visits_taken = visits_taken or (lambda n: None)
        self._insert_settings = dict(config.insert_settings)
        # Shared between the committer and the inserter, guarded by _lock (the journal too).
        self._lock = threading.Condition()
        self._plans: list[Plan] = []  # fixed inserts, oldest first (journaled when there is a journal)
        self._groups: list[Group] = []  # durable groups not yet in a plan, oldest first
        self._tombstones: dict[int, int] = {}  # tombstone seq -> visitor whose DELETE is still owed
        self._tomb_waiters: dict[int, Callable[[Any], None]] = {}
        self._flush_waiters: list[Callable[[Any], None]] = []
        self._urgent = False
        self._stop_at: float | None = None
        self._erased: dict[str, float] = {}
        self._failures = 0
        self._refused_in_plan = 0
        self._retry_at = 0.0
        self._last_insert = time.monotonic()
        self._mem_seq = 0
        self._mem_name = f"m-{uuid.uuid4().hex[:12]}"
        self._inserter = threading.Thread(target=self._insert_loop, name="consent-gateway-inserter", daemon=True)
        self.stats = WriterStats()
        self._publish()

    # -- the committer ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._replay()
            self._inserter.start()
            self._loop()
        except Exception:  # pragma: no cover - a bug; keep the journal, say so loudly
            logger.exception("the pipeline writer stopped on an unexpected error; the journal keeps its records")
            raise
        finally:
            with self._lock:
                if self._stop_at is None:
                    self._stop_at = time.monotonic()
                self._lock.notify_all()
            if self._inserter.is_alive():
                self._inserter.join()
            if self._journal is not None:
                with self._lock:
                    self._journal.close()
                    self._publish()

    def _loop(self) -> None:
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
                    if self._visits and self._handle([]):
                        return
                    continue
            items = [first]
            if not isinstance(first, Command):
                if idle:
                    # Group commit from idle: sleep through the window, then take what gathered.
                    # Waking for each record instead would cost the requests a thread switch each.
                    time.sleep(self._cfg.commit_window)
                while len(items) < limit and not isinstance(items[-1], Command):
                    try:
                        items.append(source.get_nowait())
                    except queue.Empty:
                        break
            if self._handle(items):
                return

    def _take_visits(self) -> list[RawRecord]:
        visits = self._visits
        taken = [visits.popleft() for _ in range(len(visits))]
        self._visits_taken(len(taken))
        return taken

    def _handle(self, items: list[Any]) -> bool:
        """Commit the records among ``items`` in order around their commands; True on stop.

        Visit records waiting on the side go first: each was submitted before this group was
        taken, so before any command in it (a flush then covers them, an erasure sees them).
        """
        records: list[RawRecord | ReceiptRecord | CollectedEvents] = list(self._take_visits())
        waiters: list[Callable[[Any], None]] = []
        taken = 0  # visits are counted apart (Pipeline.visits_taken)
        for item in items:
            if isinstance(item, Command):
                self._commit(records, waiters)
                records, waiters = [], []
                self._taken(taken)
                taken = 0
                if item.kind == "stop":
                    self._shutdown(float(item.arg))
                    return True
                if item.kind == "erase":
                    self._erase(str(item.arg), item.done)
                else:
                    with self._lock:
                        self._flush_waiters.append(item.done or (lambda _: None))
                        self._lock.notify_all()
            elif isinstance(item, EventBatch):
                records.append(item.events)
                waiters.append(item.done)
                taken += len(item.events)
            else:
                records.append(item)
                taken += 1
        self._commit(records, waiters)
        self._taken(taken)
        return False

    def _commit(
        self, records: list[RawRecord | ReceiptRecord | CollectedEvents], waiters: list[Callable[[Any], None]]
    ) -> None:
        if not records:
            notify(waiters, True)
            return
        receipts: list[bytes] = []
        to_store: list[RawRecord] = []
        collected: list[CollectedEvents] = []
        erased = self._erased
        journal = self._journal
        full = journal is not None and journal.bytes >= self._cfg.journal_max_bytes
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
                if rec.kind == "visit":
                    self.metrics.shed.labels(rec.kind, "journal").inc()
                else:
                    refused_events += 1
                continue
            if erased and rec.consent_id is not None and rec.consent_id in erased:
                # A request that raced the withdrawal: keep the statistics, lose the identity.
                rec.consent_id = None
                rec.action = "pseudonymise"
            to_store.append(rec)
        events, keys = self._rows.event_lines(to_store)
        if collected:
            # Events of a request that raced a withdrawal are stored pseudonymised, as above.
            lines, collected_keys = self._rows.collected_lines(collected, erased)
            events += lines
            keys += collected_keys
        if full and refused_events:
            # The requests awaiting these records get 503 (nothing acknowledged is lost).
            self.metrics.shed.labels("event", "journal").inc(refused_events)
            notify(waiters, False)
            waiters = []
        if not events and not receipts:
            notify(waiters, False)
            return
        if journal is None:
            with self._lock:
                self._mem_seq += 1
                self._groups.append(Group(self._mem_seq, events, keys, receipts, waiters=waiters))
                # Without a journal, 202 waits for the insert: do it now rather than at the interval.
                self._urgent = self._urgent or bool(waiters)
                self._publish()
                self._lock.notify_all()
            return
        started = time.perf_counter()
        with self._lock:
            group = journal.append_group(events, keys, receipts)
            journal.sync()
            was_idle = not (self._plans or self._groups)
            self._groups.append(group)
            self._publish()
            # An idle inserter sleeps with no deadline: wake it for the first rows so it schedules
            # their insert at the flush interval, and again when a full batch is waiting.
            if was_idle or self._pending_rows() >= self._cfg.batch_size:
                self._lock.notify_all()
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self.metrics.journaled.inc(group.size)
        notify(waiters, True)

    def _erase(self, consent_id: str, done: Callable[[Any], None] | None) -> None:
        now = time.monotonic()
        self._erased = {k: t for k, t in self._erased.items() if now - t < _ERASED_MEMORY}
        self._erased[consent_id] = now
        visitor = self._rows.visitor_of(consent_id)
        with self._lock:
            removed = 0
            for group in [g for p in self._plans for g in p.groups] + self._groups:
                removed += erase_rows(group, {visitor})
            if self._journal is not None:
                # The tombstone keeps the rows out of any replay: they are still in older segments.
                seq = self._journal.append_tombstone(visitor)
                self._journal.sync()
            else:
                self._mem_seq += 1
                seq = self._mem_seq
            # The inserter runs the DELETE after any insert in flight, so nothing slips past it.
            self._tombstones[seq] = visitor
            if done is not None:
                self._tomb_waiters[seq] = done
            self._lock.notify_all()
        self.metrics.erased.inc(removed)
        self.stats.erased += removed

    def _replay(self) -> None:
        """Put the journal's unfinished work ahead of every new record; the inserter starts on it."""
        rec = self._recovered
        with self._lock:
            self._plans.extend(rec.plans)
            self._groups.extend(rec.groups)
            self._tombstones.update(rec.tombstones)
            if rec.plans or rec.groups or rec.tombstones:
                logger.info("replaying %d journaled rows", rec.rows)
                self._urgent = True
            self._publish()
        if rec.erased_rows:
            self.metrics.erased.inc(rec.erased_rows)
        self._recovered = Recovered()

    def _shutdown(self, deadline: float) -> None:
        """Journal what is still queued, then let the inserter work until done or the deadline."""
        records: list[RawRecord | ReceiptRecord | CollectedEvents] = list(self._take_visits())
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
        self._commit(records, waiters)
        self._taken(queued)
        with self._lock:
            self._stop_at = deadline
            self._lock.notify_all()
        self._inserter.join(max(0.0, deadline - time.monotonic()) + 1.0)
        with self._lock:
            left = self._pending_rows()
        if left:
            where = "in the journal; they are replayed at the next start" if self._journal else "LOST (no journal)"
            logger.error("stopping with %d rows not in ClickHouse: %s", left, where)

    # -- the inserter -------------------------------------------------------------------------

    def _insert_loop(self) -> None:
        while True:
            with self._lock:
                while True:
                    stopping = self._stop_at is not None
                    if stopping or self._flush_waiters or self._due():
                        break
                    self._lock.wait(self._wait_time())
                flushers, self._flush_waiters = self._flush_waiters, []
                force = stopping or bool(flushers) or self._urgent
                self._urgent = False
            if stopping:
                self._drain_until(self._stop_at or 0.0)
                for done in flushers:
                    done(False)
                return
            ok = self._insert_due(force=force)
            if not ok and not flushers and self._journal is None and self._has_waiters():
                with self._lock:
                    self._urgent = True  # retried at the next backoff expiry
            for done in flushers:
                done(ok)

    def _due(self) -> bool:
        """Whether the inserter has work now (called with the lock held)."""
        if not (self._plans or self._groups or self._tombstones):
            return False
        now = time.monotonic()
        if now < self._retry_at:
            return False
        if self._urgent or self._tombstones:
            return True
        return self._pending_rows() >= self._cfg.batch_size or now - self._last_insert >= self._cfg.flush_interval

    def _wait_time(self) -> float:
        if not (self._plans or self._groups or self._tombstones):
            return 3600.0
        due = max(self._retry_at, self._last_insert + self._cfg.flush_interval)
        return max(0.001, due - time.monotonic())

    def _has_waiters(self) -> bool:
        with self._lock:
            return any(g.waiters for g in self._groups) or any(g.waiters for p in self._plans for g in p.groups)

    def _drain_until(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._insert_due(force=True):
                return
            pause = min(self._retry_at, deadline) - time.monotonic()
            if pause > 0:
                time.sleep(min(pause, 0.5))

    def _pending_rows(self) -> int:
        return sum(p.size for p in self._plans) + sum(g.size for g in self._groups)

    def _insert_due(self, *, force: bool) -> bool:
        """Insert what is due, then run owed DELETEs; True when nothing is left pending."""
        if not force and time.monotonic() < self._retry_at:
            return False
        while True:
            with self._lock:
                if not (self._plans or self._groups):
                    break
                if not force:
                    waited = time.monotonic() - self._last_insert
                    if self._pending_rows() < self._cfg.batch_size and waited < self._cfg.flush_interval:
                        break
            if not self._insert_next():
                return False
            with self._lock:
                if not force and self._pending_rows() < self._cfg.batch_size:
                    break  # the rest waits for the next interval, so inserts stay large
        self._run_tombstones()
        with self._lock:
            return not (self._plans or self._groups or self._tombstones)

    def _next_plan(self) -> Plan:
        """The oldest plan, made from the oldest groups if there is none (called with the lock held)."""
        if self._plans:
            return self._plans[0]
        taken: list[Group] = []
        size = 0
        while self._groups and (not taken or size + self._groups[0].size <= self._cfg.batch_size):
            group = self._groups.pop(0)
            taken.append(group)
            size += group.size
        if self._journal is not None:
            plan = self._journal.append_plan(taken)
            # The plan (and its token) must be durable before the insert it names.
            self._journal.sync()
        else:
            self._mem_seq += 1
            plan = Plan(self._mem_seq, taken, f"{self._mem_name}-{self._mem_seq}")
        self._plans.append(plan)
        return plan

    def _insert_next(self) -> bool:
        with self._lock:
            plan = self._next_plan()
            events = [line for g in plan.groups for line in g.events]
            receipts = [_current_receipt(line) for g in plan.groups for line in g.receipts]
        started = time.perf_counter()
        try:
            store = self._ensure_store()
            # The journal's lines go to ClickHouse as they are: no row is decoded or re-encoded here.
            self._refused_in_plan = 0
            stored_events = len(events) - self._insert_lines(store, "events", _EVENT_NAMES, events, f"{plan.token}:e")
            stored_receipts = len(receipts) - self._insert_lines(
                store, "consent_receipts", _RECEIPT_NAMES, receipts, f"{plan.token}:r"
            )
        except StoreError as exc:
            self._failed(plan, exc)
            return False
        elapsed = time.perf_counter() - started
        refusals = (("events", len(events) - stored_events), ("consent_receipts", len(receipts) - stored_receipts))
        for table, refused in refusals:
            if refused:
                # Counted once the plan is done, so a plan retried after an outage does not count twice.
                self.metrics.rejected.labels(table).inc(refused)
                self.stats.rejected += refused
                # The rows themselves are not logged: they may carry visitor keys or paths.
                logger.error("ClickHouse refused %d rows of %s as invalid data; they are dropped", refused, table)
        with self._lock:
            self._plans.remove(plan)
            if self._journal is not None:
                self._journal.append_commit(plan)
                self._journal.release()
            self._failures = 0
            self._retry_at = 0.0
            self._last_insert = time.monotonic()
            self._publish()
        replayed = sum(g.size for g in plan.groups if g.replayed)
        self.metrics.inserted.labels("events").inc(stored_events)
        self.metrics.inserted.labels("consent_receipts").inc(stored_receipts)
        self.metrics.replayed.inc(replayed)
        self.metrics.batch_rows.observe(stored_events + stored_receipts)
        self.metrics.insert_seconds.observe(elapsed)
        self.metrics.clickhouse_up.set(1)
        self.stats.batches += 1
        self.stats.inserted_events += stored_events
        self.stats.inserted_receipts += stored_receipts
        self.stats.replayed += replayed
        self.stats.last_batch_size = stored_events + stored_receipts
        self.stats.last_insert_seconds = elapsed
        self.state.clickhouse_up = True
        self.state.last_error = ""
        logger.debug(
            "inserted %d event rows and %d receipts in %.1f ms", stored_events, stored_receipts, 1000 * elapsed
        )
        for group in plan.groups:
            notify(group.waiters, True)
            group.waiters = []
        return True

    def _insert_lines(self, store: Store, table: str, names: list[str], lines: list[bytes], token: str) -> int:
        """Insert ``lines`` under ``token``; returns how many ClickHouse refused as invalid data.

        When ClickHouse refuses the insert for its data (a parse or type error, not an outage), the
        lines are split in halves, each inserted under a token of its own content, until the refused
        lines stand alone: those are dropped and counted, and every other line is stored. A repeat
        after a crash splits the same way, so the halves already stored are deduplicated.
        """
        if not lines:
            return 0
        settings = {**self._insert_settings, **INSERT_DEDUP_SETTINGS, "insert_deduplication_token": token}
        try:
            store.insert_lines(table, lines, names, settings=settings, column_types=_COLUMN_TYPES.get(table))
            return 0
        except StoreError as exc:
            code = _error_code(exc)
            if code not in _DATA_ERRORS:
                raise
            if len(lines) == 1:
                self._refused_in_plan += 1
                if self._refused_in_plan > _MAX_REFUSED:
                    # Row after row refused: the table, not the data, has changed (a column's type,
                    # say). Nothing more is dropped; the plan is retried until that is fixed.
                    raise StoreError(
                        f"ClickHouse refuses row after row of {table} (code {code}); check the table's schema"
                    ) from exc
                return 1
        mid = len(lines) // 2
        refused = 0
        for part in (lines[:mid], lines[mid:]):
            digest = zlib.crc32(b"\n".join(part))
            refused += self._insert_lines(store, table, names, part, f"{token}/{len(part)}-{digest:08x}")
        return refused

    def _failed(self, plan: Plan, exc: StoreError) -> None:
        with self._lock:
            failures, backoff = self._back_off()
            if self._journal is None:
                self._drop_overflow()
            self._publish()
        self.metrics.failed.inc()
        self.metrics.clickhouse_up.set(0)
        self.stats.failed_batches += 1
        self.stats.last_error = str(exc)
        self.state.clickhouse_up = False
        self.state.last_error = str(exc)
        if failures == 1 or failures % 20 == 0:
            logger.error(
                "insert of %d rows failed (attempt %d; next in %.1fs, %s): %s",
                plan.size,
                failures,
                backoff,
                "kept in the journal" if self._journal else "kept in memory",
                exc,
            )

    def _back_off(self) -> tuple[int, float]:
        """Count a failure and schedule the next attempt (called with the lock held)."""
        self._failures += 1
        backoff = min(self._cfg.retry_max, self._cfg.retry_initial * 2 ** min(self._failures - 1, 30))
        # Jitter spreads the retries of many workers after a shared outage.
        self._retry_at = time.monotonic() + random.uniform(backoff / 2, backoff)
        self._last_insert = time.monotonic()
        return self._failures, backoff

    def _drop_overflow(self) -> None:
        """Without a journal the retry buffer is bounded: the oldest rows go, and are counted."""
        while self._pending_rows() > self._cfg.max_pending and (self._plans or self._groups):
            victims = self._plans.pop(0).groups if self._plans else [self._groups.pop(0)]
            for group in victims:
                self.metrics.dropped.inc(group.size)
                self.stats.dropped += group.size
                notify(group.waiters, False)
            logger.error("dropped the oldest rows: no journal and the retry buffer is full")

    def _ensure_store(self) -> Store:
        if self._store is None:
            self._store = self._connect()
        return self._store

    def _run_tombstones(self) -> None:
        with self._lock:
            owed = list(self._tombstones.items())
        for seq, visitor in owed:
            try:
                store = self._ensure_store()
                delete = f"DELETE FROM {store.table('events')} WHERE identified = 1 AND visitor = {{v:UInt64}}"  # noqa: S608
                # On a cluster, `events` is a Distributed table, which cannot delete: the shards' local tables do.
                for statement in render([delete], self._cfg.cluster):
                    store.command(statement, {"v": visitor})
            except StoreError as exc:
                logger.error("erasure of a visitor's rows in ClickHouse failed; will retry: %s", exc)
                with self._lock:
                    self._back_off()
                    waiters = [self._tomb_waiters.pop(s) for s, _ in owed if s in self._tomb_waiters]
                for waiter in waiters:
                    waiter(False)  # the erasure is owed, and still happens once ClickHouse is back
                return
            with self._lock:
                del self._tombstones[seq]
                done = self._tomb_waiters.pop(seq, None)
                if self._journal is not None:
                    self._journal.append_done(seq)
                    self._journal.sync()
                    self._journal.release()
                self._publish()
            if done is not None:
                done(True)

    def _publish(self) -> None:
        """Copy the numbers the request side reads (called with the lock held)."""
        pending = self._pending_rows()
        self.state.pending_rows = pending
        self.metrics.pending_rows.set(pending)
        if self._journal is not None:
            size = self._journal.bytes
            self.state.journal_bytes = size
            self.state.journal_full = size >= self._cfg.journal_max_bytes
            self.state.visits_full = size >= self._cfg.journal_max_bytes * self._cfg.visit_shed_fraction
            self.metrics.journal_bytes.set(size)


def _current_receipt(line: bytes) -> bytes:
    """A receipt line with today's columns: one journaled before receipts had the child columns ends
    with its device (a string), today's with the guardian categories (an array); defaults are added."""
    return line if line.endswith(b"]]") else line[:-1] + b",0,[]]"
