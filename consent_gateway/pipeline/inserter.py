"""The inserter thread: gathers durable groups into plans of up to ``batch_size`` rows and inserts
them into ClickHouse under the plan's deduplication token, retrying with backoff; then runs the
DELETEs that withdrawals owe."""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections.abc import Callable

from ..errors import StoreError
from ..store import DATA_ERRORS, EVENT_COLUMNS, RECEIPT_COLUMNS, Store, error_code
from .backlog import Backlog
from .config import WriterConfig
from .erasure import Erasure
from .journal import Plan
from .messages import notify
from .stats import PipelineStats

logger = logging.getLogger("consent_gateway.pipeline")

EVENT_NAMES = [n for n, _ in EVENT_COLUMNS]
RECEIPT_NAMES = [n for n, _ in RECEIPT_COLUMNS]
# The tables' column types, for the embedded engine's converting insert (Store.insert_lines).
_COLUMN_TYPES = {"events": [t for _, t in EVENT_COLUMNS], "consent_receipts": [t for _, t in RECEIPT_COLUMNS]}
# More refused rows than this in one plan means the table changed, not the rows: retry instead.
MAX_REFUSED = 16
# A repeated insert (same token) must not reach the daily rollup either: its materialized view
# derives a token of its own from the insert's, which events_daily then remembers (store/schema.py).
INSERT_DEDUP_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}


class Inserter(threading.Thread):
    """Owns the insert client. ``connect`` opens it, and is called again after a failure to
    connect, so a ClickHouse server that is down when the gateway starts is retried with backoff."""

    def __init__(
        self,
        backlog: Backlog,
        erasure: Erasure,
        *,
        connect: Callable[[], Store],
        config: WriterConfig,
        stats: PipelineStats,
    ) -> None:
        super().__init__(name="consent-gateway-inserter", daemon=True)
        self._backlog = backlog
        self._erasure = erasure
        self._connect = connect
        self._store: Store | None = None
        self._cfg = config
        self._stats = stats
        self._insert_settings = dict(config.insert_settings)
        self._failures = 0
        self._refused_in_plan = 0
        self._retry_at = 0.0
        self._last_insert = time.monotonic()

    def run(self) -> None:
        b = self._backlog
        while True:
            with b.lock:
                while True:
                    stopping = b.stop_at is not None
                    if stopping or b.flush_waiters or self._due():
                        break
                    b.lock.wait(self._wait_time())
                flushers, b.flush_waiters = b.flush_waiters, []
                force = stopping or bool(flushers) or b.urgent
                b.urgent = False
            if stopping:
                self._drain_until(b.stop_at or 0.0)
                for done in flushers:
                    done(False)
                return
            ok = self._insert_due(force=force)
            if not ok and not flushers and not b.journal.durable and b.has_waiters():
                with b.lock:
                    b.urgent = True  # retried at the next backoff expiry
            for done in flushers:
                done(ok)

    def _due(self) -> bool:
        """Whether there is work now (called with the lock held)."""
        b = self._backlog
        if b.idle():
            return False
        now = time.monotonic()
        if now < self._retry_at:
            return False
        if b.urgent or b.tombstones:
            return True
        return b.pending_rows() >= self._cfg.batch_size or now - self._last_insert >= self._cfg.flush_interval

    def _wait_time(self) -> float:
        if self._backlog.idle():
            return 3600.0
        due = max(self._retry_at, self._last_insert + self._cfg.flush_interval)
        return max(0.001, due - time.monotonic())

    def _drain_until(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._insert_due(force=True):
                return
            pause = min(self._retry_at, deadline) - time.monotonic()
            if pause > 0:
                time.sleep(min(pause, 0.5))

    def _insert_due(self, *, force: bool) -> bool:
        """Insert what is due, then run owed DELETEs; True when nothing is left pending."""
        b = self._backlog
        if not force and time.monotonic() < self._retry_at:
            return False
        while True:
            with b.lock:
                if not (b.plans or b.groups):
                    break
                if not force:
                    waited = time.monotonic() - self._last_insert
                    if b.pending_rows() < self._cfg.batch_size and waited < self._cfg.flush_interval:
                        break
            if not self._insert_next():
                return False
            with b.lock:
                if not force and b.pending_rows() < self._cfg.batch_size:
                    break  # the rest waits for the next interval, so inserts stay large
        self._erasure.run_owed(self._ensure_store, self._back_off)
        with b.lock:
            return b.idle()

    def _insert_next(self) -> bool:
        b = self._backlog
        with b.lock:
            plan = b.next_plan()
            events = [line for g in plan.groups for line in g.events]
            receipts = [current_receipt(line) for g in plan.groups for line in g.receipts]
        started = time.perf_counter()
        try:
            store = self._ensure_store()
            # The journal's lines go to ClickHouse as they are: no row is decoded or re-encoded here.
            self._refused_in_plan = 0
            stored_events = len(events) - self.insert_lines(store, "events", EVENT_NAMES, events, f"{plan.token}:e")
            stored_receipts = len(receipts) - self.insert_lines(
                store, "consent_receipts", RECEIPT_NAMES, receipts, f"{plan.token}:r"
            )
        except StoreError as exc:
            self._failed(plan, exc)
            return False
        elapsed = time.perf_counter() - started
        refusals = (("events", len(events) - stored_events), ("consent_receipts", len(receipts) - stored_receipts))
        for table, refused in refusals:
            if refused:
                # Counted once the plan is done, so a plan retried after an outage does not count twice.
                self._stats.refused(table, refused)
                # The rows themselves are not logged: they may carry visitor keys or paths.
                logger.error("ClickHouse refused %d rows of %s as invalid data; they are dropped", refused, table)
        with b.lock:
            b.plans.remove(plan)
            b.journal.append_commit(plan)
            b.journal.release()
            self._failures = 0
            self._retry_at = 0.0
            self._last_insert = time.monotonic()
            b.publish()
        replayed = sum(g.size for g in plan.groups if g.replayed)
        self._stats.inserted(stored_events, stored_receipts, replayed, elapsed)
        logger.debug(
            "inserted %d event rows and %d receipts in %.1f ms", stored_events, stored_receipts, 1000 * elapsed
        )
        for group in plan.groups:
            notify(group.waiters, True)
            group.waiters = []
        return True

    def insert_lines(self, store: Store, table: str, names: list[str], lines: list[bytes], token: str) -> int:
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
            code = error_code(exc)
            if code not in DATA_ERRORS:
                raise
            if len(lines) == 1:
                self._refused_in_plan += 1
                if self._refused_in_plan > MAX_REFUSED:
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
            refused += self.insert_lines(store, table, names, part, f"{token}/{len(part)}-{digest:08x}")
        return refused

    def _failed(self, plan: Plan, exc: StoreError) -> None:
        b = self._backlog
        with b.lock:
            failures, backoff = self._back_off()
            if not b.journal.durable:
                self._drop_overflow()
            b.publish()
        self._stats.insert_failed(str(exc))
        if failures == 1 or failures % 20 == 0:
            logger.error(
                "insert of %d rows failed (attempt %d; next in %.1fs, %s): %s",
                plan.size,
                failures,
                backoff,
                "kept in the journal" if b.journal.durable else "kept in memory",
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
        b = self._backlog
        while b.pending_rows() > self._cfg.max_pending and (b.plans or b.groups):
            victims = b.plans.pop(0).groups if b.plans else [b.groups.pop(0)]
            for group in victims:
                self._stats.lost(group.size)
                notify(group.waiters, False)
            logger.error("dropped the oldest rows: no journal and the retry buffer is full")

    def _ensure_store(self) -> Store:
        if self._store is None:
            self._store = self._connect()
        return self._store


def current_receipt(line: bytes) -> bytes:
    """A receipt line with today's columns: one journaled before receipts had the child columns ends
    with its device (a string), today's with the guardian categories (an array); defaults are added."""
    return line if line.endswith(b"]]") else line[:-1] + b",0,[]]"
