"""The floor under ``/collect``: what one uvicorn worker answers on this machine with no gateway at all.

Two ASGI apps that do the least a ``/collect`` request can do, served the way ``loadtests.bench``
serves the gateway (``uvicorn --factory loadtests.floor:durable``, one worker, no access log):

- ``ack``: read the body, answer 202 at once. uvicorn, uvloop and the kernel's loopback alone.
- ``durable``: read the body, hand it to a committer thread, answer 202 once it is appended to a
  file and fsynced. Like the gateway's journal, the committer writes whatever has gathered since
  its last fsync with one ``write`` and one ``fsync``, and wakes the event loop once per group. This
  is the least work behind the gateway's promise that a 202 means durable (docs/pipeline.md).

The bench runs them with the same bodies, connections and load as the gateway's single events,
alternated with it in the same rounds: the gateway's throughput over the durable floor's is the
share of the machine's ceiling it reaches. Any GET answers 200, so the harness's start probe works.
The file goes into ``CG_LOAD_DATA``; ``journaled_bodies`` counts what it holds, so the bench can
check that the durable floor wrote every body it acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

JOURNAL_NAME = "floor.journal"
_OK = [(b"content-type", b"application/json"), (b"content-length", b"2")]

# The ASGI types, written here rather than imported from consent_gateway: the floor's process loads
# nothing of the gateway.
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _read_body(receive: Receive) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return body  # the client went away
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def _lifespan(receive: Receive, send: Send, on_stop: Callable[[], None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            on_stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


class _Committer(threading.Thread):
    """Appends bodies to one file with one write and one fsync per group, then wakes their requests."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="floor-committer", daemon=True)
        self.path = path
        self.items: queue.SimpleQueue[tuple[bytes, asyncio.AbstractEventLoop, asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                first = self.items.get()
                if first is None:
                    return
                group = [first]
                while True:
                    try:
                        item = self.items.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self.items.put(None)  # stop after this group
                        break
                    group.append(item)
                os.write(fd, b"".join(body + b"\n" for body, _, _ in group))
                os.fsync(fd)
                by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
                for _, loop, future in group:
                    by_loop.setdefault(loop, []).append(future)
                for loop, futures in by_loop.items():
                    try:
                        loop.call_soon_threadsafe(_settle, futures)
                    except RuntimeError:  # the loop is closed; nobody waits any more
                        pass
        finally:
            os.close(fd)


def _settle(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _app(committer: _Committer | None) -> Callable[[Message, Receive, Send], Awaitable[None]]:
    def stop() -> None:
        if committer is not None and committer.is_alive():
            committer.items.put(None)
            committer.join(10)

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, stop)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        status = 200
        if scope["method"] != "GET":
            status = 202
            if committer is not None:
                loop = asyncio.get_running_loop()
                future: asyncio.Future[None] = loop.create_future()
                committer.items.put((body, loop, future))
                await future
        await send({"type": "http.response.start", "status": status, "headers": _OK})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def ack() -> Callable[[Message, Receive, Send], Awaitable[None]]:
    """Read the body, answer 202 at once."""
    return _app(None)


def durable() -> Callable[[Message, Receive, Send], Awaitable[None]]:
    """Read the body, answer 202 once it is in ``CG_LOAD_DATA``/floor.journal and fsynced."""
    data = os.environ.get("CG_LOAD_DATA")
    if not data:
        raise RuntimeError("set CG_LOAD_DATA to the data directory of this server (one per process)")
    committer = _Committer(Path(data) / JOURNAL_NAME)
    committer.start()
    return _app(committer)


def journaled_bodies(data_dir: Path) -> int:
    """Bodies the durable floor wrote to its file in ``data_dir`` (one line each; 0 without a file)."""
    path = data_dir / JOURNAL_NAME
    if not path.exists():
        return 0
    count = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            count += block.count(b"\n")
    return count
