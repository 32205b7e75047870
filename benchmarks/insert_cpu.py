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
from consent_gateway.store import EVENT_COLUMNS, migrate, open_store

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40_000, help="rows an insert (default 40,000)")
    parser.add_argument("--inserts", type=int, default=3, help="inserts a mode in each round (default 3)")
    parser.add_argument("--rounds", type=int, default=4, help="alternated rounds (default 4)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cg-insert-cpu-") as tmp:
        settings = Settings(data_dir=Path(tmp), pseudonym_key="insert-cpu-benchmark-key-0123456789")
        rows = RowBuilder(settings, SaltStore(Path(tmp) / "salts"))
        store = open_store(f"chdb://{tmp}/engine", "insert_cpu")
        migrate(store)
        lines = lines_of(rows, args.rows)
        names = [name for name, _ in EVENT_COLUMNS]
        types = [kind for _, kind in EVENT_COLUMNS]
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
                    store.insert_lines("events", lines, names, settings=settings,
                                       column_types=types if mode == "converting" else None)
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
