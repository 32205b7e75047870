"""Benchmark of the durable pipeline: events persisted per second through ``/_consent/collect``.

    .venv/bin/python benchmarks/pipeline_bench.py                # about a minute
    .venv/bin/python benchmarks/pipeline_bench.py --seconds 2    # a quick run

For single-event and 50-event requests it runs the gateway in this process on the embedded
ClickHouse (one fresh database per run), drives it through httpx's ASGI transport with
``--concurrency`` clients for ``--seconds``, then flushes and counts the rows in ClickHouse:
"persisted/s" = rows in ClickHouse / (load time + flush time).

Two modes, measured alternately in the same run, each ``--rounds`` times (median reported):

- ``journal``: 202 after the group commit (write + fsync) of the local journal; inserts are
  batched by the writer (``flush_interval``, ``batch_size``);
- ``no journal``: 202 only after the rows are in ClickHouse (the durable alternative without a
  journal: every group commit becomes an insert).

The journal's cost is printed as the ratio journal / no journal (above 1: the journal is faster).
Peak RSS is this process's maximum resident set size. Nothing here asserts: it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from starlette.applications import Starlette

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consent_gateway import ConsentGateway, Settings
from consent_gateway.store import open_store

SECRET = "bench-secret-key-0123456789abcdefghijklmn"  # noqa: S105 - a throwaway benchmark key
PSEUDONYM_KEY = "bench-pseudonym-key-0123456789abcdefghij"


async def _run(
    chdb_url: str, data: Path, *, journal: bool, size: int, seconds: float, concurrency: int
) -> dict[str, float]:
    database = f"bench_{uuid.uuid4().hex[:10]}"
    settings = Settings(
        site_id="bench",
        data_dir=data / database,
        clickhouse_url=chdb_url,
        database=database,
        secret_keys=(SECRET,),
        pseudonym_key=PSEUDONYM_KEY,
        cookie_secure=False,
        journal_enabled=journal,
        flush_interval=0.5,
        batch_size=10_000,
        queue_max=200_000,
    )
    gateway = ConsentGateway(Starlette(), settings)
    runtime = gateway.runtime
    await runtime.start()
    body = [{"name": "pageview", "url": f"/bench/{i}", "props": {"i": i}} for i in range(size)]
    acked = 0
    refused = 0
    started = time.perf_counter()
    stop_at = started + seconds

    async def client_loop() -> None:
        nonlocal acked, refused
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench.test") as client:
            while time.perf_counter() < stop_at:
                r = await client.post("/_consent/collect", json=body, headers={"origin": "http://bench.test"})
                if r.status_code == 202:
                    acked += size
                else:
                    refused += size

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    load_done = time.perf_counter()
    flushed = await runtime.pipeline.flush(300.0)
    elapsed = time.perf_counter() - started
    await runtime.stop()
    store = open_store(chdb_url, database)
    stored = int(store.query_rows(f"SELECT count() FROM {store.table('events')}")[0][0])  # noqa: S608
    store.command(f"DROP DATABASE IF EXISTS `{database}`")
    return {
        "acked": acked,
        "refused": refused,
        "stored": stored,
        "flushed": float(flushed),
        "load_s": load_done - started,
        "persisted_per_s": stored / elapsed,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cg-pipeline-bench-"))
    chdb_url = f"chdb://{work / 'clickhouse'}"
    results: dict[tuple[bool, int], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for size in (1, 50):
            for journal in (True, False):
                r = await _run(
                    chdb_url, work, journal=journal, size=size, seconds=args.seconds, concurrency=args.concurrency
                )
                results.setdefault((journal, size), []).append(r)
                if r["stored"] != r["acked"]:
                    print(f"!! journal={journal} size={size}: acked {r['acked']} but stored {r['stored']}")
    print(
        f"pipeline benchmark: {args.rounds} rounds x {args.seconds:g}s, {args.concurrency} concurrent clients, "
        "embedded ClickHouse, in-process ASGI"
    )
    print()
    print("| request | mode | persisted events/s (median) | acked | stored | 503s |")
    print("|---|---|---:|---:|---:|---:|")
    for size in (1, 50):
        for journal in (True, False):
            runs = results[(journal, size)]
            med = statistics.median(r["persisted_per_s"] for r in runs)
            print(
                f"| {size} event{'s' if size > 1 else ''} | {'journal' if journal else 'no journal'} | {med:,.0f} | "
                f"{int(sum(r['acked'] for r in runs))} | {int(sum(r['stored'] for r in runs))} | "
                f"{int(sum(r['refused'] for r in runs))} |"
            )
    print()
    for size in (1, 50):
        j = statistics.median(r["persisted_per_s"] for r in results[(True, size)])
        n = statistics.median(r["persisted_per_s"] for r in results[(False, size)])
        print(f"journal / no journal, {size}-event requests: {j / n:.2f}x")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {peak_kib / 1024:.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
