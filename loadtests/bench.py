"""Benchmark of the consent gateway around the demo site, as ratios measured side by side in one run.

    .venv/bin/python -m loadtests.bench                 # the full run (about 6 minutes)
    .venv/bin/python -m loadtests.bench --quick         # a short smoke run of every part

It starts its own uvicorn servers (one worker each, no access log, 127.0.0.1 only) and measures:

- page throughput of the bare demo site vs the same site wrapped in the gateway, with a valid
  consent cookie and visit logging to the embedded ClickHouse, and in the same rounds the demo's
  light JSON endpoint; A and B alternate every round and the median of the per-round ratios is
  reported (wrk when /usr/bin/wrk exists, else pyload's closed loop);
- server CPU per page with the gateway's features switched on one at a time (middleware alone,
  + banner, + visit log), to show what each costs;
- ``/_consent/collect`` events persisted per second, single events and batches of 50, counted in
  ClickHouse after the server has exited (``loadtests.stored`` in a separate process); in the same
  rounds, the floor of one uvicorn worker under the same load with no gateway (loadtests/floor.py):
  an app that answers 202 after an fsynced group commit, for single events and for the same
  50-event bodies, and one that answers single events at once;
- latency p50/p99 at a fixed request rate (pyload's open loop: wrk cannot hold a rate);
- peak RSS of the gateway under page load, under collect load, and while ``/collect`` is
  flooded until the queue is full (the gateway answers 503 then).

It writes ``bench-<time>.json``, ``bench.json`` (latest) and ``bench.png`` to ``--out`` and prints a
Markdown table. Nothing here asserts on time: it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import pyload
from .floor import journaled_bodies
from .servers import ROOT, Server, add_loop_cpu_option, consent_cookie, health, loop_cpu_option, request
from .stored import VISITS, count_in_subprocess

WRK = shutil.which("wrk")
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
PAGE_PATH = "/"
JSON_PATH = "/api/attendance"  # the demo's light JSON endpoint: a small document, no template
EVENT_NAME = "portfolio_view"  # analytics category: kept with consent, pseudonymised without
BATCH = 50


# -- machine and helpers -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """nproc, CPU model, Python version: the facts a reader needs to weigh the numbers."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "server": server_stack(),
    }


def server_stack() -> str:
    """What uvicorn serves with here: its "auto" choice takes httptools and uvloop when installed."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    try:
        uvicorn = f"uvicorn {version('uvicorn')}"
    except PackageNotFoundError:  # pragma: no cover - the servers could not start without it
        uvicorn = "uvicorn (version unknown)"
    http = "httptools" if find_spec("httptools") else "h11"
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    return f"{uvicorn}, {http}, {loop}"


def run_id(label: str) -> str:
    """A run tag with few digits, so the pseudonymiser's phone-number redaction never touches it."""
    return f"{label}-" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(10))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    import psutil  # type: ignore[import-untyped]

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


class RssSampler:
    """Samples a process's resident set size every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0
        self.samples: list[int] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = int(self._proc.memory_info().rss)
            except Exception:
                return
            self.samples.append(rss)
            self.peak = max(self.peak, rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# -- load generators -----------------------------------------------------------------------------


@dataclass
class Load:
    """One closed-loop run: completed requests, how many were not 2xx/3xx, and its duration."""

    requests: int
    bad_status: int
    errors: int
    seconds: float
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    generator: str = "wrk"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> int:
        return self.requests - self.bad_status


_WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(value: str) -> str:
    level = "=" * 3
    while f"]{level}]" in value:
        level += "="
    return f"[{level}[{value}]{level}]"


def load(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes, *, seconds: float, connections: int,
    use_wrk: bool,
) -> Load:
    """``connections`` clients back to back for ``seconds`` against 127.0.0.1:``port``."""
    if use_wrk and WRK:
        script = [f"wrk.method = {_lua_string(method)}"]
        if body:
            script.append(f"wrk.body = {_lua_string(body.decode('utf-8'))}")
        script += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()]
        script.append(_WRK_DONE)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
            fh.write("\n".join(script))
        try:
            proc = subprocess.run(  # noqa: S603
                [WRK, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                 "-s", fh.name, f"http://127.0.0.1:{port}{path}"],
                capture_output=True, text=True, timeout=seconds + 60, check=False,
            )
        finally:
            os.unlink(fh.name)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no summary: {proc.stdout[-500:]} {proc.stderr[-500:]}")
        data = json.loads(line[len("WRKJSON "):])
        return Load(
            requests=data["requests"],
            bad_status=data["status_errors"],
            errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
            seconds=data["duration_us"] / 1e6,
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            generator="wrk",
        )
    raw = pyload.build_request(method, path, f"127.0.0.1:{port}", headers, body)
    result = asyncio.run(pyload.closed_loop(port, raw, connections=connections, seconds=seconds))
    bad = sum(n for status, n in result.statuses.items() if not 200 <= status < 400)
    return Load(
        requests=result.requests, bad_status=bad, errors=result.errors, seconds=result.seconds,
        p50_ms=result.percentile(50), p99_ms=result.percentile(99), generator="pyload",
        extra={"statuses": dict(result.statuses)},
    )


def wait_drained(port: int, timeout: float = 120.0) -> float:
    """Seconds until the gateway's queue is empty and a flush barrier has passed.

    ``GET /_consent/receipts`` with a consent cookie waits for everything queued before it to be
    written; /healthz reports the queue length while it drains.
    """
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        queued = health(port).get("queued", 0)
        if not queued:
            break
        time.sleep(0.05)
    return time.monotonic() - started


def flush_barrier(port: int, cookie: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = time.monotonic()
        status, _, body = request(port, "GET", "/_consent/receipts", headers={"Cookie": f"cg_consent={cookie}"},
                                  timeout=60)
        if status != 200:
            raise RuntimeError(f"/_consent/receipts answered {status}: {body[:200]!r}")
        if time.monotonic() - started < 9.0:  # the route's own flush wait is 10 s: this one completed
            return


def page_headers(cookie: str) -> dict[str, str]:
    """A returning visitor: consent given, the site's own analytics and marketing ids already set."""
    return {
        "User-Agent": BROWSER_UA,
        "Accept": "text/html,application/xhtml+xml",
        "Accept-Language": "ko-KR,ko;q=0.9,en;q=0.8",
        "Cookie": f"cg_consent={cookie}; _pa_id=0f1e2d3c4b5a69788796a5b4c3d2e1f0; _mk_px=00112233445566778899aabb",
    }


def check_pages(bare: Server, gw: Server, headers: dict[str, str]) -> None:
    """Both servers answer the measured page; the gateway's copy carries the banner root, no form."""
    for server in (bare, gw):
        status, _, body = request(server.port, "GET", PAGE_PATH, headers=headers)
        if status != 200 or b"</html>" not in body:
            raise RuntimeError(f"{server!r} answered {status} to GET {PAGE_PATH}; expected a 200 HTML page")
    _, _, body = request(gw.port, "GET", PAGE_PATH, headers=headers)
    if b'id="cg-root"' not in body or b'data-cg-status="given"' not in body or b'id="cg-banner"' in body:
        raise RuntimeError("the gateway's page does not show a given consent; the cookie was not accepted")


def event_body(run: str, batch: int) -> bytes:
    event = {
        "name": EVENT_NAME,
        "url": "/portfolio?utm_source=newsletter&utm_campaign=spring",
        "referrer": "https://search.example/",
        "props": {"run": run, "work": "sunset-hills"},
    }
    return json.dumps(event if batch == 1 else [event] * batch).encode()


def collect_headers(port: int, cookie: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Origin": f"http://127.0.0.1:{port}",
        "User-Agent": BROWSER_UA,
        "Cookie": f"cg_consent={cookie}",
    }


# -- parts ---------------------------------------------------------------------------------------


def page_throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bare = Server("bare", work / "pages-bare")
    gw = Server("gateway", work / "pages-gateway")
    rounds: list[dict[str, Any]] = []
    with bare, gw:
        for server in (bare, gw):
            server.pin_event_loop(args.loop_cpu)
        cookie = consent_cookie(gw.port)
        headers = page_headers(cookie)
        check_pages(bare, gw, headers)
        sent_to_gateway = 2  # check_pages
        for server in (bare, gw):  # warm caches and the first chdb part
            warm = load(server.port, "GET", PAGE_PATH, headers, b"", seconds=1, connections=args.connections,
                        use_wrk=args.wrk)
            if server is gw:
                sent_to_gateway += warm.requests
        wait_drained(gw.port)
        json_headers = {**headers, "Accept": "application/json"}
        for server in (bare, gw):
            status, _, body = request(server.port, "GET", JSON_PATH, headers=json_headers)
            if status != 200 or not body.startswith((b"{", b"[")):
                raise RuntimeError(f"{server!r} answered {status} to GET {JSON_PATH}; expected a 200 JSON document")
        peak = 0
        for r in range(args.rounds):
            order = ("bare", "gateway") if r % 2 == 0 else ("gateway", "bare")
            pair: dict[str, Any] = {"json": {}}
            for name in order:
                server = bare if name == "bare" else gw
                cpu_before = cpu_seconds(server.proc.pid)  # type: ignore[union-attr]
                with RssSampler(server.proc.pid) as rss:  # type: ignore[union-attr]
                    result = _page_load(args, server, PAGE_PATH, headers, name)
                if name == "gateway":
                    sent_to_gateway += result.requests
                    peak = max(peak, rss.peak)
                    # Let the gateway's writer finish before the baseline runs on the same cores;
                    # its work after the load is part of the cost of these requests.
                    wait_drained(gw.port)
                cpu = cpu_seconds(server.proc.pid) - cpu_before  # type: ignore[union-attr]
                time.sleep(args.settle)
                pair[name] = {"rps": result.rps, "requests": result.requests, "p50_ms": result.p50_ms,
                              "p99_ms": result.p99_ms, "generator": result.generator,
                              "cpu_us_per_request": cpu / result.requests * 1e6}
            # The light JSON endpoint, the same servers and order: the gateway's fixed cost where
            # the app's own work is smallest.
            for name in order:
                server = bare if name == "bare" else gw
                result = _page_load(args, server, JSON_PATH, json_headers, f"{name} JSON")
                if name == "gateway":
                    wait_drained(gw.port)
                time.sleep(args.settle)
                pair["json"][name] = {"rps": result.rps, "requests": result.requests}
            pair["ratio"] = pair["gateway"]["rps"] / pair["bare"]["rps"]
            pair["cpu_ratio"] = pair["bare"]["cpu_us_per_request"] / pair["gateway"]["cpu_us_per_request"]
            pair["json"]["ratio"] = pair["json"]["gateway"]["rps"] / pair["json"]["bare"]["rps"]
            rounds.append(pair)
            b, g = pair["bare"], pair["gateway"]
            print(f"  pages round {r + 1}: bare {b['rps']:.0f}/s, gateway {g['rps']:.0f}/s, ratio {pair['ratio']:.3f}; "
                  f"server CPU per request: bare {b['cpu_us_per_request']:.0f} µs, "
                  f"gateway {g['cpu_us_per_request']:.0f} µs; JSON ratio {pair['json']['ratio']:.3f}", flush=True)
    visits = count_in_subprocess(gw.data_dir, []).get(VISITS, 0)
    return {
        "path": PAGE_PATH,
        "connections": args.connections,
        "seconds": args.seconds,
        "generator": rounds[0]["bare"]["generator"] if rounds else "",
        "rounds": rounds,
        "bare_rps": median([p["bare"]["rps"] for p in rounds]),
        "gateway_rps": median([p["gateway"]["rps"] for p in rounds]),
        "ratio": median([p["ratio"] for p in rounds]),
        "bare_cpu_us": median([p["bare"]["cpu_us_per_request"] for p in rounds]),
        "gateway_cpu_us": median([p["gateway"]["cpu_us_per_request"] for p in rounds]),
        "cpu_ratio": median([p["cpu_ratio"] for p in rounds]),
        "gateway_requests": sent_to_gateway,
        "visits_stored": visits,
        "gateway_peak_rss": peak,
        "loop_cpu": args.loop_cpu,
        "json": {
            "path": JSON_PATH,
            "bare_rps": median([p["json"]["bare"]["rps"] for p in rounds]),
            "gateway_rps": median([p["json"]["gateway"]["rps"] for p in rounds]),
            "ratio": median([p["json"]["ratio"] for p in rounds]),
        },
    }


def _page_load(args: argparse.Namespace, server: Server, path: str, headers: dict[str, str], what: str) -> Load:
    """One closed-loop run of GET ``path``; every answer must be a success, or the rounds are not comparable."""
    result = load(server.port, "GET", path, headers, b"", seconds=args.seconds, connections=args.connections,
                  use_wrk=args.wrk)
    if result.bad_status or result.errors or not result.requests:
        raise RuntimeError(f"{what}: {result.bad_status} bad statuses, {result.errors} errors of "
                           f"{result.requests} requests to {path}; the run is not comparable")
    return result


BREAKDOWN = (
    ("bare demo", "bare", ""),
    ("gateway, no banner, no visit log", "gateway", "no-banner,no-visits"),
    ("gateway, banner, no visit log", "gateway", "no-visits"),
    ("gateway, banner and visit log", "gateway", ""),
)


def cost_breakdown(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Server CPU per page with the gateway's features switched on one by one (all servers up at once,
    measured in rotation): what the middleware itself, the banner and visit logging each cost."""
    servers = [
        (label, Server(app, work / f"breakdown-{i}", env={"CG_LOAD_VARIANT": variant} if variant else None))
        for i, (label, app, variant) in enumerate(BREAKDOWN)
    ]
    samples: dict[str, list[float]] = {label: [] for label, _ in servers}
    rps: dict[str, list[float]] = {label: [] for label, _ in servers}
    with contextlib.ExitStack() as stack:
        for _, server in servers:
            stack.enter_context(server)
            server.pin_event_loop(args.loop_cpu)
        cookie = {label: consent_cookie(s.port) if s.app != "bare" else "none" for label, s in servers}
        for label, server in servers:
            load(server.port, "GET", PAGE_PATH, page_headers(cookie[label]), b"", seconds=1,
                 connections=args.connections, use_wrk=args.wrk)
        for r in range(args.rounds):
            order = servers if r % 2 == 0 else servers[::-1]
            for label, server in order:
                before = cpu_seconds(server.proc.pid)  # type: ignore[union-attr]
                result = load(server.port, "GET", PAGE_PATH, page_headers(cookie[label]), b"",
                              seconds=args.breakdown_seconds, connections=args.connections, use_wrk=args.wrk)
                if server.app != "bare":
                    wait_drained(server.port)
                samples[label].append((cpu_seconds(server.proc.pid) - before) / result.requests * 1e6)  # type: ignore[union-attr]
                rps[label].append(result.rps)
                time.sleep(args.settle / 2)
    out = {label: {"cpu_us_per_page": median(samples[label]), "rps": median(rps[label]), "rounds": samples[label]}
           for label, _ in servers}
    for label, v in out.items():
        print(f"  {label}: {v['cpu_us_per_page']:.0f} µs CPU a page, {v['rps']:.0f} pages/s", flush=True)
    return {"seconds": args.breakdown_seconds, "variants": out}


# The floors (loadtests/floor.py) under the gateway's own load: mode -> (app, events a request).
# The durable floor runs twice: with the single events and with the 50-event bodies.
FLOORS = {
    "floor_durable": ("loadtests.floor:durable", 1),
    "floor_ack": ("loadtests.floor:ack", 1),
    "floor_durable_batch": ("loadtests.floor:durable", BATCH),
}


def collect_throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"single": [], "batch": [], **{mode: [] for mode in FLOORS}}
    order = ("single", *FLOORS, "batch")
    cookie = ""
    for r in range(args.collect_rounds):
        for mode in order if r % 2 == 0 else order[::-1]:
            if mode in FLOORS:
                runs[mode].append(_floor_run(args, work / f"collect-{mode}-{r}", mode, cookie))
                print(f"  collect {mode} round {r + 1}: {runs[mode][-1]['acked_per_s']:.0f} "
                      f"{FLOORS[mode][1]}-event requests/s acknowledged", flush=True)
                continue
            size = 1 if mode == "single" else BATCH
            server = Server("gateway", work / f"collect-{mode}-{r}")
            tag = run_id(f"bench-{mode}")
            with server:
                cookie = consent_cookie(server.port)
                headers = collect_headers(server.port, cookie)
                body = event_body(tag, size)
                status, _, answer = request(server.port, "POST", "/_consent/collect", body, headers)
                if status != 202 or json.loads(answer).get("accepted") != size:
                    raise RuntimeError(f"POST /_consent/collect answered {status} {answer[:200]!r}; expected 202")
                with RssSampler(server.proc.pid) as rss:  # type: ignore[union-attr]
                    result = load(server.port, "POST", "/_consent/collect", headers, body,
                                  seconds=args.collect_seconds, connections=args.collect_connections,
                                  use_wrk=args.wrk)
                    drained = wait_drained(server.port)
                    barrier_started = time.monotonic()
                    flush_barrier(server.port, cookie)
                    drained += time.monotonic() - barrier_started
            stored = count_in_subprocess(server.data_dir, [tag])[tag]
            acked = (result.ok + 1) * size  # +1: the check request above
            run = {
                "events_per_request": size,
                "requests": result.requests + 1,
                "acked_events": acked,
                "refused_requests": result.bad_status,
                "stored_events": stored,
                "load_seconds": result.seconds,
                "drain_seconds": drained,
                "acked_per_s": acked / result.seconds,
                "persisted_per_s": stored / (result.seconds + drained),
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "peak_rss": rss.peak,
                "lost": max(0, acked - stored),
            }
            runs[mode].append(run)
            print(f"  collect {mode} round {r + 1}: acked {acked}, stored {stored}, "
                  f"{run['persisted_per_s']:.0f} events/s persisted ({result.bad_status} refused with 503)",
                  flush=True)
            if not args.keep:
                shutil.rmtree(server.data_dir, ignore_errors=True)
    out: dict[str, Any] = {
        mode: {
            "rounds": items,
            "persisted_per_s": median([i["persisted_per_s"] for i in items]),
            "acked_per_s": median([i["acked_per_s"] for i in items]),
            "lost": sum(i["lost"] for i in items),
            "peak_rss": max((i["peak_rss"] for i in items), default=0),
        }
        for mode, items in runs.items()
        if mode not in FLOORS
    }
    for mode in FLOORS:
        out[mode] = {"rounds": runs[mode], "acked_per_s": median([i["acked_per_s"] for i in runs[mode]])}
    # Per round, the gateway's acknowledged single events over the durable floor's: rounds alternate
    # their order, so a slower minute of the machine weighs on both.
    out["single_of_floor"] = _of_floor(runs["single"], runs["floor_durable"])
    # Batches: events persisted a second over the events the floor made durable a second.
    out["batch_of_floor"] = _of_floor(runs["batch"], runs["floor_durable_batch"])
    return out | {"connections": args.collect_connections, "seconds": args.collect_seconds}


def _of_floor(gateway: list[dict[str, Any]], floor: list[dict[str, Any]]) -> float:
    """Median per round of the gateway's acknowledged events a second over the floor's.

    Rounds alternate their order, so a slower minute of the machine weighs on both.
    """
    pairs = zip(gateway, floor, strict=True)
    return median([g["acked_per_s"] / f["acked_per_s"] for g, f in pairs if f["acked_per_s"]])


def _floor_run(args: argparse.Namespace, data_dir: Path, mode: str, cookie: str) -> dict[str, Any]:
    """One floor app (loadtests/floor.py) under the load the gateway gets: the same bodies and headers."""
    app, size = FLOORS[mode]
    server = Server(app, data_dir)
    with server:
        # The gateway's headers and body, so uvicorn parses as much; the floor reads no cookie.
        headers = collect_headers(server.port, cookie or "x" * 120)
        body = event_body(run_id("floor"), size)
        with RssSampler(server.proc.pid) as rss:  # type: ignore[union-attr]
            result = load(server.port, "POST", "/_consent/collect", headers, body,
                          seconds=args.collect_seconds, connections=args.collect_connections, use_wrk=args.wrk)
    run = {
        "events_per_request": size,
        "requests": result.requests,
        "acked_events": result.ok * size,
        "refused_requests": result.bad_status,
        "load_seconds": result.seconds,
        "acked_per_s": result.ok * size / result.seconds,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "peak_rss": rss.peak,
    }
    if app.endswith(":durable"):
        # Proof it did the work it stands for: every acknowledged body is in its fsynced file.
        run["journaled"] = journaled_bodies(data_dir)
        if run["journaled"] < result.ok:
            raise RuntimeError(f"the durable floor acknowledged {result.ok} bodies but wrote {run['journaled']}")
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    return run


def fixed_rate_latency(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bare = Server("bare", work / "latency-bare")
    gw = Server("gateway", work / "latency-gateway")
    series: dict[str, list[dict[str, float]]] = {"bare": [], "gateway": [], "collect": []}
    with bare, gw:
        cookie = consent_cookie(gw.port)
        headers = page_headers(cookie)
        page = {
            "bare": pyload.build_request("GET", PAGE_PATH, f"127.0.0.1:{bare.port}", headers),
            "gateway": pyload.build_request("GET", PAGE_PATH, f"127.0.0.1:{gw.port}", headers),
        }
        tag = run_id("bench-latency")
        collect_raw = pyload.build_request("POST", "/_consent/collect", f"127.0.0.1:{gw.port}",
                                           collect_headers(gw.port, cookie), event_body(tag, 1))
        for r in range(args.rounds):
            order = ("bare", "gateway", "collect") if r % 2 == 0 else ("collect", "gateway", "bare")
            for name in order:
                port = bare.port if name == "bare" else gw.port
                raw = collect_raw if name == "collect" else page[name]
                result = asyncio.run(pyload.open_loop(port, raw, rate=args.rate, seconds=args.latency_seconds))
                wanted = 202 if name == "collect" else 200
                if result.errors or set(result.statuses) != {wanted}:
                    raise RuntimeError(f"{name} at {args.rate}/s: statuses {dict(result.statuses)}, "
                                       f"{result.errors} errors")
                series[name].append({"p50_ms": result.percentile(50), "p99_ms": result.percentile(99),
                                     "rps": result.rps, "late": result.late})
                if name != "bare":
                    wait_drained(gw.port)
    return {
        "rate": args.rate,
        "seconds": args.latency_seconds,
        "generator": "pyload (open loop)",
        **{
            name: {
                "rounds": items,
                "p50_ms": median([i["p50_ms"] for i in items]),
                "p99_ms": median([i["p99_ms"] for i in items]),
            }
            for name, items in series.items()
        },
    }


def queue_full_rss(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Flood /collect with batches until the queue is full (503s), sampling RSS and the queue length.

    ``/collect`` answers only once its events are durable, so each connection holds at most one batch
    in the queue: filling it takes more batches in flight than ``queue_max`` / 50. The flood uses
    ``--flood-connections`` clients against a gateway whose ``queue_max`` is ``--flood-queue-max``.
    """
    env = {"CONSENT_GATEWAY_QUEUE_MAX": str(args.flood_queue_max)} if args.flood_queue_max else {}
    server = Server("gateway", work / "queue-full", env=env)
    peak_queue = 0
    queue_max = 0
    with server:
        cookie = consent_cookie(server.port)
        import psutil

        idle = int(psutil.Process(server.proc.pid).memory_info().rss)  # type: ignore[union-attr]
        stop = threading.Event()

        def poll() -> None:
            nonlocal peak_queue
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    peak_queue = max(peak_queue, int(health(server.port).get("queued", 0)))
                stop.wait(0.2)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        headers = collect_headers(server.port, cookie)
        with RssSampler(server.proc.pid) as rss:  # type: ignore[union-attr]
            result = load(server.port, "POST", "/_consent/collect", headers, event_body(run_id("flood"), BATCH),
                          seconds=args.flood_seconds, connections=args.flood_connections, use_wrk=args.wrk)
            stop.set()
            poller.join(5)
            after_load = int(psutil.Process(server.proc.pid).memory_info().rss)  # type: ignore[union-attr]
        wait_drained(server.port, timeout=300)
        flush_barrier(server.port, cookie, timeout=300)
        drained_rss = int(psutil.Process(server.proc.pid).memory_info().rss)  # type: ignore[union-attr]
        # Why requests were refused, as the gateway counted it (a /healthz poll can starve in a flood).
        refusals = refusal_counts(server.port)
        from .apps import load_settings

        queue_max = args.flood_queue_max or load_settings(server.data_dir).queue_max
    if not args.keep:
        shutil.rmtree(server.data_dir, ignore_errors=True)
    return {
        "seconds": args.flood_seconds,
        "connections": args.flood_connections,
        "idle_rss": idle,
        "peak_rss": rss.peak,
        "rss_after_flood": after_load,
        "rss_after_drain": drained_rss,
        "peak_queued": peak_queue,
        "queue_max": queue_max,
        "refused_503": result.bad_status,
        "accepted_requests": result.ok,
        "refused_events": refusals,
        "queue_filled": refusals["queue"] > 0,
    }


def refusal_counts(port: int) -> dict[str, int]:
    """Events refused at the full queue and at the full journal, and requests whose journal commit
    timed out: the gateway's own counters, read from ``/_consent/metrics``."""
    status, _, body = request(port, "GET", "/_consent/metrics", timeout=30)
    if status != 200:
        raise RuntimeError(f"/_consent/metrics answered {status}")
    counts = {"queue": 0, "journal": 0, "ack_timeouts": 0}
    for line in body.decode("utf-8").splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith('cg_pipeline_shed_records_total{') and 'kind="event"' in name:
            for reason in ("queue", "journal"):
                if f'reason="{reason}"' in name:
                    counts[reason] += int(float(value))
        elif name == "cg_pipeline_ack_timeouts_total":
            counts["ack_timeouts"] += int(float(value))
    return counts


# -- report --------------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def table(res: dict[str, Any]) -> str:
    rows = [("measure", "result", "target")]
    p = res.get("pages")
    if p:
        rows += [
            ("page throughput, bare demo", f"{p['bare_rps']:.0f} req/s", ""),
            ("page throughput, behind the gateway", f"{p['gateway_rps']:.0f} req/s", ""),
            ("**gateway / bare (median of rounds)**", f"**{p['ratio']:.3f}**", "≥ 0.85"),
            ("server CPU per page, bare / gateway", f"{p['bare_cpu_us']:.0f} µs / {p['gateway_cpu_us']:.0f} µs "
             f"(ratio {p['cpu_ratio']:.3f})", ""),
            *(
                [(f"light JSON endpoint ({p['json']['path']}), bare / gateway",
                  f"{p['json']['bare_rps']:.0f} / {p['json']['gateway_rps']:.0f} req/s", ""),
                 ("**JSON endpoint: gateway / bare (median of rounds)**", f"**{p['json']['ratio']:.3f}**", "≥ 0.85")]
                if "json" in p else []
            ),
            ("visit records stored / pages answered", f"{p['visits_stored']} / {p['gateway_requests']}", "all"),
            ("each server's event loop", "not pinned" if p.get("loop_cpu") is None else f"kept on CPU {p['loop_cpu']}",
             ""),
        ]
    c = res.get("collect")
    if c:
        rows += [
            ("`/collect` single events persisted", f"{c['single']['persisted_per_s']:.0f} events/s", "≥ 8,000"),
        ]
        if "floor_durable" in c:
            rows += [
                ("floor, no gateway: 202 after an fsynced group commit",
                 f"{c['floor_durable']['acked_per_s']:.0f} req/s", ""),
                ("floor, no gateway: 202 at once", f"{c['floor_ack']['acked_per_s']:.0f} req/s", ""),
                ("single events acknowledged: gateway / fsync floor", f"{c['single_of_floor']:.3f}", ""),
            ]
        rows += [
            ("`/collect` batches of 50 persisted", f"{c['batch']['persisted_per_s']:.0f} events/s", "≥ 100,000"),
        ]
        if "floor_durable_batch" in c:
            rows += [
                ("floor, no gateway: 50-event bodies after an fsynced group commit",
                 f"{c['floor_durable_batch']['acked_per_s']:.0f} events/s", ""),
                ("batches of 50 acknowledged: gateway / fsync floor", f"{c['batch_of_floor']:.3f}", ""),
            ]
        rows += [
            ("acknowledged (202) but not stored", f"{c['single']['lost'] + c['batch']['lost']}", "0"),
        ]
    lat = res.get("latency")
    if lat:
        rate = lat["rate"]
        for name, label in (("bare", "page, bare"), ("gateway", "page, gateway"), ("collect", "`/collect`, single")):
            rows.append((f"latency at {rate:.0f} req/s, {label}",
                         f"p50 {lat[name]['p50_ms']:.1f} ms, p99 {lat[name]['p99_ms']:.1f} ms", ""))
    b = res.get("breakdown")
    if b:
        base = next(iter(b["variants"].values()))["cpu_us_per_page"]
        for label, v in b["variants"].items():
            extra = "" if v["cpu_us_per_page"] == base else f" (+{v['cpu_us_per_page'] - base:.0f} µs)"
            rows.append((f"server CPU a page: {label}", f"{v['cpu_us_per_page']:.0f} µs{extra}", ""))
    q = res.get("queue_full")
    if p:
        rows.append(("peak RSS, gateway under page load", mib(p["gateway_peak_rss"]), "bounded"))
    if c:
        rows.append(("peak RSS, gateway under `/collect` load",
                     mib(max(c["single"]["peak_rss"], c["batch"]["peak_rss"])), "bounded"))
    if q:
        filled = "queue full, 503s" if q["queue_filled"] else "queue never full"
        rows += [
            (f"peak RSS, `/collect` flooded ({filled})", f"{mib(q['peak_rss'])} (idle {mib(q['idle_rss'])})",
             "bounded"),
            ("flood: requests refused with 503 / accepted", f"{q['refused_503']} / {q['accepted_requests']}",
             "503 when full"),
            ("flood: events refused at the full queue (queue_max)",
             f"{q['refused_events']['queue']} ({q['queue_max']}); journal full "
             f"{q['refused_events']['journal']}, commit timeouts {q['refused_events']['ack_timeouts']}", ""),
        ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def chart(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    p = res.get("pages")
    ax = axes[0][0]
    if p:
        xs = range(1, len(p["rounds"]) + 1)
        ax.plot(xs, [r["bare"]["rps"] for r in p["rounds"]], "o-", label="bare demo")
        ax.plot(xs, [r["gateway"]["rps"] for r in p["rounds"]], "s-", label="behind the gateway")
        ax.set_title(f"page throughput (median ratio {p['ratio']:.3f}, target 0.85)")
        ax.set_xlabel("round")
        ax.set_ylabel("requests/s")
        ax.set_ylim(bottom=0)
        ax.legend()
    c = res.get("collect")
    ax = axes[0][1]
    if c:
        names = ["single", "batch"]
        ax.bar(["single events", "batches of 50"], [c[n]["persisted_per_s"] for n in names], color=["C0", "C1"])
        for i, n in enumerate(names):
            ax.plot([i] * len(c[n]["rounds"]), [r["persisted_per_s"] for r in c[n]["rounds"]], "k.")
        if "floor_durable" in c:
            ax.axhline(c["floor_durable"]["acked_per_s"], color="C7", ls=":", lw=1.5,
                       label="floor: 202 after fsync, no gateway (req/s)")
        ax.axhline(8000, color="C0", ls="--", lw=1, label="target single 8,000/s")
        ax.axhline(100000, color="C1", ls="--", lw=1, label="target batched 100,000/s")
        ax.set_yscale("log")
        ax.set_title("/collect events persisted per second")
        ax.legend(fontsize=8)
    lat = res.get("latency")
    ax = axes[1][0]
    if lat:
        names = ["bare", "gateway", "collect"]
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [lat[n]["p50_ms"] for n in names], 0.4, label="p50")
        ax.bar([i + 0.2 for i in x], [lat[n]["p99_ms"] for n in names], 0.4, label="p99")
        ax.set_xticks(list(x), ["page, bare", "page, gateway", "/collect"])
        ax.set_ylabel("ms")
        ax.set_title(f"latency at {lat['rate']:.0f} requests/s")
        ax.legend()
    ax = axes[1][1]
    labels, values = [], []
    q = res.get("queue_full")
    if q:
        labels.append("idle")
        values.append(q["idle_rss"] / 2**20)
    if p:
        labels.append("page load")
        values.append(p["gateway_peak_rss"] / 2**20)
    if c:
        labels.append("/collect load")
        values.append(max(c["single"]["peak_rss"], c["batch"]["peak_rss"]) / 2**20)
    if q:
        labels.append("queue full" if q["queue_filled"] else "flooded")
        values.append(q["peak_rss"] / 2**20)
    if values:
        ax.bar(labels, values, color="C2")
        ax.set_ylabel("MiB")
        ax.set_title("gateway peak RSS")
    m = res["machine"]
    fig.suptitle(f"consent-gateway bench {res['started']} · {m['nproc']} cores · {m['cpu']} · Python {m['python']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- entry point ---------------------------------------------------------------------------------

PARTS = ("pages", "breakdown", "collect", "latency", "queue_full")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds for pages and latency (default 5)")
    parser.add_argument("--seconds", type=float, default=6, help="seconds per page-throughput run (default 6)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--breakdown-seconds", type=float, default=3,
                        help="seconds per run of the CPU cost breakdown (default 3)")
    parser.add_argument("--collect-rounds", type=int, default=3, help="rounds of single vs batch (default 3)")
    parser.add_argument("--collect-connections", type=int, default=64,
                        help="concurrent /collect clients: many visitors send beacons at once (default 64)")
    parser.add_argument("--collect-seconds", type=float, default=6, help="seconds per /collect run (default 6)")
    parser.add_argument("--rate", type=float, default=200, help="fixed request rate for latency (default 200/s)")
    parser.add_argument("--latency-seconds", type=float, default=5, help="seconds per latency run (default 5)")
    parser.add_argument("--flood-seconds", type=float, default=20, help="seconds of /collect flood (default 20)")
    parser.add_argument("--flood-connections", type=int, default=512,
                        help="connections of the /collect flood (default 512)")
    parser.add_argument("--flood-queue-max", type=int, default=5_000,
                        help="queue_max of the flooded gateway, 0 for the setting's default (default 5000)")
    parser.add_argument("--settle", type=float, default=1.0, help="pause between runs, seconds (default 1)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--no-wrk", dest="wrk", action="store_false",
                        help="use the Python generator even if wrk exists")
    add_loop_cpu_option(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results", help="where JSON and PNG go")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data directories")
    parser.add_argument("--quick", action="store_true", help="a short run of every part (smoke test, not a measure)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.collect_rounds, args.collect_seconds = 2, 1, 1, 1
        args.latency_seconds, args.rate, args.flood_seconds, args.settle = 1, 50, 2, 0.2
        args.breakdown_seconds = 1
    args.loop_cpu = loop_cpu_option(parser, args)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown part {sorted(unknown)[0]!r}; choose from {', '.join(PARTS)}")
    return args


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cg-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"data kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = args.parts.split(",")
    started = dt.datetime.now(dt.UTC)
    res: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m loadtests.bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "generator": "wrk " + (WRK or "") if args.wrk and WRK else "pyload (Python asyncio)",
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    print(f"consent-gateway bench, {res['machine']['nproc']} cores, {res['machine']['cpu']}, "
          f"Python {res['machine']['python']}, {res['machine']['server']}, one worker; "
          f"throughput by {res['generator']}; "
          + ("event loops not pinned" if args.loop_cpu is None else f"each server's event loop on CPU {args.loop_cpu}"),
          flush=True)
    steps = {"pages": page_throughput, "breakdown": cost_breakdown, "collect": collect_throughput,
             "latency": fixed_rate_latency, "queue_full": queue_full_rss}
    with workdir(args.keep) as work:
        for part in PARTS:
            if part in parts:
                print(f"{part} ...", flush=True)
                res[part] = steps[part](args, work)
    res["seconds"] = (dt.datetime.now(dt.UTC) - started).total_seconds()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(res, indent=2, default=str)
    (args.out / f"bench-{stamp}.json").write_text(text)
    (args.out / "bench.json").write_text(text)
    chart(res, args.out / "bench.png")
    print()
    print(table(res))
    print()
    print(f"wrote {args.out / 'bench.json'}, {args.out / f'bench-{stamp}.json'} and {args.out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
