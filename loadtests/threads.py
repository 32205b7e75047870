"""Where a server's CPU goes, per request and per kind of thread, for one load.

    .venv/bin/python -m loadtests.threads                        # pages: bare demo vs gateway
    .venv/bin/python -m loadtests.threads --mode batch --apps gateway   # or --mode json, --mode single
    .venv/bin/python -m loadtests.threads --set flush_interval=5 --rounds 3
    .venv/bin/python -m loadtests.threads --apps gateway --compare flush_interval=5

It starts each app's uvicorn server (as ``loadtests.bench`` does), puts a closed-loop load on it,
waits until the gateway's queue has drained and reads every thread's user and system CPU from
``/proc/PID/task/*/stat`` before and after. Threads fall into groups:

- ``main``: the event loop, which runs every request (and holds the interpreter lock to do it);
- ``python``: the gateway's own threads (the journal writer, the inserter, which also runs the
  embedded ClickHouse's insert queries, the salt janitor);
- ``clickhouse``: the embedded engine's own threads (insert pipelines, merges, background pools);
- ``exited``: threads that ended during the load (the engine's pools come and go): the process's
  CPU (``/proc/PID/stat``) less that of the threads still there, so the groups add up to it.

Each measure also counts the event loop's context switches a 1,000 requests: waits (voluntary,
mostly for the interpreter lock while another thread holds it) and preemptions (involuntary).
The waits show the gateway's threads at work beside the loop; they are a sign, not a cost (fewer,
longer writer turns halve them and leave the loop's CPU as it was: docs/performance.md).

``--set KEY=VALUE`` passes a setting to every server as ``CONSENT_GATEWAY_KEY``; ``--compare
KEY=VALUE`` adds a second server of each app with that setting too, for an A/B of the setting.
Servers of one round run one after the other, rounds alternate their order, and the median of the
rounds is printed. ``measure`` (rate, latency, peak RSS and CPU a request of one load) is also what
the bench's page rounds and its CPU breakdown by feature run. Linux only (it reads ``/proc``).
Nothing here asserts on time: it reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .loadgen import WRK, throughput
from .servers import (
    Server,
    add_load_options,
    collect_headers,
    consent_cookie,
    event_body,
    load_options,
    page_headers,
    wait_drained,
)
from .stored import run_id

GROUPS = ("main", "python", "clickhouse", "exited")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
Variant = tuple[str, str, dict[str, str]]  # label, app, the server's environment


def _user_system(stat: str) -> tuple[float, float]:
    """utime and stime of a ``/proc/.../stat`` line: fields 14 and 15, counted after the name's ")"."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def process_cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` so far, all its threads, ended ones too."""
    # Imported on use: benchmarks/page_instructions.py counts instructions in a process that imports loadtests.
    import psutil  # type: ignore[import-untyped]

    times = psutil.Process(pid).cpu_times()
    return float(times.user), float(times.system)


def thread_cpu(pid: int) -> dict[str, dict[str, float]]:
    """User and system CPU seconds of each thread of ``pid``, by thread group (see the module doc)."""
    out = {group: {"user": 0.0, "system": 0.0} for group in GROUPS}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            user, system = _user_system((task / "stat").read_text())
        except OSError:  # the thread ended meanwhile
            continue
        # Python threads keep the interpreter's name.
        group = "main" if task.name == str(pid) else "python" if name.startswith("python") else "clickhouse"
        out[group]["user"] += user
        out[group]["system"] += system
    user, system = process_cpu(pid)
    out["exited"] = {"user": user - sum(out[g]["user"] for g in GROUPS[:-1]),
                     "system": system - sum(out[g]["system"] for g in GROUPS[:-1])}
    return out


def loop_switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of ``pid``'s main thread (its event loop) so far.

    A voluntary switch is the loop giving up its CPU to wait: with the socket work done by the
    kernel at once, that is mostly a wait for the interpreter lock while another thread of the
    process (the gateway's writer, say) holds it. An involuntary one is the scheduler taking the
    CPU away.
    """
    counts = {}
    for line in Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            counts[key] = int(value)
    return counts["voluntary_ctxt_switches"], counts["nonvoluntary_ctxt_switches"]


def rss(pid: int) -> int:
    """Resident set size of process ``pid``, bytes."""
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


class Sampler:
    """Calls ``read`` every ``interval`` seconds in a thread while in ``with``; keeps the highest value."""

    def __init__(self, read: Callable[[], int], interval: float = 0.1) -> None:
        self._read = read
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # the process has gone, or a flood starves /healthz
                self.peak = max(self.peak, self._read())
            self._stop.wait(self._interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


JSON_PATH = "/api/attendance"  # the demo's light JSON endpoint: a small document, no template
MODES = ("page", "json", "single", "batch")


def _request(mode: str, port: int, cookie: str) -> tuple[str, str, dict[str, str], bytes, int]:
    """Method, path, headers, body and default connections of a load of ``mode`` (see ``MODES``)."""
    if mode in ("page", "json"):
        json_accept = {"Accept": "application/json"} if mode == "json" else {}
        return "GET", JSON_PATH if mode == "json" else "/", page_headers(cookie) | json_accept, b"", 16
    size = 1 if mode == "single" else 50
    return "POST", "/_consent/collect", collect_headers(port, cookie), event_body(run_id("threads"), size), 64


def measure(server: Server, mode: str, seconds: float, use_wrk: bool, *, cookie: str | None = None,
            warm: float = 1.0, tail: float = 1.5, connections: int | None = None) -> dict[str, Any]:
    """One load on a started server: its rate and latency, CPU µs a request by thread group, peak RSS.

    ``cookie`` is the consent cookie sent (by default a fresh one from a gateway, "none" to a bare
    site). ``warm`` seconds of the same load come first; for a gateway, the CPU is read once its
    queue has drained and ``tail`` seconds more have passed (the inserts of the last rows).
    """
    pid = server.proc.pid  # type: ignore[union-attr]
    gateway = server.gateway
    cookie = cookie or first_cookie(server)
    method, path, headers, body, default_connections = _request(mode, server.port, cookie)
    connections = connections or default_connections
    if warm:
        throughput(server.port, method, path, headers, body, seconds=warm, connections=connections, use_wrk=use_wrk)
    if gateway:
        wait_drained(server.port)
    before, switched = thread_cpu(pid), loop_switches(pid)
    with Sampler(lambda: rss(pid)) as peak:
        result = throughput(server.port, method, path, headers, body, seconds=seconds, connections=connections,
                            use_wrk=use_wrk)
    if gateway:
        wait_drained(server.port)
        time.sleep(tail)
    after, switches = thread_cpu(pid), loop_switches(pid)
    if result.bad_status or result.errors or not result.requests:
        raise RuntimeError(f"{server!r}: {result.bad_status} bad statuses, {result.errors} errors of "
                           f"{result.requests} requests to {path}; nothing to divide by, no rounds to compare")
    per_request = {
        group: {kind: (after[group][kind] - before[group][kind]) / result.requests * 1e6 for kind in ("user", "system")}
        for group in GROUPS
    }
    # The event loop's context switches per 1,000 requests: (voluntary, involuntary).
    loop_switches_per_1000 = [(b - a) / result.requests * 1000 for a, b in zip(switched, switches, strict=True)]
    return {"rps": result.rps, "requests": result.requests, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
            "generator": result.generator, "peak_rss": peak.peak, "cpu_us": per_request,
            "loop_switches_per_1000": loop_switches_per_1000,
            "total_us": sum(v["user"] + v["system"] for v in per_request.values())}


def first_cookie(server: Server) -> str:
    """The value a load sends in the consent cookie's place: a gateway's own consent, the session
    anchor's signed session, "none" to the bare demo and the pass-through anchor."""
    if server.gateway:
        return consent_cookie(server.port)
    if server.app == "session":
        from .apps import session_cookie  # the gateway's package, loaded only when the anchor runs

        return session_cookie()
    return "none"


def rounds(variants: list[Variant], work: Path, count: int, loop_cpu: int | None,
           run: Callable[[str, Server, str, int], dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every variant's server up at once, ``run(label, server, cookie, round)`` on each in turn, the order
    reversed every other round so that a slower minute of the machine weighs on all; the results by label.

    Each server gives its cookie first (``first_cookie``): a new consent in each round would be a
    receipt to write during the next load.
    """
    servers = [(label, Server(app, work / f"{i}-{app.replace(':', '-')}", env=env or None))
               for i, (label, app, env) in enumerate(variants)]
    out: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in servers}
    with contextlib.ExitStack() as stack:
        for _, server in servers:
            stack.enter_context(server)
            server.pin_event_loop(loop_cpu)
        cookies = {label: first_cookie(server) for label, server in servers}
        for r in range(count):
            for label, server in servers if r % 2 == 0 else servers[::-1]:
                out[label].append(run(label, server, cookies[label], r))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.threads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, default="page",
                        help=f"GET / (page), GET {JSON_PATH} (json), /collect with one event (single) or 50 (batch)")
    parser.add_argument("--apps", default="", help="comma-separated factories of loadtests.apps (default: "
                        "bare,gateway for pages, gateway for /collect; the middleware anchors passthrough and session "
                        "serve pages)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, servers alternated (default 2)")
    parser.add_argument("--seconds", type=float, default=8, help="seconds of load a measure (default 8)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a gateway setting (CONSENT_GATEWAY_KEY=VALUE); repeatable")
    parser.add_argument("--compare", dest="compare", action="append", default=[], metavar="KEY=VALUE",
                        help="also run each app with this setting, alternated with the plain one; repeatable")
    add_load_options(parser)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    args.apps = args.apps or ("bare,gateway" if args.mode in ("page", "json") else "gateway")
    load_options(parser, args)
    for flag, items in (("--set", args.settings), ("--compare", args.compare)):
        for item in items:
            key, sep, _ = item.partition("=")
            if not sep or not key:
                parser.error(f"{flag} {item!r}: write KEY=VALUE, for example {flag} flush_interval=5")
    return args


def _env(settings: list[str]) -> dict[str, str]:
    return {f"CONSENT_GATEWAY_{k.strip().upper()}": v for k, _, v in (s.partition("=") for s in settings)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path("/proc/self/task").is_dir():
        print("loadtests.threads reads /proc: it runs on Linux only", file=sys.stderr)
        return 2
    env = _env(args.settings)
    apps = [a for a in args.apps.split(",") if a]
    # Each app as it is and, with --compare, with those settings too.
    variants: list[Variant] = [(app, app, env) for app in apps]
    if args.compare:
        variants += [(f"{app} {' '.join(args.compare)}", app, {**env, **_env(args.compare)}) for app in apps]
    print(f"CPU a request by thread, {args.mode}, {args.rounds} round(s) of {args.seconds:g} s, load by "
          + ("wrk" if args.wrk and WRK else "the Python generator")
          + (f", {' '.join(args.settings)}" if args.settings else "")
          + ("" if args.loop_cpu is None else f", event loops on CPU {args.loop_cpu}"), flush=True)

    def run(label: str, server: Server, cookie: str, r: int) -> dict[str, Any]:
        m = measure(server, args.mode, args.seconds, args.wrk, cookie=cookie)
        parts = ", ".join(f"{g} {m['cpu_us'][g]['user'] + m['cpu_us'][g]['system']:.0f}" for g in GROUPS)
        voluntary, involuntary = m["loop_switches_per_1000"]
        print(f"  round {r + 1} {label}: {m['rps']:.0f} req/s; µs a request: {parts}; "
              f"total {m['total_us']:.0f}; event loop switches a 1,000 requests: {voluntary:.1f} waits, "
              f"{involuntary:.1f} preempted", flush=True)
        return m

    with tempfile.TemporaryDirectory(prefix="cg-threads-") as work:
        by_label = rounds(variants, Path(work), args.rounds, args.loop_cpu, run)
    summary = {}
    for label, items in by_label.items():
        s = summary[label] = {
            "rps": statistics.median(i["rps"] for i in items),
            "total_us": statistics.median(i["total_us"] for i in items),
            **{g: {k: statistics.median(i["cpu_us"][g][k] for i in items) for k in ("user", "system")} for g in GROUPS},
            "loop_switches_per_1000": [statistics.median(i["loop_switches_per_1000"][k] for i in items)
                                       for k in (0, 1)],
        }
        print(f"{label}: median {s['rps']:.0f} req/s, {s['total_us']:.0f} µs CPU a request = "
              + " + ".join(f"{g} {s[g]['user']:.0f} user/{s[g]['system']:.0f} sys" for g in GROUPS)
              + "; event loop waits {:.1f}, preempted {:.1f} a 1,000 requests".format(*s["loop_switches_per_1000"]))
    if args.json:
        args.json.write_text(json.dumps({"mode": args.mode, "settings": args.settings, "compare": args.compare,
                                         "rounds": by_label, "median": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
