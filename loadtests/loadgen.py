"""The load generators: wrk for throughput, one Python generator for a fixed request rate.

- ``throughput``: ``connections`` clients back to back for ``seconds`` (a closed loop), by wrk
  (``/usr/bin/wrk`` from Debian) where present; elsewhere the Python generator below runs the same
  closed loop, and the result says which generator measured.
- ``fixed_rate``: one request due every ``1/rate`` seconds (an open loop), for latency: wrk cannot
  hold a rate and wrk2 is not in Debian. Latency counts from the moment a request was due, not from
  when a connection became free, so a stalled server cannot hide its queueing (no coordinated
  omission).

Only the standard library talks HTTP here (HTTP/1.1 keep-alive, Content-Length or chunked answers).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

WRK = shutil.which("wrk")


@dataclass
class Load:
    """One run: requests answered, how many not 2xx/3xx, connection errors, its duration and latency."""

    seconds: float
    requests: int = 0
    bad_status: int = 0
    errors: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    generator: str = "wrk"
    statuses: Counter[int] = field(default_factory=Counter)  # by status (the Python generator only)
    latencies: list[float] = field(default_factory=list)  # seconds (the Python generator only)
    late: int = 0  # fixed rate: requests sent more than 1 ms after they were due

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> int:
        return self.requests - self.bad_status


def percentile(latencies: list[float], q: float) -> float:
    """The q-th percentile (0 < q < 100) of latencies in seconds, in milliseconds; nearest rank."""
    if not latencies:
        return float("nan")
    ordered = sorted(latencies)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))] * 1000


def throughput(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes, *, seconds: float, connections: int,
    use_wrk: bool = True,
) -> Load:
    """``connections`` clients back to back for ``seconds`` against 127.0.0.1:``port``."""
    if use_wrk and WRK:
        return _wrk(port, method, path, headers, body, seconds=seconds, connections=connections)
    raw = _request(method, path, port, headers, body)
    return asyncio.run(_python(port, raw, seconds=seconds, connections=connections, rate=None))


def fixed_rate(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes, *, rate: float, seconds: float,
    connections: int = 32,
) -> Load:
    """Requests due every ``1/rate`` seconds for ``seconds``, on up to ``connections`` connections."""
    raw = _request(method, path, port, headers, body)
    return asyncio.run(_python(port, raw, seconds=seconds, connections=connections, rate=rate))


# -- wrk -----------------------------------------------------------------------------------------

_WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def lua_string(value: str) -> str:
    """``value`` as a Lua long string, its brackets long enough that nothing inside closes it."""
    level = "==="
    while f"]{level}]" in value:
        level += "="
    return f"[{level}[{value}]{level}]"


def _wrk(port: int, method: str, path: str, headers: dict[str, str], body: bytes, *, seconds: float,
         connections: int) -> Load:
    script = [f"wrk.method = {lua_string(method)}"]
    if body:
        script.append(f"wrk.body = {lua_string(body.decode('utf-8'))}")
    script += [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write("\n".join([*script, _WRK_DONE]))
    try:
        proc = subprocess.run(  # noqa: S603
            [WRK or "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
             "-s", fh.name, f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, timeout=seconds + 60, check=False,
        )  # fmt: skip
    finally:
        os.unlink(fh.name)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    data = json.loads(line[len("WRKJSON ") :])
    return Load(
        seconds=data["duration_us"] / 1e6,
        requests=data["requests"],
        bad_status=data["status_errors"],
        errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )


# -- the Python generator ------------------------------------------------------------------------


def _request(method: str, path: str, port: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, rest = head.partition(b"\r\n")
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
    while chunked:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        await reader.readexactly(size + 2)
        chunked = size > 0
    return int(status_line.split(b" ", 2)[1])


async def _python(port: int, raw: bytes, *, seconds: float, connections: int, rate: float | None) -> Load:
    """Closed loop (``rate`` None: each client sends again once answered) or open loop at ``rate``."""
    result = Load(seconds, generator="python")
    start = time.perf_counter() + (0.05 if rate else 0.0)
    due: asyncio.Queue[float | None] = asyncio.Queue()

    async def scheduler() -> None:
        if rate is None:
            return
        for i in range(int(rate * seconds)):
            at = start + i / rate
            if at > time.perf_counter():
                await asyncio.sleep(at - time.perf_counter())
            due.put_nowait(at)
        for _ in range(connections):
            due.put_nowait(None)

    async def client() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while True:
            at = await due.get() if rate else time.perf_counter()
            if at is None or (rate is None and at >= start + seconds):
                break
            if rate and time.perf_counter() - at > 0.001:
                result.late += 1
            try:
                if reader is None or writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)
                status = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            result.statuses[status] += 1
            result.latencies.append(time.perf_counter() - at)
        if writer is not None:
            writer.close()

    await asyncio.gather(scheduler(), *(client() for _ in range(connections)))
    result.seconds = time.perf_counter() - start
    result.requests = sum(result.statuses.values())
    result.bad_status = sum(n for status, n in result.statuses.items() if not 200 <= status < 400)
    result.p50_ms, result.p99_ms = percentile(result.latencies, 50), percentile(result.latencies, 99)
    return result
