"""The gateway's own statements (not the analytics queries): each one named, in one place.

Table names are the store's quoted identifiers; request values are bound parameters. The visitor
key of an erasure is the gateway's own 64-bit hash and goes in as an integer literal: ON CLUSTER
statements are forwarded to every node as text, without query parameters.
"""

from __future__ import annotations

from typing import Any

from .client import Store
from .cluster import render


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
    """Delete the identified event rows of ``visitor``; on a cluster, from each shard's local table
    (a Distributed table cannot DELETE)."""
    delete = f"DELETE FROM {store.table('events')} WHERE identified = 1 AND visitor = {int(visitor)}"  # noqa: S608
    for statement in render([delete], cluster):
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
