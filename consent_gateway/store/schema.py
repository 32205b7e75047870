"""Versioned, idempotent migrations for the ``events``, ``consent_receipts`` and ``visits`` tables."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .client import Store
from .cluster import local_table, render

logger = logging.getLogger("consent_gateway.store")

# (name, type) in insert order; the writer names both on every insert.
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "UUID"),
    ("ts", "DateTime64(3, 'UTC')"),
    ("site", "LowCardinality(String)"),
    ("kind", "LowCardinality(String)"),
    ("name", "LowCardinality(String)"),
    ("category", "LowCardinality(String)"),
    ("identified", "UInt8"),
    ("visitor", "UInt64"),
    ("granted", "Array(LowCardinality(String))"),
    ("path", "String"),
    ("status", "UInt16"),
    ("duration_ms", "UInt32"),
    ("referrer_host", "LowCardinality(String)"),
    ("utm_source", "LowCardinality(String)"),
    ("utm_medium", "LowCardinality(String)"),
    ("utm_campaign", "LowCardinality(String)"),
    ("utm_term", "String"),
    ("utm_content", "String"),
    ("click_id", "String"),
    ("ip_prefix", "LowCardinality(String)"),
    ("browser", "LowCardinality(String)"),
    ("browser_version", "LowCardinality(String)"),
    ("os", "LowCardinality(String)"),
    ("device", "LowCardinality(String)"),
    ("is_bot", "UInt8"),
    ("props", "String"),
)

# Each event column's position in a row, by name: rows are read by name, never by a bare number.
EVENT_INDEX: dict[str, int] = {name: i for i, (name, _) in enumerate(EVENT_COLUMNS)}

RECEIPT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("receipt_id", "UUID"),
    ("ts", "DateTime64(3, 'UTC')"),
    ("site", "LowCardinality(String)"),
    ("consent_id", "String"),
    ("version", "LowCardinality(String)"),
    ("categories", "Array(LowCardinality(String))"),
    ("method", "LowCardinality(String)"),
    ("banner_hash", "String"),
    ("locale", "LowCardinality(String)"),
    ("ip_prefix", "String"),
    ("browser", "LowCardinality(String)"),
    ("os", "LowCardinality(String)"),
    ("device", "LowCardinality(String)"),
    # Added by migration 6 on older databases (children.receipt_columns_ddl).
    ("child", "UInt8"),
    ("guardian_categories", "Array(LowCardinality(String))"),
)

_CODECS = {"path": "CODEC(ZSTD(3))", "props": "CODEC(ZSTD(3))", "ts": "CODEC(Delta, ZSTD(1))"}


def _columns_sql(columns: tuple[tuple[str, str], ...]) -> str:
    return ",\n    ".join(f"`{n}` {t} {_CODECS.get(n, '')}".rstrip() for n, t in columns)


@dataclass(frozen=True, slots=True)
class Retention:
    events_months: int = 3
    receipts_years: int = 5

    @property
    def events_ttl(self) -> str:
        return f"toDateTime(ts) + toIntervalMonth({int(self.events_months)})"

    @property
    def receipts_ttl(self) -> str:
        return f"toDateTime(ts) + toIntervalYear({int(self.receipts_years)})"


def _m1_events(store: Store, retention: Retention) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {store.table("events")} (
    {_columns_sql(EVENT_COLUMNS)}
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (site, kind, toDate(ts), name, visitor, ts)
TTL {retention.events_ttl} DELETE
SETTINGS ttl_only_drop_parts = 1, index_granularity = 8192"""
    ]


def _m2_receipts(store: Store, retention: Retention) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {store.table("consent_receipts")} (
    {_columns_sql(RECEIPT_COLUMNS)}
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (site, consent_id, ts)
TTL {retention.receipts_ttl} DELETE"""
    ]


# The daily rollup keeps trends past the events TTL. It holds plain counts per day and dimension:
# no visitor keys, and no uniq*/HLL states of them either (a small-set sketch stores the key hashes
# themselves, so anyone holding a key could test whether that visitor is in a group).
ROLLUP_TTL_MONTHS = 25


def _m3_daily_rollup(store: Store, retention: Retention) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {store.table("events_daily")} (
    `day` Date,
    `site` LowCardinality(String),
    `kind` LowCardinality(String),
    `name` LowCardinality(String),
    `path` String CODEC(ZSTD(3)),
    `referrer_host` LowCardinality(String),
    `utm_source` LowCardinality(String),
    `utm_medium` LowCardinality(String),
    `marketing` UInt8,
    `utm_campaign` LowCardinality(String),
    `browser` LowCardinality(String),
    `os` LowCardinality(String),
    `device` LowCardinality(String),
    `hits` SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (site, day, kind, name, path, referrer_host, utm_source, utm_medium, marketing, utm_campaign, browser, os, device)
TTL day + toIntervalMonth({ROLLUP_TTL_MONTHS}) DELETE""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {store.table("events_daily_mv")} TO {store.table("events_daily")} AS
SELECT
    toDate(ts) AS day, site, kind, name,
    if(kind = 'visit' AND name = 'request', '', path) AS path,
    referrer_host, utm_source, utm_medium,
    toUInt8(has(granted, 'marketing')) AS marketing,
    if(has(granted, 'marketing'), utm_campaign, '') AS utm_campaign,
    browser, os, device,
    toUInt64(count()) AS hits
FROM {store.table("events")}
WHERE is_bot = 0
GROUP BY day, site, kind, name, path, referrer_host, utm_source, utm_medium, marketing, utm_campaign, browser, os, device""",
    ]


MARKETING_ROLE = "marketing"


def marketing_views(store: Store) -> list[str]:
    """Views for teams that query ClickHouse directly: no visitor keys, IP prefixes or click ids."""
    return [
        f"""CREATE VIEW IF NOT EXISTS {store.table("marketing_events")}
SQL SECURITY DEFINER AS
SELECT ts, site, kind, name, category, identified, path, status, duration_ms, referrer_host,
       utm_source, utm_medium,
       if(has(granted, 'marketing'), utm_campaign, '') AS utm_campaign,
       toUInt8(has(granted, 'marketing') AND click_id != '') AS ad_click,
       browser, browser_version, os, device
FROM {store.table("events")}
WHERE is_bot = 0 AND ts >= now() - INTERVAL 3 MONTH""",
        f"""CREATE VIEW IF NOT EXISTS {store.table("marketing_daily")}
SQL SECURITY DEFINER AS
SELECT day, site, kind, name, path, referrer_host, utm_source, utm_medium, marketing, utm_campaign,
       browser, os, device, sum(hits) AS hits
FROM {store.table("events_daily")}
GROUP BY day, site, kind, name, path, referrer_host, utm_source, utm_medium, marketing, utm_campaign, browser, os, device""",
    ]


def _m4_marketing_role(store: Store, retention: Retention) -> list[str]:
    # The embedded engine has no users or roles: the views and the role exist on servers only.
    if store.embedded:
        return []
    return [
        *marketing_views(store),
        f"CREATE ROLE IF NOT EXISTS `{MARKETING_ROLE}`",
        f"GRANT SELECT ON {store.table('marketing_events')} TO `{MARKETING_ROLE}`",
        f"GRANT SELECT ON {store.table('marketing_daily')} TO `{MARKETING_ROLE}`",
    ]


Migration = Callable[[Store, Retention], list[str]]
MIGRATIONS: tuple[tuple[int, str, Migration], ...] = (
    (1, "events table", _m1_events),
    (2, "consent receipts", _m2_receipts),
    (3, "anonymous daily rollup", _m3_daily_rollup),
    (4, "marketing role and views (servers only)", _m4_marketing_role),
    (5, "cookie inventory", lambda st, r: inventory_ddl(st, events_months=r.events_months)),
    (6, "child columns in receipts", lambda st, r: receipt_columns_ddl(st.table("consent_receipts"))),
    (7, "visits of closed days", lambda st, r: visits_ddl(st, events_months=r.events_months)),
    (8, "visits of the open day so far", lambda st, r: partial_builds_ddl(st.table(BUILDS_TABLE))),
    (9, "sums of stored visits", lambda st, r: visit_sums_ddl(st, events_months=r.events_months)),
    (10, "steps of visits", lambda st, r: visit_steps_ddl(st)),
    (11, "step ids of visits, hashed visitor sets in their sums", lambda st, r: hashed_steps_and_sets_ddl(st)),
    (12, "merged sums of day ranges", lambda st, r: range_sums_ddl(st, events_months=r.events_months)),
    (13, "funnel levels of day ranges", lambda st, r: range_funnels_ddl(st, events_months=r.events_months)),
)


def _bootstrap(store: Store) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS `{store.database}`",
        f"CREATE TABLE IF NOT EXISTS {store.table('schema_migrations')} "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
        "ENGINE = ReplacingMergeTree ORDER BY version",
    ]


def migration_statements(
    store: Store, *, events_months: int = 3, receipts_years: int = 5, cluster: str = ""
) -> list[str]:
    """Every statement a new database gets, for one node or for ``cluster`` (to review or test the DDL)."""
    retention = Retention(events_months, receipts_years)
    statements = _bootstrap(store)
    for _, _, build in MIGRATIONS:
        statements.extend(build(store, retention))
    return render(statements, cluster)


def migrate(store: Store, *, events_months: int = 3, receipts_years: int = 5, cluster: str = "") -> list[int]:
    """Apply the migrations not yet recorded; returns the versions applied. Safe to run again.

    With ``cluster`` every statement runs ``ON CLUSTER`` on replicated local tables behind
    ``Distributed`` ones (see ``store/cluster.py``); without it, on this one node as written.
    """
    retention = Retention(events_months, receipts_years)
    for statement in render(_bootstrap(store), cluster):
        store.command(statement)
    done = {row[0] for row in store.query_rows(f"SELECT version FROM {store.table('schema_migrations')}")}
    applied = []
    for version, name, build in MIGRATIONS:
        if version in done:
            continue
        for statement in render(build(store, retention), cluster):
            store.command(statement)
        # On a cluster this goes through a Distributed table: wait for it, so the next run sees it.
        # As JSON lines, the gateway's own insert path: clickhouse-connect's row insert would load
        # pandas and numpy into the process (see store/client.py for what that costs a page).
        store.insert_lines(
            "schema_migrations",
            [json.dumps([version, name]).encode()],
            ["version", "name"],
            settings={"insert_distributed_sync": 1} if cluster else None,
        )
        logger.info("applied migration %d (%s) to %s", version, name, store.database)
        applied.append(version)
    _apply_retention(store, retention, cluster)
    _apply_dedup_window(store, cluster)
    return applied


def _apply_retention(store: Store, retention: Retention, cluster: str = "") -> None:
    """Bring the tables' TTLs in line with the settings when the retention settings change."""
    for table, months_or_years, expected in (
        ("events", retention.events_months, f"toIntervalMonth({retention.events_months})"),
        ("consent_receipts", retention.receipts_years, f"toIntervalYear({retention.receipts_years})"),
        ("cookie_inventory", retention.events_months, f"toIntervalMonth({retention.events_months})"),
        (VISITS_TABLE, retention.events_months, f"toIntervalMonth({retention.events_months})"),
        (BUILDS_TABLE, retention.events_months, f"toIntervalMonth({retention.events_months})"),
        (VISIT_SUMS_TABLE, retention.events_months, f"toIntervalMonth({retention.events_months})"),
        (RANGE_SUMS_TABLE, retention.events_months, f"toIntervalMonth({retention.events_months})"),
        (RANGE_FUNNELS_TABLE, retention.events_months, f"toIntervalMonth({retention.events_months})"),
    ):
        rows = store.query_rows(
            "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            {"db": store.database, "t": local_table(table, cluster)},
        )
        if rows and expected not in rows[0][0]:
            ttl = {
                "events": retention.events_ttl,
                "consent_receipts": retention.receipts_ttl,
                "cookie_inventory": f"day + toIntervalMonth({int(retention.events_months)})",
                VISITS_TABLE: visits_ttl(retention.events_months),
                BUILDS_TABLE: visits_ttl(retention.events_months),
                VISIT_SUMS_TABLE: visits_ttl(retention.events_months),
                RANGE_SUMS_TABLE: range_sums_ttl(retention.events_months),
                RANGE_FUNNELS_TABLE: range_sums_ttl(retention.events_months),
            }[table]
            for statement in render([f"ALTER TABLE {store.table(table)} MODIFY TTL {ttl} DELETE"], cluster):
                store.command(statement)
            logger.info("retention of %s set to %s", table, months_or_years)


# How many recent inserts per table ClickHouse remembers by deduplication token. The writer names
# each insert with a token kept in its journal; a replay after a crash repeats a remembered token
# and is dropped, so journaled rows arrive exactly once (docs/pipeline.md). Plain MergeTree keeps
# no such memory unless this is set; Replicated*MergeTree has replicated_deduplication_window.
# The rollup needs it too: ClickHouse runs a table's materialized views even for an insert the
# table itself drops as a repeat, and only a view's target that remembers tokens drops it there.
DEDUP_WINDOW = 10_000
DEDUP_TABLES = ("events", "consent_receipts", "events_daily")


def receipt_columns_ddl(table: str) -> list[str]:
    """Additive DDL for ``consent_receipts`` (``table`` quoted): the child and guardian columns
    (consent_gateway.children)."""
    return [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS `child` UInt8 DEFAULT 0",
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS `guardian_categories` Array(LowCardinality(String)) DEFAULT []",
    ]


def _apply_dedup_window(store: Store, cluster: str = "") -> None:
    """Turn on insert deduplication by token for the tables the pipeline writes (idempotent)."""
    for table in DEDUP_TABLES:
        rows = store.query_rows(
            "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            {"db": store.database, "t": local_table(table, cluster)},
        )
        if rows and f"non_replicated_deduplication_window = {DEDUP_WINDOW}" not in rows[0][0]:
            statement = (
                f"ALTER TABLE {store.table(table)} MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW}"
            )
            for rendered in render([statement], cluster):
                store.command(rendered)


# The live cookie inventory (inventory.py): counts per day and cookie name, never a visitor key.
INVENTORY_TABLE = "cookie_inventory"
INVENTORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("day", "Date"),
    ("site", "LowCardinality(String)"),
    ("name", "String"),
    ("category", "LowCardinality(String)"),
    ("source", "LowCardinality(String)"),
    ("set_count", "SimpleAggregateFunction(sum, UInt64)"),
    ("request_count", "SimpleAggregateFunction(sum, UInt64)"),
    ("blocked", "SimpleAggregateFunction(sum, UInt64)"),
    ("before_consent", "SimpleAggregateFunction(sum, UInt64)"),
    ("overflow", "SimpleAggregateFunction(sum, UInt64)"),
    ("first_seen", "SimpleAggregateFunction(min, DateTime('UTC'))"),
    ("last_seen", "SimpleAggregateFunction(max, DateTime('UTC'))"),
    ("domain", "SimpleAggregateFunction(anyLast, String)"),
    ("cookie_path", "SimpleAggregateFunction(anyLast, String)"),
    ("lifetime_seconds", "SimpleAggregateFunction(max, Int64)"),
    ("http_only", "SimpleAggregateFunction(max, UInt8)"),
    ("secure", "SimpleAggregateFunction(max, UInt8)"),
    ("same_site", "SimpleAggregateFunction(anyLast, String)"),
    ("paths", "SimpleAggregateFunction(sumMap, Tuple(Array(String), Array(UInt64)))"),
)


def inventory_ddl(store: Store, *, events_months: int = 3) -> list[str]:
    """The additive DDL of ``cookie_inventory``: counts per day and name, no visitor keys, the events' TTL."""
    columns = ",\n    ".join(f"`{n}` {t}" for n, t in INVENTORY_COLUMNS)
    return [
        f"""CREATE TABLE IF NOT EXISTS {store.table(INVENTORY_TABLE)} (
    {columns}
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (site, day, name, category, source)
TTL day + toIntervalMonth({int(events_months)}) DELETE"""
    ]


# The stored visits of closed days (store/visits.py): visitor keys, so the events' retention.
VISITS_TABLE = "visits"
BUILDS_TABLE = "visit_builds"
VISIT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("site", "LowCardinality(String)"),
    ("day", "Date"),
    ("build", "UInt64"),
    ("identified", "UInt8"),
    ("visitor", "UInt64"),
    ("start_ts", "DateTime64(3, 'UTC')"),
    ("end_ts", "DateTime64(3, 'UTC')"),
    ("entry_page", "String"),
    ("exit_page", "String"),
    ("pageviews", "UInt32"),
    ("events", "UInt32"),
    ("duration", "UInt32"),
    ("bounce", "UInt8"),
    ("referrer_host", "LowCardinality(String)"),
    ("utm_source", "LowCardinality(String)"),
    ("utm_medium", "LowCardinality(String)"),
    ("utm_campaign", "LowCardinality(String)"),
    ("utm_term", "String"),
    ("utm_content", "String"),
    ("click_id", "String"),
    ("browser", "LowCardinality(String)"),
    ("os", "LowCardinality(String)"),
    ("device", "LowCardinality(String)"),
    ("granted", "Array(LowCardinality(String))"),
    # The paths of the visit's page views and events, with the page views and events of each, and
    # its event names with the events of each: page and event filters and breakdowns read these.
    ("paths", "Array(String)"),
    ("path_views", "Array(UInt32)"),
    ("path_events", "Array(UInt32)"),
    ("names", "Array(LowCardinality(String))"),
    ("name_events", "Array(UInt32)"),
    # The hours (UTC) the visit had hits in, with the page views and events of each: hourly series.
    ("hours", "Array(UInt8)"),
    ("hour_views", "Array(UInt32)"),
    ("hour_events", "Array(UInt32)"),
)
# Added by migration 10: the visit's page views and events in order, each as STEP_PAGE + its path or
# STEP_EVENT + its name, with its time in ms after the visit's start. Funnels read these.
VISIT_STEP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("step_ms", "Array(UInt32)"),
    ("steps", "Array(LowCardinality(String))"),
)
STEP_PAGE, STEP_EVENT = "p", "e"
# Added by migration 11: each step as cityHash64 of its text. A funnel compares 64-bit numbers
# instead of strings (the step's text stays in ``steps``). Rows stored without it compute it.
STEP_IDS = "arrayMap(s -> cityHash64(s), steps)"
VISIT_STEP_ID_COLUMNS: tuple[tuple[str, str], ...] = (("step_ids", "Array(UInt64)"),)
# The columns a query reads (the build id is the builder's).
VISIT_FIELDS = tuple(
    name for name, _ in (*VISIT_COLUMNS, *VISIT_STEP_COLUMNS, *VISIT_STEP_ID_COLUMNS) if name != "build"
)


def visits_ddl(store: Store, *, events_months: int) -> list[str]:
    """The additive DDL of ``visits`` and ``visit_builds``: visitor keys kept no longer than the events."""
    columns = ",\n    ".join(f"`{n}` {t}" for n, t in VISIT_COLUMNS)
    ttl = visits_ttl(events_months)
    return [
        f"""CREATE TABLE IF NOT EXISTS {store.table(VISITS_TABLE)} (
    {columns}
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (site, day, build, identified, visitor, start_ts)
TTL {ttl} DELETE
SETTINGS ttl_only_drop_parts = 1""",
        f"""CREATE TABLE IF NOT EXISTS {store.table(BUILDS_TABLE)} (
    `day` Date,
    `build` UInt64,
    `events` UInt64,
    `built_at` DateTime DEFAULT now()
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, build)
TTL {ttl} DELETE""",
    ]


# Per whole build, day, list and item: the sums a closed day's unfiltered breakdowns need, made from
# its stored visits (store/visits.py). Consented keys are kept as a set to merge across days;
# pseudonymised keys change every day, so a count per day suffices. Keys, so the events' retention.
VISIT_SUMS_TABLE = "visit_sums"
# list: a visit's items in it, as (item, page views, events) tuples: one for the whole day's
# population and for the visitors who sent an event, one a path, event name, entry or exit page.
SUM_LISTS: dict[str, str] = {
    "": "[('', toUInt64(pageviews), toUInt64(events))]",
    "converted": "if(events > 0, [('', toUInt64(pageviews), toUInt64(events))], [])",
    "page": "arrayMap(t -> (t.1, toUInt64(t.2), toUInt64(t.3)), arrayZip(paths, path_views, path_events))",
    "event_name": "arrayMap(t -> (toString(t.1), toUInt64(0), toUInt64(t.2)), arrayZip(names, name_events))",
    "entry_page": "if(pageviews > 0, [(entry_page, toUInt64(pageviews), toUInt64(events))], [])",
    "exit_page": "if(pageviews > 0, [(exit_page, toUInt64(pageviews), toUInt64(events))], [])",
}
# The counts a sum holds, as DDL (``visit_sums``, ``visit_range_sums``).
SUMMED_COLUMNS = ",\n    ".join(f"`{n}` UInt64" for n in ("pageviews", "events", "visits", "bounces", "duration"))
SUM_COLUMNS = "list, item, day, consented_hashes, pseudonymous, pageviews, events, visits, bounces, duration"
# The consented visitor keys of a sum, as the state of this function: a set of 32-bit hashes while it
# holds a few thousand (exact, but for a collision, which can only lower the count), then
# HyperLogLog cells (within 0.3 % from 10,000 to 1,000,000 keys, measured). k is at most 1000, so a
# number near k is always exact.
# Merging 89 days of these for every page takes about 40 % less time than ``uniqExact`` sets.
VISITOR_SET = "uniqCombined"


def sums_sql(kinds: Iterable[str], source: str, where: str = "1", *, per_build: bool = False) -> str:
    """The sums of the lists ``kinds`` (SUM_LISTS) over the visit rows of ``source`` matching ``where``,
    in one pass: per site, list, item and day (``per_build``: and build, first), the columns
    SUM_COLUMNS. ``visits``, ``bounces`` and ``duration`` are those of the visits with a page view."""
    items = ", ".join(f"arrayMap(t -> ('{k}', t.1, t.2, t.3), {SUM_LISTS[k]})" for k in kinds)
    build = "build, " if per_build else ""
    # Named apart from the visit columns they sum.
    return f"""
SELECT {build}site, list, item, day, ids AS consented_hashes, pd AS pseudonymous, pv AS pageviews, ev AS events,
       n AS visits, b AS bounces, d AS duration
FROM (
    SELECT {build}site, x.1 AS list, x.2 AS item, day,
           {VISITOR_SET}StateIf(visitor, identified = 1) AS ids, uniqExactIf(visitor, identified = 0) AS pd,
           sum(x.3) AS pv, sum(x.4) AS ev, countIf(pageviews > 0) AS n, countIf(bounce = 1) AS b,
           sumIf(duration, pageviews > 0) AS d
    FROM {source} ARRAY JOIN arrayConcat({items}) AS x
    WHERE {where}
    GROUP BY {build}site, list, item, day
)"""


def sums_insert(store: Store, source: str) -> str:
    """The statement that stores the sums of every list over the visit rows of ``source``, per build."""
    return (
        f"INSERT INTO {store.table(VISIT_SUMS_TABLE)} (build, site, {SUM_COLUMNS}) "
        f"{sums_sql(SUM_LISTS, source, per_build=True)}"
    )


def visit_sums_ddl(store: Store, *, events_months: int) -> list[str]:
    """The additive DDL of ``visit_sums`` (visitor keys, consented ones as a set, no longer than the
    events), and the sums of the builds already stored."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {store.table(VISIT_SUMS_TABLE)} (
    `site` LowCardinality(String),
    `day` Date,
    `build` UInt64,
    `list` LowCardinality(String),
    `item` String,
    `consented` AggregateFunction(uniqExact, UInt64),
    `consented_hashes` AggregateFunction({VISITOR_SET}, UInt64),
    `pseudonymous` UInt64,
    {SUMMED_COLUMNS}
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (site, day, build, list, item)
TTL {visits_ttl(events_months)} DELETE
SETTINGS ttl_only_drop_parts = 1""",
        # The builds stored before this table: their sums, as their builder would have made them.
        sums_insert(store, store.table(VISITS_TABLE)),
    ]


def visit_steps_ddl(store: Store) -> list[str]:
    """Additive DDL: the visits' steps (VISIT_STEP_COLUMNS), and ``steps`` on ``visit_builds``, 1 for a
    build that stored them. A build without (an earlier release's) is stale: its day is built again."""
    visits = store.table(VISITS_TABLE)
    return [
        *(f"ALTER TABLE {visits} ADD COLUMN IF NOT EXISTS `{n}` {t}" for n, t in VISIT_STEP_COLUMNS),
        f"ALTER TABLE {store.table(BUILDS_TABLE)} ADD COLUMN IF NOT EXISTS `steps` UInt8 DEFAULT 0",
    ]


# The closed days' sums of one range, merged once (store/ranges.py, ``ready_range_sums``): a range
# of 89 days is one row a page instead of 89. Keyed by the build ids they were merged from, which
# never change, so a row is right for as long as those builds are the fresh ones; made at most
# RANGE_SUMS_A_DAY ranges a site a day; they expire at the end of the day they were made.
RANGE_SUMS_TABLE = "visit_range_sums"
RANGE_SUMS_A_DAY = 24
# A stored range's bounds (TTL, erasure), the day it was made and which merge made it, as DDL.
RANGE_HEADER = (
    ",\n    ".join(
        f"`{n}` {t}" for n, t in (("first_day", "Date"), ("last_day", "Date"), ("made", "Date"), ("merge", "UInt64"))
    )
    + ","
)
RANGE_COLUMNS = "list, item, consented_hashes, pseudonymous, peak, pageviews, events, visits, bounces, duration"


def range_sums_ttl(events_months: int) -> str:
    """A range's rows expire at the end of the day they were made, and never after its first day's
    events (the oldest keys in them)."""
    return f"least(first_day + toIntervalMonth({int(events_months)}), made + 1)"


def range_sums_ddl(store: Store, *, events_months: int) -> list[str]:
    """The additive DDL of ``visit_range_sums``: a range's sums per list and item, its consented keys
    as one hashed set (VISITOR_SET), its pseudonymised keys summed over its days and its busiest
    day's (``peak``). ``merge`` tells one merge's rows from another's: two answers merging the same
    range at once may both store it, and a reader takes one."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {store.table(RANGE_SUMS_TABLE)} (
    `site` LowCardinality(String),
    `builds` UInt64,
    {RANGE_HEADER}
    `list` LowCardinality(String),
    `item` String,
    `consented_hashes` AggregateFunction({VISITOR_SET}, UInt64),
    `pseudonymous` UInt64,
    `peak` UInt64,
    {SUMMED_COLUMNS}
)
ENGINE = MergeTree
ORDER BY (site, builds, list, item)
TTL {range_sums_ttl(events_months)} DELETE"""
    ]


# A funnel's levels over the closed days of a range (store/ranges.py): each consented key's best
# level (``visitor``, ``d`` the epoch, ``n`` 1), and per day and level how many pseudonymised keys
# reached it (``visitor`` 0), with a row of level 0 that says the funnel was stored.
RANGE_FUNNELS_TABLE = "visit_range_funnels"


def range_funnels_ddl(store: Store, *, events_months: int) -> list[str]:
    """The additive DDL of ``visit_range_funnels``: consented keys, as long as the range sums."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {store.table(RANGE_FUNNELS_TABLE)} (
    `site` LowCardinality(String),
    `funnel` UInt64,
    {RANGE_HEADER}
    `identified` UInt8,
    `visitor` UInt64,
    `d` Date,
    `level` UInt8,
    `n` UInt64
)
ENGINE = MergeTree
ORDER BY (site, funnel, identified, visitor)
TTL {range_sums_ttl(events_months)} DELETE"""
    ]


def hashed_steps_and_sets_ddl(store: Store) -> list[str]:
    """Additive DDL: the visits' step ids (VISIT_STEP_ID_COLUMNS) and the sums' hashed visitor sets
    (``consented_hashes``, VISITOR_SET). Builds of an earlier format (visits/BUILD_FORMAT) are stale
    and built again; an earlier release rebuilds this one's the same way, so rolling back works, and
    its ``consented`` column (exact sets) is left empty by this release's builds."""
    return [
        *(
            f"ALTER TABLE {store.table(VISITS_TABLE)} ADD COLUMN IF NOT EXISTS `{n}` {t} DEFAULT {STEP_IDS}"
            for n, t in VISIT_STEP_ID_COLUMNS
        ),
        f"ALTER TABLE {store.table(VISIT_SUMS_TABLE)} ADD COLUMN IF NOT EXISTS "
        f"`consented_hashes` AggregateFunction({VISITOR_SET}, UInt64)",
    ]


def partial_builds_ddl(table: str) -> list[str]:
    """Additive DDL for ``visit_builds`` (``table`` quoted): ``upto``, the time a build of a day not yet
    closed reads hits up to (store/visits.py, ``build_open_day``); the epoch for a whole closed day."""
    return [f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS `upto` DateTime64(3, 'UTC') DEFAULT 0"]


def visits_ttl(events_months: int) -> str:
    """A day's visits expire at the start of the day the first of its events expires on: never later."""
    return f"day + toIntervalMonth({int(events_months)})"
