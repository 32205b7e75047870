# ruff: noqa: S608 - generated SQL over table names the script builds itself; no outside input.
"""Latency of each analytics endpoint over N generated events on the embedded engine.

    .venv/bin/python benchmarks/analytics_bench.py --events 10000000 --repeat 15

The events are generated inside ClickHouse (``INSERT ... SELECT ... FROM numbers(N)``) over
``--days`` days up to now (90 by default, the raw retention; today's share so far is made live,
as on a running site): N/40 people who each come on up to 4 days with several hits per sitting;
60 % consented (40 % of those to marketing), the rest pseudonymised with a key per day; page views, asset
requests and events; campaigns, referrers, devices. The visits of the closed days are then built
(``store/visits.py``; ``--no-build`` leaves them out, so every visit is made from the hits at
query time, as on a database the builder has not reached yet), and today's as the gateway's
10-minute round leaves them at worst: built 10 minutes before the last hit, so the keys of the
last 40 minutes are open and made live on every read. Every request goes
through the ASGI app (token check, validation, JSON), and the report prints p50/p95 per endpoint
and the ratio to a baseline measured in the same run: ``SELECT count()`` over the same range.
Each endpoint's first answer is timed apart ("first ms"): the merged sums and funnel levels of
ranges (``visit_range_sums``, ``visit_range_funnels``) are cleared before the run, so it merges the
closed days it reads, as the first answer of the day for a range does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from starlette.testclient import TestClient  # noqa: E402

from consent_gateway import Settings, create_analytics_app  # noqa: E402
from consent_gateway.analytics import TokenStore  # noqa: E402
from consent_gateway.store import EVENT_COLUMNS, Store, migrate, open_store  # noqa: E402
from consent_gateway.store.schema import RANGE_FUNNELS_TABLE, RANGE_SUMS_TABLE  # noqa: E402
from consent_gateway.store.visits import (  # noqa: E402
    VISIT_BUILD_INTERVAL,
    build_closed_days,
    build_open_days,
    describe,
)

DAYS = 90
EVENTS_PER_PERSON = 40  # about 10 hits on each of about 4 days

GENERATE = """
INSERT INTO {table} ({columns})
SELECT
    generateUUIDv4(number) AS event_id,
    toDateTime64(if(dday = 0,
                    -- today: sittings spread over the hours so far
                    least(now(), toStartOfDay(now())
                        -- a share of the hours so far, not a remainder: stable while now() moves on
                        + toIntervalSecond(toUInt32(cityHash64(person, 0) % 1000 / 1000
                                                    * greatest(0, toInt64(now() - toStartOfDay(now())) - 1200)))
                        + toIntervalSecond(cityHash64(number, 12) % 1200)),
                    toStartOfDay(now()) - toIntervalDay(dday) + toIntervalSecond(cityHash64(person, dday) % 82800)
                        + toIntervalSecond(cityHash64(number, 12) % 1200)), 3, 'UTC') AS ts,
    'bench' AS site,
    if(number % 10 = 0, 'event', 'visit') AS kind,
    if(kind = 'event', ['signup', 'download', 'cta_click'][1 + number % 3],
       if(number % 7 = 0, 'request', 'pageview')) AS name,
    if(name = 'signup', 'marketing', 'analytics') AS category,
    toUInt8(person % 10 < 6) AS identified,
    if(identified = 1, cityHash64(person), cityHash64(person, toDate(ts))) AS visitor,
    if(identified = 1, if(person % 5 < 2, ['analytics', 'marketing', 'necessary'], ['analytics', 'necessary']),
       []) AS granted,
    if(name = 'request', '/static/app.js',
       ['/', '/pricing', '/signup', '/blog', '/courses', '/about'][1 + cityHash64(number, 1) % 6]
       || if(cityHash64(number, 2) % 3 = 0, '/' || toString(cityHash64(number, 3) % 300), '')) AS path,
    200 AS status,
    toUInt32(cityHash64(number, 4) % 800) AS duration_ms,
    ['', '', 'search.example', 'social.example', 'news.example'][1 + cityHash64(number, 5) % 5] AS referrer_host,
    ['', '', 'newsletter', 'ads', 'partner'][1 + cityHash64(person, 6) % 5] AS utm_source,
    ['', '', 'email', 'cpc', 'referral'][1 + cityHash64(person, 6) % 5] AS utm_medium,
    ['', 'spring', 'summer', 'autumn', 'winter-' || toString(person % 40)][1 + cityHash64(person, 7) % 5]
        AS utm_campaign,
    '' AS utm_term,
    '' AS utm_content,
    if(has(granted, 'marketing') AND person % 7 = 0, 'gclid-' || toString(person), '') AS click_id,
    '203.0.113.0/24' AS ip_prefix,
    ['Chrome', 'Safari', 'Firefox', 'Edge', 'Samsung Internet'][1 + cityHash64(person, 8) % 5] AS browser,
    '120' AS browser_version,
    ['Android', 'iOS', 'Windows', 'Mac OS X', 'Linux'][1 + cityHash64(person, 9) % 5] AS os,
    ['mobile', 'desktop', 'tablet'][1 + cityHash64(person, 10) % 3] AS device,
    toUInt8(number % 97 = 0) AS is_bot,
    '' AS props
FROM (
    SELECT number, intHash64(number) % {people} AS person,
           -- each person comes on a few days of the range (0: today), with several hits in one sitting
           cityHash64(person, intHash32(number) % 4) % {days} AS dday
    FROM numbers({offset}, {count})
)
"""

RECEIPTS = """
INSERT INTO {table} (receipt_id, ts, site, consent_id, version, categories, method, banner_hash, locale,
                     ip_prefix, browser, os, device)
SELECT generateUUIDv4(number), toDateTime64(now() - toIntervalSecond(intHash32(number) % ({days} * 86400)), 3, 'UTC'),
       'bench', toString(number % {people}), '1.0',
       if(number % 3 = 0, ['necessary'], if(number % 3 = 1, ['necessary', 'analytics'],
          ['necessary', 'analytics', 'marketing', 'preferences'])),
       'custom', 'h', 'ko', '', '', '', ''
FROM numbers({count})
"""


def generate(store: Store, events: int, days: int, chunk: int = 1_000_000) -> float:
    columns = ", ".join(n for n, _ in EVENT_COLUMNS)
    people = max(1000, events // EVENTS_PER_PERSON)
    started = time.perf_counter()
    for offset in range(0, events, chunk):
        count = min(chunk, events - offset)
        store.command(
            GENERATE.format(
                table=store.table("events"), columns=columns, days=days, people=people, offset=offset, count=count
            )
        )
        print(f"  generated {offset + count:,} events", file=sys.stderr, flush=True)
    store.command(
        RECEIPTS.format(table=store.table("consent_receipts"), days=days, people=people, count=max(events // 20, 1000))
    )
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(fn: Callable[[], object], repeat: int) -> tuple[float, list[float]]:
    """The first call's time (it also warms the engine's marks and caches), then ``repeat`` more."""
    started = time.perf_counter()
    fn()
    first = (time.perf_counter() - started) * 1000
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return first, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--data", help="data directory (default: a new temporary one; reused if it holds N events)")
    parser.add_argument("--days", type=int, default=DAYS, help=f"days of events, to now (default {DAYS})")
    parser.add_argument("--no-build", action="store_true", help="measure without building the visits of closed days")
    args = parser.parse_args()

    data_dir = Path(args.data or tempfile.mkdtemp(prefix="cg-analytics-bench-"))
    settings = Settings(site_id="bench", data_dir=data_dir, database="bench")
    store = open_store(settings.clickhouse_dsn, settings.database)
    migrate(store)
    existing = store.query_rows(f"SELECT count() FROM {store.table('events')}")[0][0]
    if existing == args.events:
        print(f"reusing {existing:,} events in {settings.clickhouse_dsn}", file=sys.stderr)
        seconds = 0.0
    elif existing:
        raise SystemExit(f"{settings.clickhouse_dsn} holds {existing:,} events, not {args.events:,}: use a new --data")
    else:
        print(f"generating {args.events:,} events in {settings.clickhouse_dsn} ...", file=sys.stderr)
        seconds = generate(store, args.events, args.days)
    built = "visits not built (--no-build)"
    if not args.no_build:
        started = time.perf_counter()
        days = build_closed_days(
            store,
            events_months=settings.events_retention_months,
            progress=lambda day: print(f"  visits of {describe(day)}", file=sys.stderr, flush=True),
        )
        # As the gateway's builder leaves today at worst: its last round one interval before the last
        # hit, so the keys of the last 40 minutes or so are open and their visits are made live.
        last = store.query_rows(f"SELECT maxOrNull(ts) FROM {store.table('events')} WHERE toDate(ts) = today()")[0][0]
        as_of = None if last is None else last.replace(tzinfo=dt.UTC) - dt.timedelta(seconds=VISIT_BUILD_INTERVAL)
        days += build_open_days(
            store, now=as_of, progress=lambda day: print(f"  so far: {describe(day)}", file=sys.stderr)
        )
        built = f"visits of {len(days)} days built in {time.perf_counter() - started:.1f} s (today so far included)"
    stored = store.query_rows(f"SELECT count() FROM {store.table('events')}")[0][0]
    rolled = store.query_rows(f"SELECT count(), sum(hits) FROM {store.table('events_daily')}")[0]

    # Each endpoint's first answer (its own column) merges the closed days' sums (or funnel levels)
    # it reads, as the first answer of the day for a range does; the later ones read them merged.
    for merged in (RANGE_SUMS_TABLE, RANGE_FUNNELS_TABLE):
        store.command(f"TRUNCATE TABLE {store.table(merged)}")
    token, _ = TokenStore(settings.tokens_path).create(f"bench-{time.time_ns()}")
    today = dt.datetime.now(dt.UTC).date()
    rng = {"from": (today - dt.timedelta(days=args.days)).isoformat(), "to": today.isoformat()}
    cases: list[tuple[str, str, dict[str, str]]] = [
        ("aggregate", "aggregate", {}),
        ("aggregate device=mobile", "aggregate", {"device": "mobile"}),
        ("timeseries day", "timeseries", {"interval": "day"}),
        (
            "timeseries hour (7d)",
            "timeseries",
            {"interval": "hour", "from": (today - dt.timedelta(days=6)).isoformat()},
        ),
        ("breakdown page", "breakdown", {"dimension": "page"}),
        ("breakdown entry_page", "breakdown", {"dimension": "entry_page"}),
        ("breakdown utm_campaign", "breakdown", {"dimension": "utm_campaign"}),
        ("breakdown device", "breakdown", {"dimension": "device"}),
        ("breakdown utm_source", "breakdown", {"dimension": "utm_source"}),
        ("breakdown exit_page", "breakdown", {"dimension": "exit_page"}),
        ("goals", "goals", {}),
        ("funnel 3 steps", "funnel", {"steps": "page:/,page:/pricing,event:signup"}),
        ("consent-rates", "consent-rates", {}),
    ]
    app = create_analytics_app(settings, store=store)
    results: list[tuple[str, tuple[float, list[float]]]] = []
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        baseline_sql = (
            f"SELECT count() FROM {store.table('events')} WHERE site = 'bench' "
            "AND toDate(ts) BETWEEN {a:Date} AND {b:Date}"
        )
        results.append(
            (
                "baseline: SELECT count()",
                measure(lambda: store.query_rows(baseline_sql, {"a": rng["from"], "b": rng["to"]}), args.repeat),
            )
        )
        for label, endpoint, params in cases:
            query = {**rng, **params}

            def call(endpoint: str = endpoint, query: dict[str, str] = query) -> object:
                response = client.get(f"/api/v1/{endpoint}", params=query)
                if response.status_code != 200:
                    raise SystemExit(f"{endpoint} {query}: {response.status_code} {response.text}")
                return response.json()

            results.append((label, measure(call, args.repeat)))

    base_p50 = statistics.median(results[0][1][1])
    made = f"generated in {seconds:.1f} s" if seconds else "reused"
    print(
        f"\nanalytics benchmark: {stored:,} events over {args.days} days ({made}), "
        f"rollup {rolled[0]:,} rows for {rolled[1]:,} hits; {built}; {args.repeat} runs each, embedded engine"
    )
    print(f"{'endpoint':<28} {'p50 ms':>9} {'p95 ms':>9} {'p50 / baseline':>15} {'first ms':>9}")
    for label, (first, times) in results:
        p50 = statistics.median(times)
        print(f"{label:<28} {p50:>9.1f} {percentile(times, 0.95):>9.1f} {p50 / base_p50:>14.1f}x {first:>9.1f}")
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
