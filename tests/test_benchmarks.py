"""The benchmark scripts run and report; nothing here looks at their timings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_insert_cpu_benchmark_alternates_both_inserts_and_stores_every_row() -> None:
    # Its own process: the benchmark opens an embedded engine of its own, one per process.
    script = str(ROOT / "benchmarks" / "insert_cpu.py")
    proc = subprocess.run(
        [sys.executable, script, "--rows", "120", "--rounds", "2", "--inserts", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rounds = re.findall(r"round (\d): plain [\d.]+ µs a row, converting [\d.]+ µs a row, ratio [\d.]+", proc.stdout)
    assert rounds == ["1", "2"], proc.stdout
    assert "480 rows stored of 480 inserted" in proc.stdout, proc.stdout


def test_insert_cpu_benchmark_splits_an_inserts_fixed_cost_from_a_rows() -> None:
    script = str(ROOT / "benchmarks" / "insert_cpu.py")
    proc = subprocess.run(
        [sys.executable, script, "--fixed", "--rows", "60", "--rounds", "2", "--inserts", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    tables = re.findall(
        r"^  (\w+): [\d.]+ ms CPU an insert of 10 rows, [\d.]+ ms of 60: -?[\d.]+ ms an insert \+ -?[\d.]+ µs a row "
        r"\(140 rows stored of 140\)$",
        proc.stdout,
        re.MULTILINE,
    )
    assert tables == ["events", "events_no_view"], proc.stdout
    refused = subprocess.run([sys.executable, script, "--fixed", "--rows", "5"], capture_output=True, text=True,
                             timeout=60, check=False)  # fmt: skip
    assert refused.returncode == 2 and "--fixed needs --rows over 10" in refused.stderr


def test_inject_benchmark_reports_bare_and_wrapped_for_both_pages() -> None:
    script = str(ROOT / "benchmarks" / "inject_bench.py")
    proc = subprocess.run(
        [sys.executable, script, "--rounds", "1", "--pages", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    medians = re.findall(r"^(\w+): median ratio wrapped/bare [\d.]+ over 1 rounds$", proc.stdout, re.MULTILINE)
    assert medians == ["gzip", "stream"], proc.stdout


def test_analytics_benchmark_reports_every_endpoint_with_its_first_answer(tmp_path: Path) -> None:
    script = str(ROOT / "benchmarks" / "analytics_bench.py")
    proc = subprocess.run(
        [sys.executable, script, "--events", "40000", "--repeat", "2", "--days", "5", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = re.findall(r"^(\S.*?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+)$", proc.stdout, re.MULTILINE)
    labels = [r[0].strip() for r in rows]
    assert labels[0] == "baseline: SELECT count()" and "breakdown page" in labels and "funnel 3 steps" in labels
    assert len(labels) == 14, proc.stdout
    assert "40,000 events over 5 days" in proc.stdout, proc.stdout


def test_collect_steps_counts_a_request_that_was_answered_202() -> None:
    # Its own process: the gateway opens an embedded engine of its own, one per process.
    script = str(ROOT / "benchmarks" / "collect_steps.py")
    proc = subprocess.run(
        [sys.executable, script, "--events", "3", "--requests", "5", "--top", "4"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    head = re.match(r"Python steps a /collect request of 3 event\(s\): ([\d,]+), of them in consent_gateway ([\d,]+);",
                    proc.stdout)  # fmt: skip
    assert head is not None, proc.stdout
    total, own = (int(value.replace(",", "")) for value in head.groups())
    assert 0 < own <= total
    listed = re.findall(r"^ +[\d,.]+  (\S+:\d+:\w+)$", proc.stdout, re.MULTILINE)
    assert len(listed) == 4 and any("_collect" in where for where in listed), proc.stdout
