"""The request side of the pipeline: bounded submission, acknowledgement, erasure and flush barriers."""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..records import CollectedEvents, RawRecord, ReceiptRecord
from .messages import Command, EventBatch
from .metrics import PipelineMetrics
from .stats import PipelineStats
from .writer import Writer


class _Waiter:
    """Resolves an asyncio future from the writer thread (``writer.notify`` batches the wake-ups)."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()

    def __call__(self, value: Any) -> None:
        """Resolve from any thread."""
        try:
            self.loop.call_soon_threadsafe(self.settle, value)
        except RuntimeError:  # the request's loop is gone; nobody is waiting any more
            pass

    def settle(self, value: Any) -> None:
        """Resolve; on the waiter's own loop only."""
        if not self.future.done():
            self.future.set_result(value)


class Pipeline:
    """Bounded hand-off from the event loop to the writer thread (docs/pipeline.md).

    Limits, in the order they bite:

    - visit records (never awaited: a page must not wait) are shed once the queue holds
      ``visit_shed_fraction`` of ``queue_max`` records or the journal is that full, which keeps the
      rest of the room for ``/collect`` events;
    - ``/collect`` events are refused (the route answers 503 with Retry-After) when they would take
      the queue past ``queue_max`` or the journal is at ``journal_max_bytes``;
    - receipts and commands are never shed: a receipt is the proof of a choice already made.

    Every shed record is counted in ``cg_pipeline_shed_records_total{kind,reason}``.
    """

    def __init__(
        self,
        writer_factory: Callable[[Pipeline], Writer],
        *,
        queue_max: int,
        visit_shed_fraction: float,
        ack_timeout: float,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Visit records wait on the side: appending wakes no thread (the writer looks every
        # visit_window, and at every group commit).
        self._visits: collections.deque[RawRecord] = collections.deque()
        self._writer_factory = writer_factory
        self._writer: Writer | None = None
        self.queue_max = queue_max
        self._visit_max = max(1, int(queue_max * visit_shed_fraction))
        self.ack_timeout = ack_timeout
        # The one stats object: the writer updates it, the request side reads it, Prometheus renders it.
        self.stats = PipelineStats(metrics)
        # The same object under the name the request side reads it by (a plain attribute: pages read it).
        self.state = self.stats
        self.metrics = self.stats.metrics
        self._queued = 0
        self._count = threading.Lock()
        # Labelled children looked up once, not on every record.
        self._queued_counters: dict[str, Any] = {}
        self.metrics.watch_queue(lambda: self.queued)

    def __repr__(self) -> str:
        return f"Pipeline(queued={self.queued}, running={self.running})"

    @property
    def queue(self) -> queue.SimpleQueue[Any]:
        """The hand-off queue the writer reads (for the writer factory)."""
        return self._queue

    @property
    def visits(self) -> collections.deque[RawRecord]:
        """Where visit records wait for the writer (for the writer factory)."""
        return self._visits

    @property
    def running(self) -> bool:
        return self._writer is not None and self._writer.is_alive()

    @property
    def queued(self) -> int:
        """Records waiting for the writer (a 50-event request counts 50)."""
        # Visits are counted by their deque alone: a page takes no lock and no counter.
        return self._queued + len(self._visits)

    def start(self) -> None:
        if self.running:
            return
        self._writer = self._writer_factory(self)
        self._writer.start()

    def taken(self, count: int) -> None:
        """Called by the writer when it has taken ``count`` records off the queue."""
        if count:
            with self._count:
                self._queued -= count

    def _put(self, item: Any, count: int, kind: str) -> None:
        self._count_in(count, kind)
        self._queue.put(item)

    def _count_in(self, count: int, kind: str) -> None:
        with self._count:
            self._queued += count
        self._queued_counter(kind).inc(count)

    def _queued_counter(self, kind: str) -> Any:
        counter = self._queued_counters.get(kind)
        if counter is None:
            counter = self._queued_counters[kind] = self.metrics.queued.labels(kind)
        return counter

    def submit(self, record: RawRecord) -> bool:
        """Hand a visit record to the writer without waiting; False when it was shed (and counted)."""
        visits = self._visits
        if self._queued + len(visits) >= self._visit_max:
            self.metrics.shed.labels(record.kind, "queue").inc()
            return False
        if self.state.visits_full:
            self.metrics.shed.labels(record.kind, "journal").inc()
            return False
        # cg_pipeline_queued_records_total{kind="visit"} is counted by the writer as it takes them.
        visits.append(record)
        return True

    def visits_taken(self, count: int) -> None:
        """Called by the writer when it has taken ``count`` visit records off their deque."""
        if count:
            self._queued_counter("visit").inc(count)

    async def submit_events(self, events: CollectedEvents) -> bool:
        """Queue one request's events and wait until they are durable; False means "answer 503"."""
        n = len(events)
        if not n:
            return True
        if self.queued + n > self.queue_max:
            self.metrics.shed.labels("event", "queue").inc(n)
            return False
        if self.state.journal_full:
            self.metrics.shed.labels("event", "journal").inc(n)
            return False
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop)
        self._put(EventBatch(events, waiter), n, "event")
        # A plain timer rather than wait_for(shield(...)): two fewer futures and a task per request.
        timer = loop.call_later(self.ack_timeout, self._ack_timed_out, waiter)
        try:
            return bool(await waiter.future)
        finally:
            timer.cancel()

    def _ack_timed_out(self, waiter: _Waiter) -> None:
        if not waiter.future.done():
            self.metrics.ack_timeouts.inc()
            # The events may still become durable; the request is answered 503 and the client retries.
            waiter.settle(False)

    def submit_receipt(self, receipt: ReceiptRecord) -> None:
        self._put(receipt, 1, "receipt")

    async def erase(self, consent_id: str, timeout: float) -> bool:
        """Remove a consent id's identifiable rows: queued, journaled and stored ones, in order."""
        return bool(await self._command("erase", consent_id, timeout))

    async def flush(self, timeout: float) -> bool:
        """Wait until everything submitted before this call is in ClickHouse."""
        return bool(await self._command("flush", None, timeout))

    async def _command(self, kind: str, arg: Any, timeout: float) -> Any:
        if not self.running:
            return False
        waiter = _Waiter(asyncio.get_running_loop())
        self._queue.put(Command(kind, arg, waiter))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except TimeoutError:
            return False

    def stop(self, timeout: float) -> bool:
        """Journal and insert everything, then stop the writer; True when it finished within ``timeout``.

        Whatever ClickHouse did not take by then stays in the journal for the next start.
        """
        writer = self._writer
        if writer is None:
            return True
        # Leave the writer a margin to close the journal before the caller gives up on it.
        deadline = time.monotonic() + max(0.0, timeout * 0.9)
        self._queue.put(Command("stop", deadline, None))
        writer.join(timeout)
        self._writer = None
        return not writer.is_alive()
