"""A small asyncio HTTP/1.1 load generator: closed loop (as fast as it goes) or open loop (fixed rate).

Used for latency at a fixed request rate (wrk has no rate limit; wrk2 is not in Debian) and as the
throughput generator where wrk is absent. Latency in the open loop is measured from the moment a
request was due, not when a connection became free, so a stalled server cannot hide its queueing
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """What one run saw: status counts, latencies in seconds, and its wall time."""

    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    late: int = 0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """The q-th percentile latency (0 < q < 100) in milliseconds; nearest rank."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000


def build_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, rest = head.partition(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length = None
    chunked = False
    for line in rest.split(b"\r\n"):
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value.strip())
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        await reader.readexactly(length)
    elif chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


class _Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, raw: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(raw)
        try:
            return await _read_response(self.reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(port: int, raw: bytes, *, connections: int, seconds: float) -> LoadResult:
    """``connections`` clients sending back to back for ``seconds``."""
    result = LoadResult(seconds)
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        conn = _Conn(port)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                status = await conn.send(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                continue
            result.statuses[status] += 1
            result.latencies.append(time.perf_counter() - started)
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


async def open_loop(port: int, raw: bytes, *, rate: float, seconds: float, connections: int = 32) -> LoadResult:
    """Requests due every ``1/rate`` seconds for ``seconds``, on up to ``connections`` connections."""
    result = LoadResult(seconds)
    total = int(rate * seconds)
    due: asyncio.Queue[float | None] = asyncio.Queue()
    start = time.perf_counter() + 0.05

    async def scheduler() -> None:
        for i in range(total):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            due.put_nowait(at)
        for _ in range(connections):
            due.put_nowait(None)

    async def client() -> None:
        conn = _Conn(port)
        while True:
            at = await due.get()
            if at is None:
                break
            if time.perf_counter() - at > 0.001:
                result.late += 1
            try:
                status = await conn.send(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                continue
            result.statuses[status] += 1
            result.latencies.append(time.perf_counter() - at)
        conn.close()

    await asyncio.gather(scheduler(), *(client() for _ in range(connections)))
    result.seconds = time.perf_counter() - start
    return result
