"""The load-test harness's own logic on short runs: it starts servers, measures, writes its files.

Nothing here asserts on time or throughput; the numbers only have to exist and add up. The servers
are real uvicorn processes with their own data directories; this process opens no chdb path (the
harness counts stored events in a separate process).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from loadtests import bench, floor, loadgen, zero_loss
from loadtests.servers import Server, ServerProcess, consent_cookie, default_loop_cpu, free_port, request

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bench_quick_run_measures_every_part_and_writes_its_files(tmp_path: Path, capsys: Any) -> None:
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0

    result = json.loads((tmp_path / "bench.json").read_text())
    assert set(bench.PARTS) <= set(result)
    assert result["machine"]["nproc"] >= 1 and result["machine"]["python"]
    assert result["machine"]["server"].startswith("uvicorn "), "the report names the server stack it measured"

    pages = result["pages"]
    assert len(pages["rounds"]) == 2
    assert all(r["bare"]["requests"] > 0 and r["gateway"]["requests"] > 0 for r in pages["rounds"])
    assert math.isfinite(pages["ratio"]) and pages["ratio"] > 0
    # Every page the gateway answered was logged as a visit (requests cut off by the generator's
    # deadline may still be logged, so more visits than counted answers is fine).
    assert pages["visits_stored"] >= pages["gateway_requests"] > 0
    assert pages["loop_cpu"] == default_loop_cpu()  # the event loops' CPU is part of the result
    # The light JSON endpoint ran in the same rounds, on the same two servers.
    assert all(r["json"]["bare"]["requests"] > 0 and r["json"]["gateway"]["requests"] > 0 for r in pages["rounds"])
    assert pages["json"]["path"] == bench.JSON_PATH and math.isfinite(pages["json"]["ratio"])

    variants = result["breakdown"]["variants"]
    assert list(variants) == [label for label, _, _ in bench.BREAKDOWN]
    assert all(v["cpu_us_per_page"] > 0 and len(v["rounds"]) == 2 for v in variants.values())
    # Each variant's rate is set against the bare demo's of the same rounds; the anchors ran as servers too.
    assert variants["bare demo"]["rate_of_bare"] == 1.0
    assert all(math.isfinite(v["rate_of_bare"]) and v["rate_of_bare"] > 0 for v in variants.values())
    # The same servers took the light JSON endpoint in the same rounds, set against the bare demo's.
    assert result["breakdown"]["json_path"] == bench.JSON_PATH
    assert variants["bare demo"]["json"]["rate_of_bare"] == 1.0
    assert all(v["json"]["cpu_us_per_request"] > 0 and len(v["json"]["rounds"]) == 2 for v in variants.values())
    assert all(math.isfinite(v["json"]["rate_of_bare"]) and v["json"]["rate_of_bare"] > 0 for v in variants.values())

    for mode, size in (("single", 1), ("batch", bench.BATCH)):
        (run,) = result["collect"][mode]["rounds"]
        assert run["events_per_request"] == size
        assert run["acked_events"] > 0 and run["acked_events"] % size == 0
        assert run["stored_events"] >= run["acked_events"], "an acknowledged event is missing in ClickHouse"
        assert run["lost"] == 0 and run["persisted_per_s"] > 0

    # The floors ran in the same round, under the same single-event load, and the durable one wrote
    # every body it acknowledged to its fsynced file.
    (durable,) = result["collect"]["floor_durable"]["rounds"]
    (at_once,) = result["collect"]["floor_ack"]["rounds"]
    assert durable["acked_events"] > 0 and durable["refused_requests"] == 0
    assert durable["journaled"] >= durable["acked_events"]
    assert at_once["acked_events"] > 0 and "journaled" not in at_once
    # The durable floor for the same 50-event bodies as the gateway's batches wrote every body it acknowledged.
    (durable_batch,) = result["collect"]["floor_durable_batch"]["rounds"]
    assert durable_batch["events_per_request"] == bench.BATCH and durable_batch["acked_events"] > 0
    assert durable_batch["journaled"] * bench.BATCH >= durable_batch["acked_events"]
    assert result["collect"]["batch_of_floor"] == pytest.approx(
        result["collect"]["batch"]["rounds"][0]["acked_per_s"] / durable_batch["acked_per_s"]
    )
    single = result["collect"]["single"]
    assert result["collect"]["single_of_floor"] == pytest.approx(
        single["rounds"][0]["acked_per_s"] / durable["acked_per_s"]
    )

    for name in ("bare", "gateway", "collect"):
        assert 0 < result["latency"][name]["p50_ms"] <= result["latency"][name]["p99_ms"]

    flood = result["queue_full"]
    assert flood["peak_rss"] >= flood["idle_rss"] > 0
    assert flood["queue_max"] > 0 and flood["accepted_requests"] > 0
    assert set(flood["refused_events"]) == {"queue", "journal", "ack_timeouts"}
    assert all(isinstance(n, int) and n >= 0 for n in flood["refused_events"].values())
    assert flood["queue_filled"] == (flood["refused_events"]["queue"] > 0)

    assert (tmp_path / "bench.png").read_bytes().startswith(PNG_MAGIC)
    assert len(list(tmp_path.glob("bench-*.json"))) == 1
    out = capsys.readouterr().out
    assert "gateway / bare (median of rounds)" in out and f"{pages['ratio']:.3f}" in out
    assert "server CPU a light JSON request: gateway, banner and visit log" in out


def test_table_and_chart_render_a_result_without_running_anything(tmp_path: Path) -> None:
    result = {
        "started": "2026-01-01 00:00 UTC",
        "machine": {"nproc": 2, "cpu": "test CPU", "python": "3.11.7"},
        "pages": {
            "rounds": [{"bare": {"rps": 1000.0}, "gateway": {"rps": 900.0}, "ratio": 0.9}],
            "bare_rps": 1000.0, "gateway_rps": 900.0, "ratio": 0.9,
            "bare_cpu_us": 200.0, "gateway_cpu_us": 250.0, "cpu_ratio": 0.8,
            "visits_stored": 10, "gateway_requests": 10, "gateway_peak_rss": 100 * 2**20,
        },
        "collect": {
            mode: {"rounds": [{"persisted_per_s": value}], "persisted_per_s": value, "lost": 0,
                   "peak_rss": 120 * 2**20}
            for mode, value in (("single", 9000.0), ("batch", 120000.0))
        },
    }
    result["collect"] |= {
        "floor_durable": {"rounds": [{"acked_per_s": 12000.0}], "acked_per_s": 12000.0},
        "floor_ack": {"rounds": [{"acked_per_s": 15000.0}], "acked_per_s": 15000.0},
        "single_of_floor": 0.75,
    }
    text = bench.table(result)
    assert "**0.900**" in text and "9000 events/s" in text and "120000 events/s" in text
    assert "| 12000 req/s" in text and "| 15000 req/s" in text and "| **0.750** " in text and "≥ 0.70" in text
    assert "200 µs / 250 µs (ratio 0.800)" in text
    assert "100 MiB" in text and "120 MiB" in text
    assert "latency" not in text  # parts that did not run are left out, not shown as zeros
    bench.chart(result, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes().startswith(PNG_MAGIC)


def test_table_shows_the_json_endpoint_and_the_batch_floor_when_measured() -> None:
    pages = {
        "bare_rps": 1000.0, "gateway_rps": 900.0, "ratio": 0.9, "bare_cpu_us": 200.0, "gateway_cpu_us": 250.0,
        "cpu_ratio": 0.8, "visits_stored": 10, "gateway_requests": 10, "gateway_peak_rss": 2**20,
        "json": {"path": "/api/attendance", "bare_rps": 2000.0, "gateway_rps": 1500.0, "ratio": 0.75},
    }
    collect = {
        "single": {"persisted_per_s": 9000.0, "lost": 0, "peak_rss": 2**20},
        "batch": {"persisted_per_s": 120000.0, "lost": 0, "peak_rss": 2**20},
        "floor_durable_batch": {"acked_per_s": 150000.0},
        "batch_of_floor": 0.8,
    }
    text = bench.table({"pages": pages, "collect": collect})
    assert "2000 / 1500 req/s" in text and "**0.750**" in text and "/api/attendance" in text
    assert "150000 events/s" in text and "| **0.800** " in text


def test_table_shows_the_breakdown_for_pages_and_for_json_requests_when_measured() -> None:
    def figures(cpu: float, share: float, unit: str) -> dict[str, float]:
        return {f"cpu_us_per_{unit}": cpu, "rate_of_bare": share}

    variants = {
        "bare demo": figures(100.0, 1.0, "page") | {"json": figures(80.0, 1.0, "request")},
        "gateway": figures(130.0, 0.8, "page") | {"json": figures(95.0, 0.85, "request")},
    }
    text = bench.table({"breakdown": {"variants": variants}})
    assert "server CPU a page: gateway" in text and "130 µs (+30 µs); 0.800 of the bare rate" in text
    assert "server CPU a light JSON request: gateway" in text and "95 µs (+15 µs); 0.850 of the bare rate" in text
    # A result from before the JSON endpoint was part of the breakdown renders its page rows alone.
    old = {label: {k: v for k, v in f.items() if k != "json"} for label, f in variants.items()}
    text = bench.table({"breakdown": {"variants": old}})
    assert "server CPU a page: gateway" in text and "JSON request" not in text


def test_lua_strings_survive_any_closing_bracket() -> None:
    assert loadgen.lua_string('{"a": 1}') == '[===[{"a": 1}]===]'
    quoted = loadgen.lua_string("x]===]y")
    assert quoted.startswith("[====[") and quoted.endswith("]====]") and "x]===]y" in quoted


def test_fixed_rate_sends_the_scheduled_requests_and_the_python_closed_loop_measures(tmp_path: Path) -> None:
    with Server("gateway", tmp_path / "gw") as server:
        headers = {"Cookie": f"cg_consent={consent_cookie(server.port)}"}
        fixed = loadgen.fixed_rate(server.port, "GET", "/privacy", headers, b"", rate=40, seconds=0.5, connections=4)
        closed = loadgen.throughput(server.port, "GET", "/privacy", headers, b"", connections=2, seconds=0.5,
                                    use_wrk=False)
    assert fixed.statuses == {200: 20} and fixed.errors == 0
    assert len(fixed.latencies) == 20 and fixed.p50_ms <= fixed.p99_ms
    assert closed.requests > 0 and set(closed.statuses) == {200} and closed.rps > 0
    assert closed.generator == "python" and closed.bad_status == 0


def test_percentile_is_nearest_rank() -> None:
    latencies = [i / 1000 for i in range(1, 101)]
    assert loadgen.percentile(latencies, 50) == pytest.approx(50.0)
    assert loadgen.percentile(latencies, 99) == pytest.approx(99.0)
    assert math.isnan(loadgen.percentile([], 50))


def test_ledger_ids_are_unique_and_safe_from_phone_redaction() -> None:
    ledger = zero_loss.Ledger("run-test")
    ids = [ledger.new_id() for _ in range(5000)]
    assert len(set(ids)) == 5000
    assert all(i.isalpha() and i.islower() for i in ids)
    events = [{"props": {"eid": i}} for i in ids[:3]]
    assert ledger.record(events, 202, expected_drop={1}) == [ids[0], ids[2]]
    assert ledger.record(events, 503, expected_drop=set()) == []
    ledger.erased([ids[0]])
    summary = ledger.summary()
    assert summary["sent"] == 6 and summary["acknowledged"] == 3 and summary["refused_503"] == 3
    assert summary["dropped_by_policy"] == 1 and summary["ids"] == [ids[2]] and summary["expected_stored"] == 1


def test_zero_loss_check_names_missing_duplicated_and_wrongly_kept_events() -> None:
    ledger = {"sent": 5, "acknowledged": 5, "dropped_by_policy": 0, "refused_503": 0, "failed": 0,
              "ids": ["a", "b", "c"], "erased_ids": ["e"]}
    ok = zero_loss.check(ledger, ["a", "b", "c"])
    assert ok["zero_loss"] and ok["missing"] == 0 and ok["stored"] == 3
    lost = zero_loss.check(ledger, ["a", "b", "b", "e", "z"])
    assert not lost["zero_loss"]
    assert lost["missing_examples"] == ["c"] and lost["duplicates"] == 1
    assert lost["erased_but_stored"] == 1 and lost["stored_not_acknowledged"] == 1


def test_zero_loss_short_locust_run_finds_every_acknowledged_event(tmp_path: Path, capsys: Any) -> None:
    code = zero_loss.main(["--users", "6", "--rate", "2", "--run-time", "6s", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "zero-loss.json").read_text())
    check = result["check"]
    failures = (tmp_path / "zero-loss_failures.csv").read_text()
    assert code == 0, out + failures
    assert check["zero_loss"] and check["missing"] == 0 and check["duplicates"] == 0
    assert check["acknowledged"] > 0 and check["stored"] == check["expected_stored"] > 0
    assert check["sent"] == check["acknowledged"] + check["refused_503"] + check["failed"]
    stats = result["locust"]["stats"]
    assert stats["requests"] > 0 and stats["failures"] == 0, failures
    assert any(name.endswith("/_consent/collect spa event") or name.endswith("spa batch") for name in stats["by_name"])
    assert (tmp_path / "zero-loss_stats.csv").exists() and (tmp_path / "zero-loss.html").stat().st_size > 0
    assert "zero loss: yes" in out


def test_thread_breakdown_reads_every_threads_cpu(tmp_path: Path, capsys: Any) -> None:
    from loadtests import threads

    out = tmp_path / "threads.json"
    assert threads.main(["--mode", "single", "--rounds", "1", "--seconds", "1", "--set", "flush_interval=0.5",
                         "--compare", "commit_window=0.002", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["rounds"]) == {"gateway", "gateway commit_window=0.002"}, "the app as it is and with the setting"
    (run,) = result["rounds"]["gateway"]
    assert run["requests"] > 0 and run["rps"] > 0
    assert set(run["cpu_us"]) == set(threads.GROUPS)
    assert run["cpu_us"]["main"]["user"] > 0, "the event loop ran every request"
    assert run["total_us"] == pytest.approx(sum(v["user"] + v["system"] for v in run["cpu_us"].values()))
    waits, preempted = run["loop_switches_per_1000"]
    assert waits >= 0 and preempted >= 0
    assert result["settings"] == ["flush_interval=0.5"]
    assert "gateway: median" in capsys.readouterr().out
    for flag in ("--set", "--compare"):
        with pytest.raises(SystemExit):
            threads.parse_args([flag, "no-equals-sign"])


def test_a_server_that_exits_at_start_is_reported_with_what_it_printed(tmp_path: Path) -> None:
    code = "import sys; print('startup failed: the engine would not open'); sys.exit(3)"
    server = ServerProcess([sys.executable, "-c", code], port=free_port(), log_path=tmp_path / "server.log")
    with pytest.raises(RuntimeError) as raised:
        server.start(timeout=30)
    message = str(raised.value)
    assert "exited with 3" in message and "startup failed: the engine would not open" in message


def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(tmp_path: Path) -> None:
    server = Server("bare", tmp_path / "bare")
    taken = server.port
    with socket.socket() as squatter:  # a socket of this machine took the port after free_port()
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with server:
            assert server.port != taken
            assert request(server.port, "GET", "/privacy")[0] == 200
    assert "address already in use" in server.output()
    fixed = Server("bare", tmp_path / "fixed", port=free_port())
    with socket.socket() as squatter:  # a port the caller chose is not changed behind its back
        squatter.bind(("127.0.0.1", fixed.port))
        squatter.listen()
        with pytest.raises(RuntimeError, match="address already in use"):
            fixed.start(timeout=60)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_loop_switches_count_a_wait_of_the_main_thread() -> None:
    from loadtests import threads

    before = threads.loop_switches(os.getpid())
    for _ in range(5):
        time.sleep(0.002)  # each sleep gives the CPU up: a voluntary switch
    after = threads.loop_switches(os.getpid())
    assert after[0] - before[0] >= 5
    assert after[1] >= before[1]


@pytest.mark.skipif(default_loop_cpu() is None, reason="needs two CPUs and CPU affinity (Linux)")
def test_pinning_moves_the_event_loop_alone(tmp_path: Path) -> None:
    from loadtests import threads

    cpu = default_loop_cpu()
    for command in (bench, threads):
        assert command.parse_args([]).loop_cpu == cpu
        assert command.parse_args(["--loop-cpu", "-1"]).loop_cpu is None
        with pytest.raises(SystemExit):  # a CPU this process may not use is a usage error
            command.parse_args(["--loop-cpu", "4096"])

    def affinities(pid: int) -> dict[int, set[int]]:
        out = {}
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out[int(task.name)] = os.sched_getaffinity(int(task.name))
            except ProcessLookupError:  # the thread ended meanwhile (the engine's pools come and go)
                pass
        return out

    with Server("gateway", tmp_path / "gateway") as server:
        assert server.pid is not None
        before = affinities(server.pid)
        server.pin_event_loop(cpu)
        after = affinities(server.pid)
        server.pin_event_loop(None)  # None changes nothing
        assert os.sched_getaffinity(server.pid) == {cpu}
    assert after.pop(server.pid) == {cpu} and before.pop(server.pid) == os.sched_getaffinity(0)
    # The writer, the inserter and the embedded engine's threads keep what they had (some of the
    # engine's pools place their threads themselves).
    both = before.keys() & after.keys()  # threads started in between inherit the pin; leave them out
    assert len(both) > 3 and {tid: after[tid] for tid in both} == {tid: before[tid] for tid in both}


def test_durable_floor_answers_only_after_its_file_holds_the_body(tmp_path: Path) -> None:
    bodies = [b'{"name":"a"}', b'{"name":"b"}', b'{"name":"c"}']
    with Server("loadtests.floor:durable", tmp_path / "floor") as server:
        for body in bodies:
            status, _, answer = request(server.port, "POST", "/_consent/collect", body)
            assert (status, answer) == (202, b"{}")
            # Acknowledged means written: the file already holds this body when the answer comes.
            assert floor.journaled_bodies(server.data_dir) == bodies.index(body) + 1
        assert request(server.port, "GET", "/")[0] == 200
    assert (tmp_path / "floor" / floor.JOURNAL_NAME).read_bytes() == b"".join(b + b"\n" for b in bodies)
    assert floor.journaled_bodies(tmp_path / "nowhere") == 0


def test_the_middleware_anchors_answer_the_bare_page_and_the_session_one_verifies_its_cookie() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from loadtests import apps
    from loadtests.servers import BASELINES, page_headers

    headers = page_headers(apps.session_cookie())
    pages = {}
    for name in BASELINES:
        with TestClient(getattr(apps, name)()) as client:
            pages[name] = client.get("/", headers=headers)
    assert {r.status_code for r in pages.values()} == {200}
    assert pages["passthrough"].content == pages["session"].content == pages["bare"].content
    assert not any("set-cookie" in r.headers for r in pages.values())

    # The session anchor reads the cookie the load sends as a verified session, and a forged one as none.
    async def shown(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.session))

    with TestClient(apps.session_anchor(Starlette(routes=[Route("/", shown)]))) as client:
        assert client.get("/", headers=headers).json() == {"consent": "analytics,marketing"}
        valid = apps.session_cookie()
        forged = ("f" if valid[0] != "f" else "g") + valid[1:]  # the signed session changed, not its signature
        assert client.get("/", headers=page_headers(forged)).json() == {}
    assert not any(Server(app, Path("/nonexistent")).gateway for app in BASELINES)
    assert Server("gateway", Path("/nonexistent")).gateway
