"""Benchmark of the consent gateway around the demo site, as ratios measured side by side in one run.

    .venv/bin/python -m loadtests.bench                 # the full run (about 13 minutes)
    .venv/bin/python -m loadtests.bench --quick         # a short smoke run of every part

It starts its own uvicorn servers (one worker each, no access log, 127.0.0.1 only) and measures:

- page throughput of the bare demo site vs the same site wrapped in the gateway, with a valid
  consent cookie and visit logging to the embedded ClickHouse, and in the same rounds the demo's
  light JSON endpoint; A and B alternate every round and the median of the per-round ratios is
  reported (``loadgen.throughput``: wrk where present);
- server CPU per page with the gateway's features switched on one at a time (middleware alone,
  + banner, + visit log), to show what each costs (``loadtests.threads``' measure), beside two
  anchors with no gateway: a pass-through middleware and Starlette's SessionMiddleware; the same
  servers take the light JSON endpoint in the same rounds, so the JSON target can be read against
  the gateway without its visit log, and against the anchors;
- ``/_consent/collect`` events persisted per second, single events and batches of 50, counted in
  ClickHouse after the server has exited (``loadtests.stored`` in a separate process); in the same
  rounds, the floor of one uvicorn worker under the same load with no gateway (loadtests/floor.py):
  an app that answers 202 after an fsynced group commit, for single events and for the same
  50-event bodies, and one that answers single events at once. This is the one ``/collect``
  benchmark;
- latency p50/p99 at a fixed request rate (``loadgen.fixed_rate``: wrk cannot hold a rate);
- peak RSS of the gateway under page load, under collect load, and while ``/collect`` is
  flooded until the queue is full (the gateway answers 503 then).

It writes ``bench-<time>.json``, ``bench.json`` (latest) and ``bench.png`` to ``--out`` and prints a
Markdown table. Nothing here asserts on time: it reports.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import threads
from .floor import journaled_bodies
from .loadgen import WRK, fixed_rate, throughput
from .servers import (
    ROOT,
    Server,
    add_load_options,
    collect_headers,
    consent_cookie,
    event_body,
    flush_barrier,
    health,
    load_options,
    page_headers,
    request,
    wait_drained,
)
from .stored import VISITS, count_in_subprocess, run_id
from .threads import JSON_PATH, Sampler, rss

PAGE_PATH = "/"
COLLECT = "/_consent/collect"
BATCH = 50


# -- machine and helpers -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """nproc, CPU model, Python version, server stack: the facts a reader needs to weigh the numbers."""
    from importlib.metadata import version
    from importlib.util import find_spec

    model = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    # uvicorn's "auto" choice takes httptools and uvloop when installed.
    stack = (f"uvicorn {version('uvicorn')}, {'httptools' if find_spec('httptools') else 'h11'}, "
             f"{'uvloop' if find_spec('uvloop') else 'asyncio'}")
    return {"nproc": os.cpu_count(), "cpu": model or platform.processor(), "python": platform.python_version(),
            "platform": platform.platform(), "server": stack}


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def check_pages(bare: Server, gw: Server, headers: dict[str, str], json_headers: dict[str, str]) -> None:
    """Both servers answer the measured page and the JSON endpoint; the gateway's page shows a given consent."""
    for server in (bare, gw):
        status, _, body = request(server.port, "GET", PAGE_PATH, headers=headers)
        if status != 200 or b"</html>" not in body:
            raise RuntimeError(f"{server!r} answered {status} to GET {PAGE_PATH}; expected a 200 HTML page")
        status, _, body = request(server.port, "GET", JSON_PATH, headers=json_headers)
        if status != 200 or not body.startswith((b"{", b"[")):
            raise RuntimeError(f"{server!r} answered {status} to GET {JSON_PATH}; expected a 200 JSON document")
    _, _, body = request(gw.port, "GET", PAGE_PATH, headers=headers)
    if b'id="cg-root"' not in body or b'data-cg-status="given"' not in body or b'id="cg-banner"' in body:
        raise RuntimeError("the gateway's page does not show a given consent; the cookie was not accepted")


# -- parts ---------------------------------------------------------------------------------------


def page_throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bare = Server("bare", work / "pages-bare")
    gw = Server("gateway", work / "pages-gateway")
    rounds: list[dict[str, Any]] = []
    with bare, gw:
        for server in (bare, gw):
            server.pin_event_loop(args.loop_cpu)
        cookie = consent_cookie(gw.port)  # sent to both, so that both parse the same requests
        headers = page_headers(cookie)
        check_pages(bare, gw, headers, {**headers, "Accept": "application/json"})
        sent_to_gateway = 2  # check_pages
        for server in (bare, gw):  # warm caches and the first chdb part
            warm = throughput(server.port, "GET", PAGE_PATH, headers, b"", seconds=1, connections=args.connections,
                              use_wrk=args.wrk)
            sent_to_gateway += warm.requests if server is gw else 0
        wait_drained(gw.port)
        for r in range(args.rounds):
            order = ("bare", "gateway") if r % 2 == 0 else ("gateway", "bare")
            pair: dict[str, Any] = {"json": {}}
            # The light JSON endpoint, on the same servers in the same rounds: the gateway's fixed cost
            # where the app's own work is smallest.
            for mode, runs in (("page", pair), ("json", pair["json"])):
                for name in order:
                    # The server's CPU a request, a gateway's until its queue has drained: its writer's
                    # work is part of the requests' cost.
                    m = threads.measure(bare if name == "bare" else gw, mode, args.seconds, args.wrk, cookie=cookie,
                                        warm=0, tail=0, connections=args.connections)
                    runs[name] = m | {"cpu_us_per_request": m["total_us"]}
                    time.sleep(args.settle)
            sent_to_gateway += pair["gateway"]["requests"]
            pair["ratio"] = pair["gateway"]["rps"] / pair["bare"]["rps"]
            pair["cpu_ratio"] = pair["bare"]["cpu_us_per_request"] / pair["gateway"]["cpu_us_per_request"]
            pair["json"]["ratio"] = pair["json"]["gateway"]["rps"] / pair["json"]["bare"]["rps"]
            rounds.append(pair)
            b, g = pair["bare"], pair["gateway"]
            print(f"  pages round {r + 1}: bare {b['rps']:.0f}/s, gateway {g['rps']:.0f}/s, ratio {pair['ratio']:.3f}; "
                  f"server CPU per request: bare {b['cpu_us_per_request']:.0f} µs, "
                  f"gateway {g['cpu_us_per_request']:.0f} µs; JSON ratio {pair['json']['ratio']:.3f}", flush=True)
    visits = count_in_subprocess(gw.data_dir, []).get(VISITS, 0)

    def med(*path: str) -> float:
        values = []
        for pair in rounds:
            value: Any = pair
            for key in path:
                value = value[key]
            values.append(float(value))
        return median(values)

    return {
        "path": PAGE_PATH,
        "connections": args.connections,
        "seconds": args.seconds,
        "generator": rounds[0]["bare"]["generator"] if rounds else "",
        "rounds": rounds,
        "bare_rps": med("bare", "rps"),
        "gateway_rps": med("gateway", "rps"),
        "ratio": med("ratio"),
        "bare_cpu_us": med("bare", "cpu_us_per_request"),
        "gateway_cpu_us": med("gateway", "cpu_us_per_request"),
        "cpu_ratio": med("cpu_ratio"),
        "gateway_requests": sent_to_gateway,
        "visits_stored": visits,
        "gateway_peak_rss": max((p["gateway"]["peak_rss"] for p in rounds), default=0),
        "loop_cpu": args.loop_cpu,
        "json": {"path": JSON_PATH, "bare_rps": med("json", "bare", "rps"),
                 "gateway_rps": med("json", "gateway", "rps"), "ratio": med("json", "ratio")},
    }


BREAKDOWN: tuple[threads.Variant, ...] = (
    ("bare demo", "bare", {}),
    # What any middleware costs the same page: one that only forwards the response's messages, and
    # Starlette's SessionMiddleware verifying one signed cookie (loadtests/apps.py).
    ("demo behind a pass-through middleware", "passthrough", {}),
    ("demo behind Starlette's SessionMiddleware", "session", {}),
    ("gateway, no banner, no visit log", "gateway", {"CG_LOAD_VARIANT": "no-banner,no-visits"}),
    ("gateway, banner, no visit log", "gateway", {"CG_LOAD_VARIANT": "no-visits"}),
    ("gateway, banner and visit log", "gateway", {}),
)


def cost_breakdown(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Server CPU per request with the gateway's features switched on one by one (all servers up at
    once, measured in rotation): what the middleware itself, the banner and visit logging each cost a
    page, and the same servers on the light JSON endpoint, where the app's own work is smallest."""

    def run(label: str, server: Server, cookie: str, r: int) -> dict[str, Any]:
        # Warmed once; the CPU is read once the gateway's queue has drained, as for the page rounds.
        measured = threads.measure(server, "page", args.breakdown_seconds, args.wrk, cookie=cookie,
                                   warm=0 if r else 1, tail=0, connections=args.connections)
        time.sleep(args.settle / 2)
        measured["json"] = threads.measure(server, "json", args.breakdown_seconds, args.wrk, cookie=cookie,
                                           warm=0, tail=0, connections=args.connections)
        time.sleep(args.settle / 2)
        return measured

    by_label = threads.rounds(list(BREAKDOWN), work / "breakdown", args.rounds, args.loop_cpu, run)
    bare = by_label[BREAKDOWN[0][0]]
    out = {label: _breakdown_figures(items, bare, "page")
           | {"json": _breakdown_figures([m["json"] for m in items], [b["json"] for b in bare], "request")}
           for label, items in by_label.items()}
    for label, v in out.items():
        j = v["json"]
        print(f"  {label}: {v['cpu_us_per_page']:.0f} µs CPU a page, {v['rps']:.0f} pages/s "
              f"({v['rate_of_bare']:.3f} of the bare rate), "
              f"event loop waits {v['loop_waits_per_1000']:.1f} a 1,000 pages; JSON endpoint "
              f"{j['cpu_us_per_request']:.0f} µs, {j['rps']:.0f}/s ({j['rate_of_bare']:.3f})", flush=True)
    return {"seconds": args.breakdown_seconds, "json_path": JSON_PATH, "variants": out}


def _breakdown_figures(items: list[dict[str, Any]], bare: list[dict[str, Any]], unit: str) -> dict[str, Any]:
    """One variant's medians over its rounds; the CPU is ``cpu_us_per_<unit>``."""
    return {f"cpu_us_per_{unit}": median([m["total_us"] for m in items]), "rps": median([m["rps"] for m in items]),
            # Each round's rate over the bare demo's in the same round, as the page rounds compare.
            "rate_of_bare": median([m["rps"] / b["rps"] for m, b in zip(items, bare, strict=True)]),
            "rounds": [m["total_us"] for m in items],
            "loop_waits_per_1000": median([m["loop_switches_per_1000"][0] for m in items]),
            "threads_us": {g: median([m["cpu_us"][g]["user"] + m["cpu_us"][g]["system"] for m in items])
                           for g in threads.GROUPS}}


# ``/collect`` runs of one round, in this order (reversed every other round): mode -> (app, events a
# request). The floors (loadtests/floor.py) get the gateway's own load; the durable floor runs with
# the single events and with the 50-event bodies.
COLLECT_RUNS = {
    "single": ("gateway", 1),
    "floor_durable": ("loadtests.floor:durable", 1),
    "floor_ack": ("loadtests.floor:ack", 1),
    "floor_durable_batch": ("loadtests.floor:durable", BATCH),
    "batch": ("gateway", BATCH),
}
FLOORS = tuple(mode for mode, (app, _) in COLLECT_RUNS.items() if app != "gateway")


def collect_throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in COLLECT_RUNS}
    order = tuple(COLLECT_RUNS)
    cookie = "x" * 120  # what the floors send until a gateway has given a real one (they read none)
    for r in range(args.collect_rounds):
        for mode in order if r % 2 == 0 else order[::-1]:
            run, cookie = _collect_run(args, work / f"collect-{mode}-{r}", mode, cookie)
            runs[mode].append(run)
            size = run["events_per_request"]
            print(f"  collect {mode} round {r + 1}: "
                  + (f"acked {run['acked_events']}, stored {run['stored_events']}, {run['persisted_per_s']:.0f} "
                     f"events/s persisted ({run['refused_requests']} refused with 503)" if "stored_events" in run
                     else f"{run['acked_per_s'] / size:.0f} {size}-event requests/s acknowledged"), flush=True)
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
    # Per round, the gateway's acknowledged events a second over the durable floor's for the same bodies:
    # rounds alternate their order, so a slower minute of the machine weighs on both.
    for key, mode, floor in (("single_of_floor", "single", "floor_durable"),
                             ("batch_of_floor", "batch", "floor_durable_batch")):
        pairs = zip(runs[mode], runs[floor], strict=True)
        out[key] = median([g["acked_per_s"] / f["acked_per_s"] for g, f in pairs if f["acked_per_s"]])
    return out | {"connections": args.collect_connections, "seconds": args.collect_seconds}


def _collect_run(args: argparse.Namespace, data_dir: Path, mode: str, cookie: str) -> tuple[dict[str, Any], str]:
    """One server under the ``/collect`` load of ``mode``; for a gateway, what it stored once it exited.

    The floors get the gateway's headers and bodies, so that uvicorn parses as much. Returns the run
    and the consent cookie the floors send next.
    """
    app, size = COLLECT_RUNS[mode]
    gateway = app == "gateway"
    tag = run_id(f"bench-{mode}" if gateway else "floor")
    body = event_body(tag, size)
    checked = drained = 0.0
    with Server(app, data_dir) as server:
        if gateway:
            cookie = consent_cookie(server.port)
            status, _, answer = request(server.port, "POST", COLLECT, body, collect_headers(server.port, cookie))
            if status != 202 or json.loads(answer).get("accepted") != size:
                raise RuntimeError(f"POST {COLLECT} answered {status} {answer[:200]!r}; expected 202")
            checked = 1
        pid = server.proc.pid  # type: ignore[union-attr]
        with Sampler(lambda: rss(pid)) as peak:
            result = throughput(server.port, "POST", COLLECT, collect_headers(server.port, cookie), body,
                                seconds=args.collect_seconds, connections=args.collect_connections, use_wrk=args.wrk)
            if gateway:
                started = time.monotonic()
                wait_drained(server.port)
                flush_barrier(server.port, cookie)
                drained = time.monotonic() - started
    acked = int(result.ok + checked) * size  # checked: the check request above
    run: dict[str, Any] = {
        "events_per_request": size,
        "requests": result.requests + int(checked),
        "acked_events": acked,
        "refused_requests": result.bad_status,
        "load_seconds": result.seconds,
        "acked_per_s": acked / result.seconds,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "peak_rss": peak.peak,
    }
    if gateway:
        stored = count_in_subprocess(data_dir, [tag])[tag]
        run |= {"stored_events": stored, "drain_seconds": drained, "lost": max(0, acked - stored),
                "persisted_per_s": stored / (result.seconds + drained)}
    if app.endswith(":durable"):
        # Proof it did the work it stands for: every acknowledged body is in its fsynced file.
        run["journaled"] = journaled_bodies(data_dir)
        if run["journaled"] < result.ok:
            raise RuntimeError(f"the durable floor acknowledged {result.ok} bodies but wrote {run['journaled']}")
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    return run, cookie


def fixed_rate_latency(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bare = Server("bare", work / "latency-bare")
    gw = Server("gateway", work / "latency-gateway")
    series: dict[str, list[dict[str, float]]] = {"bare": [], "gateway": [], "collect": []}
    with bare, gw:
        cookie = consent_cookie(gw.port)
        requests = {
            "bare": (bare.port, "GET", PAGE_PATH, page_headers(cookie), b"", 200),
            "gateway": (gw.port, "GET", PAGE_PATH, page_headers(cookie), b"", 200),
            "collect": (gw.port, "POST", COLLECT, collect_headers(gw.port, cookie),
                        event_body(run_id("bench-latency"), 1), 202),
        }
        for r in range(args.rounds):
            for name in tuple(requests) if r % 2 == 0 else tuple(requests)[::-1]:
                port, method, path, headers, body, wanted = requests[name]
                result = fixed_rate(port, method, path, headers, body, rate=args.rate, seconds=args.latency_seconds)
                if result.errors or set(result.statuses) != {wanted}:
                    raise RuntimeError(f"{name} at {args.rate}/s: statuses {dict(result.statuses)}, "
                                       f"{result.errors} errors")
                series[name].append({"p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "rps": result.rps,
                                     "late": result.late})
                if name != "bare":
                    wait_drained(gw.port)
    return {
        "rate": args.rate,
        "seconds": args.latency_seconds,
        "generator": "loadgen.fixed_rate (open loop)",
        **{name: {"rounds": items, "p50_ms": median([i["p50_ms"] for i in items]),
                  "p99_ms": median([i["p99_ms"] for i in items])} for name, items in series.items()},
    }


def queue_full_rss(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Flood /collect with batches until the queue is full (503s), sampling RSS and the queue length.

    ``/collect`` answers only once its events are durable, so each connection holds at most one batch
    in the queue: filling it takes more batches in flight than ``queue_max`` / 50. The flood uses
    ``--flood-connections`` clients against a gateway whose ``queue_max`` is ``--flood-queue-max``.
    """
    env = {"CONSENT_GATEWAY_QUEUE_MAX": str(args.flood_queue_max)} if args.flood_queue_max else {}
    server = Server("gateway", work / "queue-full", env=env)
    with server:
        pid, port = server.proc.pid, server.port  # type: ignore[union-attr]
        cookie = consent_cookie(port)
        idle = rss(pid)
        with Sampler(lambda: rss(pid)) as peak, Sampler(lambda: int(health(port).get("queued", 0)), 0.2) as queued:
            result = throughput(port, "POST", COLLECT, collect_headers(port, cookie),
                                event_body(run_id("flood"), BATCH), seconds=args.flood_seconds,
                                connections=args.flood_connections, use_wrk=args.wrk)
        after_load = rss(pid)
        wait_drained(port, timeout=300)
        flush_barrier(port, cookie, timeout=300)
        drained_rss = rss(pid)
        # Why requests were refused, as the gateway counted it (a /healthz poll can starve in a flood).
        refusals = refusal_counts(port)
        from .apps import load_settings

        queue_max = args.flood_queue_max or load_settings(server.data_dir).queue_max
    if not args.keep:
        shutil.rmtree(server.data_dir, ignore_errors=True)
    return {
        "seconds": args.flood_seconds,
        "connections": args.flood_connections,
        "idle_rss": idle,
        "peak_rss": peak.peak,
        "rss_after_flood": after_load,
        "rss_after_drain": drained_rss,
        "peak_queued": queued.peak,
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
        if name.startswith("cg_pipeline_shed_records_total{") and 'kind="event"' in name:
            for reason in ("queue", "journal"):
                if f'reason="{reason}"' in name:
                    counts[reason] += int(float(value))
        elif name == "cg_pipeline_ack_timeouts_total":
            counts["ack_timeouts"] += int(float(value))
    return counts


# -- report --------------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def _breakdown_rows(b: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The cost breakdown's rows of the table: CPU a page by variant, then a light JSON request; every
    variant after the first (the bare demo) with its difference from it and its share of its rate."""
    variants = list(b["variants"].items())
    rows = []
    kinds = (("page", "a page", lambda v: v), ("request", "a light JSON request", lambda v: v.get("json")))
    for unit, what, figures in kinds:
        base = figures(variants[0][1])
        if base is None:  # a run from before the JSON endpoint was measured here
            continue
        for i, (label, v) in enumerate(variants):
            f = figures(v)
            cpu = f[f"cpu_us_per_{unit}"]
            extra = "" if i == 0 else f" ({cpu - base[f'cpu_us_per_{unit}']:+.0f} µs)"
            if i and "rate_of_bare" in f:
                extra += f"; {f['rate_of_bare']:.3f} of the bare rate"
            rows.append((f"server CPU {what}: {label}", f"{cpu:.0f} µs{extra}", ""))
    return rows


def table(res: dict[str, Any]) -> str:
    rows = [("measure", "result", "target")]
    p = res.get("pages")
    if p:
        rows += [
            ("page throughput, bare demo", f"{p['bare_rps']:.0f} req/s", ""),
            ("page throughput, behind the gateway", f"{p['gateway_rps']:.0f} req/s", ""),
            ("**gateway / bare (median of rounds)**", f"**{p['ratio']:.3f}**", "≥ 0.90"),
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
            ("`/collect` single events persisted", f"{c['single']['persisted_per_s']:.0f} events/s", ""),
        ]
        if "floor_durable" in c:
            rows += [
                ("floor, no gateway: 202 after an fsynced group commit",
                 f"{c['floor_durable']['acked_per_s']:.0f} req/s", ""),
                ("floor, no gateway: 202 at once", f"{c['floor_ack']['acked_per_s']:.0f} req/s", ""),
                ("**single events acknowledged: gateway / fsync floor**", f"**{c['single_of_floor']:.3f}**", "≥ 0.70"),
            ]
        rows += [
            ("`/collect` batches of 50 persisted", f"{c['batch']['persisted_per_s']:.0f} events/s", ""),
        ]
        if "floor_durable_batch" in c:
            rows += [
                ("floor, no gateway: 50-event bodies after an fsynced group commit",
                 f"{c['floor_durable_batch']['acked_per_s']:.0f} events/s", ""),
                ("**batches of 50 acknowledged: gateway / fsync floor**", f"**{c['batch_of_floor']:.3f}**", "≥ 0.70"),
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
        rows += _breakdown_rows(b)
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
        ax.set_title(f"page throughput (median ratio {p['ratio']:.3f}, target 0.90)")
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
        if "floor_durable_batch" in c:
            ax.axhline(c["floor_durable_batch"]["acked_per_s"], color="C1", ls=":", lw=1.5,
                       label="floor: 50-event bodies after fsync, no gateway (events/s)")
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
    option = parser.add_argument
    option("--rounds", type=int, default=5, help="A/B rounds for pages and latency (default 5)")
    option("--seconds", type=float, default=6, help="seconds per page-throughput run (default 6)")
    option("--connections", type=int, default=16, help="concurrent connections (default 16)")
    # Shorter runs cannot order the breakdown's variants on a shared 2-core machine (docs/performance.md).
    option("--breakdown-seconds", type=float, default=6, help="seconds per run of the CPU cost breakdown (default 6)")
    option("--collect-rounds", type=int, default=3, help="rounds of single vs batch (default 3)")
    option("--collect-connections", type=int, default=64,
           help="concurrent /collect clients: many visitors send beacons at once (default 64)")
    option("--collect-seconds", type=float, default=6, help="seconds per /collect run (default 6)")
    option("--rate", type=float, default=200, help="fixed request rate for latency (default 200/s)")
    option("--latency-seconds", type=float, default=5, help="seconds per latency run (default 5)")
    option("--flood-seconds", type=float, default=20, help="seconds of /collect flood (default 20)")
    option("--flood-connections", type=int, default=512, help="connections of the /collect flood (default 512)")
    option("--flood-queue-max", type=int, default=5_000,
           help="queue_max of the flooded gateway, 0 for the setting's default (default 5000)")
    option("--settle", type=float, default=1.0, help="pause between runs, seconds (default 1)")
    option("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    add_load_options(parser)
    option("--out", type=Path, default=ROOT / "loadtests" / "results", help="where JSON and PNG go")
    option("--keep", action="store_true", help="keep the servers' data directories")
    option("--quick", action="store_true", help="a short run of every part (smoke test, not a measure)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.collect_rounds, args.collect_seconds = 2, 1, 1, 1
        args.latency_seconds, args.rate, args.flood_seconds, args.settle = 1, 50, 2, 0.2
        args.breakdown_seconds = 1
    load_options(parser, args)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown part {sorted(unknown)[0]!r}; choose from {', '.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = args.parts.split(",")
    started = dt.datetime.now(dt.UTC)
    res: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m loadtests.bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "generator": "wrk " + (WRK or "") if args.wrk and WRK else "the Python generator (loadgen, asyncio)",
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    print(f"consent-gateway bench, {res['machine']['nproc']} cores, {res['machine']['cpu']}, "
          f"Python {res['machine']['python']}, {res['machine']['server']}, one worker; "
          f"throughput by {res['generator']}; "
          + ("event loops not pinned" if args.loop_cpu is None else f"each server's event loop on CPU {args.loop_cpu}"),
          flush=True)
    steps = {"pages": page_throughput, "breakdown": cost_breakdown, "collect": collect_throughput,
             "latency": fixed_rate_latency, "queue_full": queue_full_rss}
    work = Path(tempfile.mkdtemp(prefix="cg-bench-"))
    try:
        for part in PARTS:
            if part in parts:
                print(f"{part} ...", flush=True)
                res[part] = steps[part](args, work)
    finally:
        if args.keep:
            print(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    res["seconds"] = (dt.datetime.now(dt.UTC) - started).total_seconds()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(res, indent=2, default=str)
    (args.out / f"bench-{stamp}.json").write_text(text)
    (args.out / "bench.json").write_text(text)
    chart(res, args.out / "bench.png")
    print(f"\n{table(res)}\n")
    print(f"wrote {args.out / 'bench.json'}, {args.out / f'bench-{stamp}.json'} and {args.out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
