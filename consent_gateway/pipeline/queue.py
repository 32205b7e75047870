"""The request side of the pipeline: non-blocking submission, erasure and flush barriers."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..records import RawRecord, ReceiptRecord
from .writer import Command, Writer, WriterStats


@dataclass(slots=True)
class _Waiter:
    """Resolves an asyncio future from the writer thread."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()

    def resolve(self, value: Any) -> None:
        def _set() -> None:
            if not self.future.done():
                self.future.set_result(value)

        self.loop.call_soon_threadsafe(_set)


class Pipeline:
    """Bounded hand-off from the event loop to the writer thread.

    Visit records and events are shed (and counted) when ``queue_max`` records wait; receipts and
    commands are never shed, because a receipt is the proof of a choice already made.
    """

    def __init__(self, writer_factory: Callable[[queue.SimpleQueue[Any]], Writer], *, queue_max: int) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer_factory = writer_factory
        self._writer: Writer | None = None
        self.queue_max = queue_max
        self.shed = 0

    def __repr__(self) -> str:
        return f"Pipeline(queued={self.queued}, running={self.running})"

    @property
    def running(self) -> bool:
        return self._writer is not None and self._writer.is_alive()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def stats(self) -> WriterStats | None:
        return None if self._writer is None else self._writer.stats

    def start(self) -> None:
        if self.running:
            return
        self._writer = self._writer_factory(self._queue)
        self._writer.start()

    def has_room(self, count: int = 1) -> bool:
        return self._queue.qsize() + count <= self.queue_max

    def submit(self, record: RawRecord) -> bool:
        """Hand a record to the writer without waiting; False when it was shed."""
        if self._queue.qsize() >= self.queue_max:
            self.shed += 1
            return False
        self._queue.put(record)
        return True

    def submit_receipt(self, receipt: ReceiptRecord) -> None:
        self._queue.put(receipt)

    async def erase(self, consent_id: str, timeout: float) -> bool:
        """Remove a consent id's identifiable rows: queued ones and stored ones, in order."""
        return bool(await self._command("erase", consent_id, timeout))

    async def flush(self, timeout: float) -> bool:
        """Wait until everything submitted before this call is in ClickHouse."""
        return bool(await self._command("flush", None, timeout))

    async def _command(self, kind: str, arg: Any, timeout: float) -> Any:
        if not self.running:
            return False
        waiter = _Waiter(asyncio.get_running_loop())
        self._queue.put(Command(kind, arg, waiter.resolve))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except TimeoutError:
            return False

    def stop(self, timeout: float) -> bool:
        """Flush everything and stop the writer; True when it finished within ``timeout``."""
        writer = self._writer
        if writer is None:
            return True
        self._queue.put(Command("stop", None, None))
        writer.join(timeout)
        self._writer = None
        return not writer.is_alive()
