"""CPU the embedded ClickHouse spends a row on the writer's inserts: plain against converting.

    .venv/bin/python benchmarks/insert_cpu.py                # 4 alternated rounds of 3 inserts each
    .venv/bin/python benchmarks/insert_cpu.py --rows 10000 --rounds 2

The rows are the writer's own ``events`` lines (``RowBuilder.collected_lines`` of ``/collect``
batches like the load tests send), inserted into a fresh embedded engine in this process:

- ``plain``: ``INSERT … FORMAT JSONCompactEachRow``, parsed straight into the table's types;
- ``converting``: what the gateway does (``Store.insert_lines`` with ``column_types``):
  ``INSERT … SELECT`` from the lines read with ``LowCardinality(String)`` columns as ``String``.

The CPU is this process's (every thread: the engine runs inside it) per row, so rounds alternate
and the ratio of each round is printed, as the machine's speed moves between rounds. Nothing here
asserts: it reports.

    .venv/bin/python benchmarks/insert_cpu.py --fixed        # an insert's fixed cost and a row's

With ``--fixed`` the gateway's inserts (converting) of a few rows and of ``--rows`` rows alternate,
and the CPU of each size an insert gives, by a straight line through the two, what an insert costs
whatever its size and what each row adds: at ``flush_interval`` seconds between inserts, the first
is spread over the rows that arrived meanwhile. The same inserts go to a copy of ``events`` without
the daily rollup's materialized view too, for that view's share of both.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consent_gateway.pipeline.writer import INSERT_DEDUP_SETTINGS
from consent_gateway.pseudonymize import SaltStore
from consent_gateway.records import CollectedEvents, EventFields, Location, Visitor
from consent_gateway.rows import RowBuilder
from consent_gateway.settings import Settings
from consent_gateway.store import EVENT_COLUMNS, Store, migrate, open_store

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def lines_of(rows: RowBuilder, count: int) -> list[bytes]:
    """``count`` event lines as the writer encodes them: batches of 50 from 250 visitors."""
    granted = frozenset({"necessary", "analytics", "marketing"})
    props = '{"run":"insert-cpu","work":"sunset-hills"}'
    batches = []
    for i in range(0, count, 50):
        n = min(50, count - i)
        where = Location("127.0.0.1:8000", "/portfolio", "utm_source=newsletter&utm_campaign=spring",
                         "https://search.example/")
        event = EventFields("spa_view", "analytics", "keep", f"consent-{i % 250}", where, props)
        visitor = Visitor(BROWSER, f"10.0.{i % 250}.1", granted)
        batches.append(CollectedEvents(time.time(), "demo", visitor, [event] * n))
    return rows.collected_lines(batches)[0]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


FEW_ROWS = 10
NAMES = [name for name, _ in EVENT_COLUMNS]
TYPES = [kind for _, kind in EVENT_COLUMNS]  # the table's types: the gateway's converting insert


def fixed_and_per_row(store: Store, rows: RowBuilder, args: argparse.Namespace) -> None:
    """Print the CPU of an insert of FEW_ROWS and of ``args.rows`` rows, and the line through them."""
    store.command(f"CREATE TABLE IF NOT EXISTS {store.table('events_no_view')} AS {store.table('events')}")
    sizes = {FEW_ROWS: lines_of(rows, FEW_ROWS), args.rows: lines_of(rows, args.rows)}
    # (table, rows) -> CPU ms an insert, one value a round
    cost: dict[tuple[str, int], list[float]] = {(t, n): [] for t in ("events", "events_no_view") for n in sizes}
    print(f"{args.rounds} rounds of {args.inserts} inserts of {FEW_ROWS} and {args.rows:,} rows "
          "into events and into a copy without the rollup's view")
    for r in range(args.rounds):
        keys = list(cost) if r % 2 == 0 else list(cost)[::-1]
        for table, n in keys:
            started = cpu_seconds()
            for i in range(args.inserts):
                settings = {**INSERT_DEDUP_SETTINGS, "insert_deduplication_token": f"fixed-{table}-{n}-{r}-{i}"}
                store.insert_lines(table, sizes[n], NAMES, settings=settings, column_types=TYPES)
            cost[(table, n)].append((cpu_seconds() - started) / args.inserts * 1000)
    inserted = args.rounds * args.inserts * (FEW_ROWS + args.rows)
    for table in ("events", "events_no_view"):
        stored = store.query_rows(f"SELECT count() FROM {store.table(table)}")[0][0]  # noqa: S608
        few, many = (statistics.median(cost[(table, n)]) for n in (FEW_ROWS, args.rows))
        per_row = (many - few) / (args.rows - FEW_ROWS)
        fixed = few - per_row * FEW_ROWS
        print(f"  {table}: {few:.1f} ms CPU an insert of {FEW_ROWS} rows, {many:.1f} ms of {args.rows:,}: "
              f"{fixed:.1f} ms an insert + {per_row * 1000:.2f} µs a row ({stored:,} rows stored of {inserted:,})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40_000, help="rows an insert (default 40,000)")
    parser.add_argument("--inserts", type=int, default=3, help="inserts a mode in each round (default 3)")
    parser.add_argument("--rounds", type=int, default=4, help="alternated rounds (default 4)")
    parser.add_argument("--fixed", action="store_true", help="an insert's fixed CPU and a row's, see above")
    args = parser.parse_args(argv)
    if args.fixed and args.rows <= FEW_ROWS:
        parser.error(f"--fixed needs --rows over {FEW_ROWS}")
    # The engine's background merges may still be writing parts as the directory goes.
    with tempfile.TemporaryDirectory(prefix="cg-insert-cpu-", ignore_cleanup_errors=True) as tmp:
        settings = Settings(data_dir=Path(tmp), pseudonym_key="insert-cpu-benchmark-key-0123456789")
        rows = RowBuilder(settings, SaltStore(Path(tmp) / "salts"))
        store = open_store(f"chdb://{tmp}/engine", "insert_cpu")
        migrate(store)
        if args.fixed:
            fixed_and_per_row(store, rows, args)
            store.close()
            return 0
        lines = lines_of(rows, args.rows)
        per_row: dict[str, list[float]] = {"plain": [], "converting": []}
        print(f"{args.rounds} rounds of {args.inserts} inserts of {args.rows:,} event rows a mode "
              f"({len(b''.join(lines)) / len(lines):.0f} bytes a line)")
        for r in range(args.rounds):
            order = ("plain", "converting") if r % 2 == 0 else ("converting", "plain")
            for mode in order:
                started = cpu_seconds()
                for i in range(args.inserts):
                    # As the writer inserts: a token of its own (the same lines again would otherwise
                    # be dropped as a repeat) and the rollup's deduplication.
                    settings = {**INSERT_DEDUP_SETTINGS, "insert_deduplication_token": f"{mode}-{r}-{i}"}
                    store.insert_lines("events", lines, NAMES, settings=settings,
                                       column_types=TYPES if mode == "converting" else None)
                per_row[mode].append((cpu_seconds() - started) / (args.inserts * args.rows) * 1e6)
            print(f"  round {r + 1}: plain {per_row['plain'][-1]:.2f} µs a row, "
                  f"converting {per_row['converting'][-1]:.2f} µs a row, "
                  f"ratio {per_row['converting'][-1] / per_row['plain'][-1]:.2f}", flush=True)
        stored = store.query_rows(f"SELECT count() FROM {store.table('events')}")[0][0]  # noqa: S608
        store.close()
    ratios = [c / p for p, c in zip(per_row["plain"], per_row["converting"], strict=True)]
    print(f"converting / plain CPU a row: median {statistics.median(ratios):.2f} "
          f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}); {stored:,} rows stored of "
          f"{2 * args.rounds * args.inserts * args.rows:,} inserted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
