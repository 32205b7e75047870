"""A fixed-length locust run at a fixed rate, then proof that every acknowledged event is in ClickHouse.

    .venv/bin/python -m loadtests.zero_loss                       # 30 users x 2 tasks/s for 60 s
    .venv/bin/python -m loadtests.zero_loss --users 10 --run-time 10s

It serves what ``consent-gateway demo`` serves (gateway + analytics API) with uvicorn on its own
data directory, makes an analytics token for the marketing user, runs ``loadtests/locustfile.py``
headless (CSV stats and an HTML report in ``--out``), stops the server (which flushes its
pipeline), and looks up every event id in the server's embedded ClickHouse. It prints sent vs
acknowledged vs stored and exits 1 if any event answered with 202 (and not dropped by the policy)
is missing, or stored twice.

``Ledger`` is what the locust process (``loadtests/locustfile.py``) sent and what was acknowledged;
this module imports nothing of locust, whose gevent monkey-patching must not run in other processes,
nor of the gateway at import time, so the locustfile can import it.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import string
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from .servers import ROOT, Server
from .stored import ids_in_subprocess, run_id

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


class Ledger:
    """What this locust process sent to ``/collect`` and what the gateway acknowledged (thread-safe)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self.sent = 0
        self.acknowledged = 0  # in 202 answers ("accepted")
        self.dropped = 0  # acknowledged, but dropped by the policy (marketing without consent)
        self.refused = 0  # in 503 answers: the client retries later, nothing was stored
        self.failed = 0  # other answers or no answer
        self.stored_ids: list[str] = []  # acknowledged and kept or pseudonymised: must be in ClickHouse
        self.erased_ids: set[str] = set()  # identified events of visitors who withdrew: erased on purpose

    def new_id(self) -> str:
        # Letters only: the pseudonymiser redacts strings with 9 or more digits.
        n = next(self._ids)
        out = ""
        while True:
            n, r = divmod(n, 26)
            out = string.ascii_lowercase[r] + out
            if not n:
                return out

    def record(self, events: list[dict[str, Any]], status: int, expected_drop: set[int]) -> list[str]:
        """Account for one ``/collect`` answer; the ids that must now be stored."""
        with self._lock:
            self.sent += len(events)
            if status == 202:
                self.acknowledged += len(events)
                self.dropped += len(expected_drop)
                kept = [e["props"]["eid"] for i, e in enumerate(events) if i not in expected_drop]
                self.stored_ids += kept
                return kept
            if status == 503:
                self.refused += len(events)
            else:
                self.failed += len(events)
            return []

    def erased(self, ids: list[str]) -> None:
        """A withdrawal erased these identified events: they must be gone, not stored."""
        with self._lock:
            self.erased_ids.update(ids)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "run": self.run,
                "sent": self.sent,
                "acknowledged": self.acknowledged,
                "dropped_by_policy": self.dropped,
                "refused_503": self.refused,
                "failed": self.failed,
                "erased_by_withdrawal": len(self.erased_ids),
                "expected_stored": len(self.stored_ids) - len(self.erased_ids),
                "ids": [i for i in self.stored_ids if i not in self.erased_ids],
                "erased_ids": sorted(self.erased_ids),
            }


def run_locust(base: str, out: Path, *, users: int, rate: float, run_time: str, run: str,
               token: str | None) -> dict[str, Any]:
    """Run locust headless against ``base``; its ledger and aggregated stats."""
    out.mkdir(parents=True, exist_ok=True)
    ledger_path = out / "zero-loss-events.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CG_LOAD_RUN": run,
        "CG_LOAD_EVENTS_OUT": str(ledger_path),
        "CG_LOAD_TASK_RATE": str(rate),
        **({"CG_ANALYTICS_TOKEN": token} if token else {}),
    }
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", base,
        "-u", str(users), "-r", str(max(1, users)), "-t", run_time, "--stop-timeout", "15",
        "--csv", str(out / "zero-loss"), "--html", str(out / "zero-loss.html"), "--only-summary",
        "--loglevel", "WARNING",
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603
    (out / "zero-loss-locust.log").write_text(proc.stdout + proc.stderr)
    if not ledger_path.exists():
        raise RuntimeError(f"locust wrote no ledger (exit {proc.returncode}): {proc.stderr[-2000:]}")
    ledger = json.loads(ledger_path.read_text())
    stats = aggregated_stats(out / "zero-loss_stats.csv")
    return {"exit_code": proc.returncode, "ledger": ledger, "stats": stats, "output": proc.stdout + proc.stderr}


def aggregated_stats(path: Path) -> dict[str, Any]:
    """The 'Aggregated' row of locust's ``_stats.csv`` plus the per-request rows."""
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    by_name = {f"{r['Type']} {r['Name']}".strip(): r for r in rows}
    total = by_name.get("Aggregated") or rows[-1]

    def stats(row: dict[str, str]) -> dict[str, Any]:
        return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                "p50_ms": float(row["50%"] or 0), "p99_ms": float(row["99%"] or 0)}

    return stats(total) | {"rps": float(total["Requests/s"]),
                           "by_name": {name: stats(r) for name, r in by_name.items() if r is not total}}


def check(ledger: dict[str, Any], stored_ids: list[str]) -> dict[str, Any]:
    """Acknowledged-and-kept ids vs stored ids: missing ones are losses, repeated ones duplicates."""
    counts = Counter(stored_ids)
    expected = set(ledger["ids"])
    erased = set(ledger.get("erased_ids", []))
    missing = sorted(expected - set(counts))
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    return {
        "sent": ledger["sent"],
        "acknowledged": ledger["acknowledged"],
        "dropped_by_policy": ledger["dropped_by_policy"],
        "erased_by_withdrawal": len(erased),
        "erased_but_stored": len(erased & set(counts)),
        "refused_503": ledger["refused_503"],
        "failed": ledger["failed"],
        "expected_stored": len(expected),
        "stored": len(stored_ids),
        "missing": len(missing),
        "missing_examples": missing[:10],
        "duplicates": len(duplicates),
        "stored_not_acknowledged": len(set(counts) - expected - erased),
        "zero_loss": not missing and not duplicates,
    }


_REPORT = (
    ("sent to /_consent/collect", "sent"),
    ("acknowledged (202)", "acknowledged"),
    ("of which dropped by the policy (marketing without consent)", "dropped_by_policy"),
    ("of which erased by a withdrawal (identified rows)", "erased_by_withdrawal"),
    ("acknowledged and to be stored", "expected_stored"),
    ("stored in ClickHouse", "stored"),
    ("acknowledged but missing", "missing"),
    ("stored twice", "duplicates"),
    ("erased by a withdrawal but still stored", "erased_but_stored"),
    ("refused with 503 (not acknowledged)", "refused_503"),
    ("stored though the client saw no 202 (timeouts)", "stored_not_acknowledged"),
)


def report(result: dict[str, Any]) -> str:
    c = result["check"]
    s = result["locust"]["stats"]
    verdict = ("yes, every acknowledged event is stored exactly once" if c["zero_loss"] else
               f"NO: {c['missing']} missing, {c['duplicates']} duplicated (e.g. {c['missing_examples'][:3]})")
    return "\n".join([
        f"locust: {result['users']} users x {result['rate']} tasks/s for {result['run_time']}, "
        f"{s['requests']} requests ({s['rps']:.0f}/s), {s['failures']} failures, "
        f"p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms",
        "",
        "| events | count |",
        "|---|---|",
        *(f"| {label} | {c[key]} |" for label, key in _REPORT),
        "",
        f"zero loss: {verdict}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.zero_loss", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=30, help="locust users (default 30)")
    parser.add_argument("--rate", type=float, default=2.0, help="tasks per second per user (default 2)")
    parser.add_argument("--run-time", default="60s", help="locust run time (default 60s)")
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results", help="where reports go")
    parser.add_argument("--keep", action="store_true", help="keep the server's data directory")
    args = parser.parse_args(argv)

    from .apps import analytics_token  # the gateway, not loaded where the locustfile imports this module

    run = run_id("zl")
    work = Path(tempfile.mkdtemp(prefix="cg-zero-loss-"))
    data = work / "data"
    try:
        token = analytics_token(data)
        server = Server("demo", data)
        with server:
            locust = run_locust(server.base, args.out, users=args.users, rate=args.rate, run_time=args.run_time,
                                run=run, token=token)
        stored = ids_in_subprocess(data, run)
    finally:
        if args.keep:
            print(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "run": run,
        "users": args.users,
        "rate": args.rate,
        "run_time": args.run_time,
        "locust": {k: v for k, v in locust.items() if k != "output"} | {"ledger": None},
        "check": check(locust["ledger"], stored),
    }
    (args.out / "zero-loss.json").write_text(json.dumps(result, indent=2))
    print(report(result))
    print(f"\nwrote {args.out / 'zero-loss.json'}, {args.out / 'zero-loss.html'} and "
          f"{args.out / 'zero-loss_stats.csv'}")
    return 0 if result["check"]["zero_loss"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
