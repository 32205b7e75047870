"""A fixed-length locust run at a fixed rate, then proof that every acknowledged event is in ClickHouse.

    .venv/bin/python -m loadtests.zero_loss                       # 30 users x 2 tasks/s for 60 s
    .venv/bin/python -m loadtests.zero_loss --users 10 --run-time 10s

It serves what ``consent-gateway demo`` serves (gateway + analytics API) with uvicorn on its own
data directory, makes an analytics token for the marketing user, runs ``loadtests/locustfile.py``
headless (CSV stats and an HTML report in ``--out``), stops the server (which flushes its
pipeline), and looks up every event id in the server's embedded ClickHouse. It prints sent vs
acknowledged vs stored and exits 1 if any event answered with 202 (and not dropped by the policy)
is missing, or stored twice.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from .apps import analytics_token
from .servers import ROOT, Server
from .stored import ids_in_subprocess

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


def run_locust(base: str, out: Path, *, users: int, rate: float, run_time: str, run: str,
               token: str | None, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
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
        **(extra_env or {}),
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
    total = by_name.get("Aggregated") or by_name.get(" Aggregated") or rows[-1]
    return {
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "rps": float(total["Requests/s"]),
        "p50_ms": float(total["50%"] or 0),
        "p99_ms": float(total["99%"] or 0),
        "by_name": {
            name: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                   "p50_ms": float(r["50%"] or 0), "p99_ms": float(r["99%"] or 0)}
            for name, r in by_name.items() if r is not total
        },
    }


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


def report(result: dict[str, Any]) -> str:
    c = result["check"]
    s = result["locust"]["stats"]
    lines = [
        f"locust: {result['users']} users x {result['rate']} tasks/s for {result['run_time']}, "
        f"{s['requests']} requests ({s['rps']:.0f}/s), {s['failures']} failures, "
        f"p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms",
        "",
        "| events | count |",
        "|---|---|",
        f"| sent to /_consent/collect | {c['sent']} |",
        f"| acknowledged (202) | {c['acknowledged']} |",
        f"| of which dropped by the policy (marketing without consent) | {c['dropped_by_policy']} |",
        f"| of which erased by a withdrawal (identified rows) | {c['erased_by_withdrawal']} |",
        f"| acknowledged and to be stored | {c['expected_stored']} |",
        f"| stored in ClickHouse | {c['stored']} |",
        f"| acknowledged but missing | {c['missing']} |",
        f"| stored twice | {c['duplicates']} |",
        f"| erased by a withdrawal but still stored | {c['erased_but_stored']} |",
        f"| refused with 503 (not acknowledged) | {c['refused_503']} |",
        f"| stored though the client saw no 202 (timeouts) | {c['stored_not_acknowledged']} |",
        "",
        "zero loss: " + ("yes, every acknowledged event is stored exactly once" if c["zero_loss"]
                         else f"NO: {c['missing']} missing, {c['duplicates']} duplicated "
                              f"(e.g. {c['missing_examples'][:3]})"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.zero_loss", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=30, help="locust users (default 30)")
    parser.add_argument("--rate", type=float, default=2.0, help="tasks per second per user (default 2)")
    parser.add_argument("--run-time", default="60s", help="locust run time (default 60s)")
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results", help="where reports go")
    parser.add_argument("--keep", action="store_true", help="keep the server's data directory")
    args = parser.parse_args(argv)

    run = "zl-" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(10))
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
