"""The writer thread: batches rows per table and inserts them with explicit column types."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreError
from ..policy import RowBuilder
from ..records import RawRecord, ReceiptRecord
from ..store import EVENT_COLUMNS, RECEIPT_COLUMNS, Store

logger = logging.getLogger("consent_gateway.pipeline")

_EVENT_NAMES = [n for n, _ in EVENT_COLUMNS]
_EVENT_TYPES = [t for _, t in EVENT_COLUMNS]
_RECEIPT_NAMES = [n for n, _ in RECEIPT_COLUMNS]
_RECEIPT_TYPES = [t for _, t in RECEIPT_COLUMNS]
# How long a withdrawn consent id stays on the list that turns late records anonymous.
_ERASED_MEMORY = 600.0


@dataclass(slots=True)
class Command:
    """An instruction that travels in order with the records."""

    kind: str  # "flush" | "erase" | "stop"
    arg: Any
    done: Callable[[Any], None] | None


@dataclass(slots=True)
class WriterStats:
    inserted_events: int = 0
    inserted_receipts: int = 0
    batches: int = 0
    failed_batches: int = 0
    dropped: int = 0
    erased: int = 0
    last_batch_size: int = 0
    last_insert_seconds: float = 0.0
    last_error: str = ""
    retrying: list[int] = field(default_factory=list)


class Writer(threading.Thread):
    """Owns the insert client. Batches up to ``batch_size`` rows or ``flush_interval`` seconds.

    The request path never waits for it. A failed insert is retried on the next flush with the
    batch kept in memory, up to ``max_pending`` rows; beyond that the oldest rows are dropped and
    counted.
    """

    def __init__(
        self,
        source: queue.SimpleQueue[Any],
        *,
        store: Store,
        rows: RowBuilder,
        batch_size: int,
        flush_interval: float,
        max_pending: int,
    ) -> None:
        super().__init__(name="consent-gateway-writer", daemon=True)
        self._source = source
        self._store = store
        self._rows = rows
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_pending = max_pending
        self._events: list[RawRecord] = []
        self._receipts: list[ReceiptRecord] = []
        self._pending_events: list[list[Any]] = []
        self._pending_receipts: list[list[Any]] = []
        self._erased: dict[str, float] = {}
        self.stats = WriterStats()

    def run(self) -> None:
        last_flush = time.monotonic()
        while True:
            wait = max(0.0, self._interval - (time.monotonic() - last_flush))
            try:
                item = self._source.get(timeout=wait)
            except queue.Empty:
                item = None
            stop = False
            while item is not None:
                if isinstance(item, Command):
                    if item.kind == "stop":
                        stop = True
                        break
                    self._command(item)
                    last_flush = time.monotonic()
                else:
                    self._take(item)
                if len(self._events) + len(self._receipts) >= self._batch_size:
                    break
                try:
                    item = self._source.get_nowait()
                except queue.Empty:
                    item = None
            if stop:
                self._drain_after_stop()
                self._flush()
                return
            if (
                len(self._events) + len(self._receipts) >= self._batch_size
                or time.monotonic() - last_flush >= self._interval
            ):
                self._flush()
                last_flush = time.monotonic()

    def _drain_after_stop(self) -> None:
        # Records submitted after the stop command still get written: nothing acknowledged is lost.
        while True:
            try:
                item = self._source.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Command):
                if item.done is not None:
                    item.done(False)
            else:
                self._take(item)

    def _take(self, item: RawRecord | ReceiptRecord) -> None:
        if isinstance(item, ReceiptRecord):
            self._receipts.append(item)
            return
        if item.consent_id is not None and item.consent_id in self._erased:
            # A request that raced the withdrawal: keep the statistics, lose the identity.
            item.consent_id = None
            item.action = "pseudonymise"
        self._events.append(item)

    def _command(self, cmd: Command) -> None:
        result: Any = True
        if cmd.kind == "erase":
            result = self._erase(str(cmd.arg))
        else:
            result = self._flush()
        if cmd.done is not None:
            cmd.done(result)

    def _erase(self, consent_id: str) -> bool:
        now = time.monotonic()
        self._erased = {k: t for k, t in self._erased.items() if now - t < _ERASED_MEMORY}
        self._erased[consent_id] = now
        before = len(self._events)
        self._events = [r for r in self._events if r.consent_id != consent_id]
        self.stats.erased += before - len(self._events)
        visitor = self._rows.visitor_of(consent_id)
        self._pending_events = [r for r in self._pending_events if not (r[6] == 1 and r[7] == visitor)]
        flushed = self._flush()
        try:
            self._store.command(
                f"DELETE FROM {self._store.table('events')} WHERE identified = 1 AND visitor = {{v:UInt64}}",
                {"v": visitor},
            )
        except StoreError as exc:
            logger.error("erasure failed: %s", exc)
            return False
        return flushed

    def _flush(self) -> bool:
        if self._events:
            self._pending_events.extend(self._rows.event_row(r) for r in self._events)
            self._events = []
        if self._receipts:
            self._pending_receipts.extend(self._rows.receipt_row(r) for r in self._receipts)
            self._receipts = []
        ok = True
        for table, pending, names, types in (
            ("events", self._pending_events, _EVENT_NAMES, _EVENT_TYPES),
            ("consent_receipts", self._pending_receipts, _RECEIPT_NAMES, _RECEIPT_TYPES),
        ):
            if not pending:
                continue
            started = time.perf_counter()
            try:
                self._store.insert(table, pending, names, types)
            except StoreError as exc:
                ok = False
                self.stats.failed_batches += 1
                self.stats.last_error = str(exc)
                logger.error("insert of %d rows into %s failed; will retry: %s", len(pending), table, exc)
                overflow = len(pending) - self._max_pending
                if overflow > 0:
                    del pending[:overflow]
                    self.stats.dropped += overflow
                    logger.error("dropped the %d oldest rows of %s: retry buffer full", overflow, table)
                continue
            self.stats.batches += 1
            self.stats.last_batch_size = len(pending)
            self.stats.last_insert_seconds = time.perf_counter() - started
            if table == "events":
                self.stats.inserted_events += len(pending)
            else:
                self.stats.inserted_receipts += len(pending)
            pending.clear()
        return ok
