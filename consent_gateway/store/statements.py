"""The gateway's own statements (not the analytics queries): each one named, in one place.

Table names are the store's quoted identifiers; request values are bound parameters. The visitor
key of an erasure is the gateway's own 64-bit hash and goes in as an integer literal: ON CLUSTER
statements are forwarded to every node as text, without query parameters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from .client import Store
from .cluster import render
from .schema import EVENT_COLUMNS, RANGE_FUNNELS_TABLE, RANGE_SUMS_TABLE, VISIT_SUMS_TABLE, VISITS_TABLE


def ping(store: Store) -> None:
    """Raise ``StoreError`` unless ClickHouse answers a trivial query (readiness)."""
    store.command("SELECT 1")


def stored_event_names(store: Store, site: str, limit: int) -> list[str]:
    """Up to ``limit`` distinct event names stored for ``site`` (the event-name cap's seed)."""
    rows = store.query_rows(
        f"SELECT DISTINCT name FROM {store.table('events')} WHERE site = {{site:String}} AND kind = 'event' "  # noqa: S608
        f"LIMIT {int(limit)}",
        {"site": site},
    )
    return [str(r[0]) for r in rows]


def identified_rows(store: Store, visitor: int) -> int:
    """How many identified event rows of ``visitor`` are stored."""
    rows = store.query_rows(
        f"SELECT count() FROM {store.table('events')} WHERE identified = 1 AND visitor = {{v:UInt64}}",  # noqa: S608
        {"v": visitor},
    )
    return int(rows[0][0])


def erase_visitor(store: Store, visitor: int, cluster: str = "") -> None:
    """Delete the identified rows of ``visitor`` (its events, links and stored visits), and the
    sums of the days it had stored visits on and of the ranges over them (they hold its key in a set;
    those days are answered from the remaining rows until rebuilt); on a cluster, from each shard's
    local tables (a Distributed table cannot DELETE)."""
    days = store.query_rows(
        f"SELECT DISTINCT day FROM {store.table(VISITS_TABLE)} WHERE identified = 1 AND visitor = {{v:UInt64}}",  # noqa: S608
        {"v": int(visitor)},
    )
    deletes = [
        f"DELETE FROM {store.table(table)} WHERE identified = 1 AND visitor = {int(visitor)}"  # noqa: S608
        for table in ("events", VISITS_TABLE)
    ]
    if days:
        listed = ", ".join(f"'{day.isoformat()}'" for (day,) in days)
        deletes.append(f"DELETE FROM {store.table(VISIT_SUMS_TABLE)} WHERE day IN ({listed})")  # noqa: S608
        first, last = min(day for (day,) in days), max(day for (day,) in days)
        deletes.extend(
            f"DELETE FROM {store.table(table)} "  # noqa: S608
            f"WHERE first_day <= '{last.isoformat()}' AND last_day >= '{first.isoformat()}'"
            for table in (RANGE_SUMS_TABLE, RANGE_FUNNELS_TABLE)
        )
    for statement in render(deletes, cluster):
        store.command(statement)


def receipts_of(store: Store, site: str, consent_id: str) -> list[dict[str, Any]]:
    """The consent receipts of ``consent_id`` on ``site``, oldest first (``ts_ms``: milliseconds)."""
    return store.query_dicts(
        "SELECT receipt_id, toUnixTimestamp64Milli(ts) AS ts_ms, version, categories, method, banner_hash, locale "  # noqa: S608
        f"FROM {store.table('consent_receipts')} WHERE site = {{site:String}} AND consent_id = {{cid:String}} "
        "ORDER BY ts",
        {"site": site, "cid": consent_id},
    )


def pseudonymised_rows_by_day(store: Store, site: str) -> dict[str, int]:
    """The pseudonymised (not identified) event rows of ``site`` per day, keyed by ISO date."""
    rows = store.query_rows(
        f"SELECT toDate(ts) AS day, count() FROM {store.table('events')} "  # noqa: S608
        "WHERE site = {site:String} AND identified = 0 GROUP BY day ORDER BY day",
        {"site": site},
    )
    return {str(day): int(n) for day, n in rows}


def withdrawals_by_month(store: Store, site: str) -> list[tuple[str, int, int]]:
    """(first day of the month, withdrawals, distinct consent ids) of ``site``, oldest month first."""
    rows = store.query_rows(
        "SELECT toStartOfMonth(ts) AS month, count(), uniqExact(consent_id) "  # noqa: S608
        f"FROM {store.table('consent_receipts')} WHERE site = {{site:String}} AND method = 'withdraw' "
        "GROUP BY month ORDER BY month",
        {"site": site},
    )
    return [(str(month), int(count), int(ids)) for month, count, ids in rows]


# -- what is held for one visitor (the "my data" page) ---------------------------------------------


def identified_rows_of(store: Store, site: str, visitor: int) -> int:
    """How many identified event rows of ``visitor`` are stored for ``site``."""
    rows = store.query_rows(
        f"SELECT count() FROM {store.table('events')} "  # noqa: S608
        "WHERE site = {site:String} AND identified = 1 AND visitor = {v:UInt64}",
        {"site": site, "v": visitor},
    )
    return int(rows[0][0])


def identified_events_of(
    store: Store, site: str, visitor: int, columns: Sequence[str], limit: int
) -> list[dict[str, Any]]:
    """The first ``limit`` identified event rows of ``visitor`` on ``site``, oldest first; ``columns``
    are event column names (``ts`` as its text)."""
    names = [name for name, _ in EVENT_COLUMNS]
    for column in columns:
        if column not in names:
            raise ValueError(f"no event column {column!r}; use one of {', '.join(names)}")
    selected = ", ".join("toString(ts) AS ts" if c == "ts" else c for c in columns)
    return store.query_dicts(
        f"SELECT {selected} FROM {store.table('events')} "  # noqa: S608
        "WHERE site = {site:String} AND identified = 1 AND visitor = {v:UInt64} ORDER BY ts LIMIT {n:UInt32}",
        {"site": site, "v": visitor, "n": limit},
    )


def receipts_held(store: Store, site: str, consent_id: str, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` consent receipts of ``consent_id`` on ``site`` as shown to the visitor
    (ids and times as text, the IP prefix included), oldest first."""
    return store.query_dicts(
        "SELECT toString(receipt_id) AS receipt_id, toString(ts) AS ts, version, categories, method, "  # noqa: S608
        f"banner_hash, locale, ip_prefix FROM {store.table('consent_receipts')} "
        "WHERE site = {site:String} AND consent_id = {cid:String} ORDER BY ts LIMIT {n:UInt32}",
        {"site": site, "cid": consent_id, "n": limit},
    )


def pseudonymised_rows_on(store: Store, site: str, visitor: int, day: dt.date) -> int:
    """How many pseudonymised event rows of the day's pseudonym ``visitor`` are stored for ``site``."""
    rows = store.query_rows(
        f"SELECT count() FROM {store.table('events')} "  # noqa: S608
        "WHERE site = {site:String} AND identified = 0 AND visitor = {v:UInt64} AND toDate(ts) = {d:Date}",
        {"site": site, "v": visitor, "d": day},
    )
    return int(rows[0][0])


def cookie_inventory_rows(store: Store, table: str, site: str, days: int) -> list[tuple[Any, ...]]:
    """The cookie inventory of ``site`` in ``table`` over the last ``days`` days, one row per cookie
    name merged across days and flushes, by name: name, category, source, set, request, blocked,
    before-consent and overflow counts, first and last seen, domain, path, lifetime, HttpOnly,
    Secure, SameSite of the last Set-Cookie, and the request paths with their counts."""
    return store.query_rows(
        f"""SELECT name, argMax(category, last_seen), argMax(source, last_seen),
       sum(set_count), sum(request_count), sum(blocked), sum(before_consent), sum(overflow),
       min(first_seen), max(last_seen),
       argMaxIf(domain, last_seen, set_count > 0), argMaxIf(cookie_path, last_seen, set_count > 0),
       argMaxIf(lifetime_seconds, last_seen, set_count > 0), max(http_only), max(secure),
       argMaxIf(same_site, last_seen, set_count > 0), sumMap(paths)
FROM {store.table(table)}
WHERE site = {{site:String}} AND day >= today() - {{days:UInt32}}
GROUP BY name
ORDER BY name""",  # noqa: S608
        {"site": site, "days": int(days)},
    )


def receipts_between(
    store: Store, site: str, start: dt.date, end: dt.date, consent_id: str | None = None
) -> list[dict[str, Any]]:
    """The consent receipts of ``site`` from ``start`` to ``end`` (inclusive UTC days), of one
    ``consent_id`` when given, oldest first (``ts_ms``: milliseconds)."""
    where = "site = {site:String} AND toDate(ts) >= {start:Date} AND toDate(ts) <= {end:Date}"
    params: dict[str, Any] = {"site": site, "start": start, "end": end}
    if consent_id:
        where += " AND consent_id = {cid:String}"
        params["cid"] = consent_id
    return store.query_dicts(
        "SELECT toString(receipt_id) AS receipt_id, "  # noqa: S608 - the table name is ours; values are bound
        "toUnixTimestamp64Milli(ts) AS ts_ms, consent_id, version, categories, method, "
        "banner_hash, locale, ip_prefix, browser, os, device, child, guardian_categories "
        f"FROM {store.table('consent_receipts')} "
        f"WHERE {where} ORDER BY ts, receipt_id",
        params,
    )
