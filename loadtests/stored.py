"""Count stored events by run id in a stopped server's embedded ClickHouse.

chdb allows one data path per process, so each count runs in its own process::

    python -m loadtests.stored DATA_DIR [RUN_ID ...]   # prints {"RUN_ID": count, ..., "_visits": count}
    python -m loadtests.stored DATA_DIR --ids RUN_ID    # prints {"ids": [props.eid of each stored event]}

Events are tagged with ``props.run`` (``run_id``); visit records are counted in all (``_visits``).
"""

from __future__ import annotations

import json
import secrets
import string
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .servers import ROOT

if TYPE_CHECKING:
    from consent_gateway.store import Store

VISITS = "_visits"  # the key under which the number of stored visit records is reported


def run_id(label: str) -> str:
    """A run tag with few digits, so the pseudonymiser's phone-number redaction never touches it."""
    return f"{label}-" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(10))


def _events(data_dir: Path) -> tuple[Store, str]:
    """The store of the server on ``data_dir``, opened in this process (it must hold no other chdb
    path), and its events table, quoted by the store from a configured database."""
    from consent_gateway.store import open_store

    from .apps import load_settings

    settings = load_settings(data_dir)
    store = open_store(settings.clickhouse_dsn, settings.database)
    return store, store.table("events")


def count_runs(data_dir: Path, run_ids: list[str]) -> dict[str, int]:
    """Stored events per run id, and visit records in all; values are query parameters."""
    store, events = _events(data_dir)
    by_run = f"SELECT JSONExtractString(props, 'run') AS run, count() FROM {events} WHERE kind = 'event' "  # noqa: S608
    rows = store.query_rows(by_run + "AND run IN {runs:Array(String)} GROUP BY run", {"runs": run_ids})
    found = {str(run): int(n) for run, n in rows}
    visits = f"SELECT count() FROM {events} WHERE kind = 'visit'"  # noqa: S608
    return {**{run: found.get(run, 0) for run in run_ids}, VISITS: int(store.query_rows(visits)[0][0])}


def event_ids(data_dir: Path, run: str) -> list[str]:
    """``props.eid`` of every stored event of ``run``, duplicates included."""
    store, events = _events(data_dir)
    sql = f"SELECT JSONExtractString(props, 'eid') FROM {events} WHERE kind = 'event' "  # noqa: S608
    rows = store.query_rows(sql + "AND JSONExtractString(props, 'run') = {run:String}", {"run": run})
    return [str(r[0]) for r in rows]


def ids_in_subprocess(data_dir: Path, run: str, timeout: float = 120.0) -> list[str]:
    """``event_ids`` in a fresh process."""
    out = _run([str(data_dir), "--ids", run], timeout)
    return [str(i) for i in out["ids"]]


def count_in_subprocess(data_dir: Path, run_ids: list[str], timeout: float = 120.0) -> dict[str, int]:
    """``count_runs`` in a fresh process, so the caller never opens a chdb path itself."""
    return {k: int(v) for k, v in _run([str(data_dir), *run_ids], timeout).items()}


def _run(args: list[str], timeout: float) -> dict[str, Any]:
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "loadtests.stored", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reading the events in {args[0]} failed: {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m loadtests.stored DATA_DIR [RUN_ID ...]", file=sys.stderr)
        return 2
    if len(args) == 3 and args[1] == "--ids":
        print(json.dumps({"ids": event_ids(Path(args[0]), args[2])}))
        return 0
    print(json.dumps(count_runs(Path(args[0]), args[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
