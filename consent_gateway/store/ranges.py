# ruff: noqa: S608 - SQL over table names the store builds itself; every value is a {name:Type} parameter.
"""Sums and funnels of a range of closed days, merged once and kept for the day.

The dashboard asks for the same range from several panels at once and again on every visit, and the
closed days of a range do not change while their builds are the days' fresh ones. The first answer
over a range stores what it merged from them under a key made from their build ids (which never
change); later answers read that and add only the other days (today, days not built). A site stores
at most RANGE_SUMS_A_DAY ranges (and as many funnels) a day; the rows expire at the end of the day they
were made and never outlive their first day's events (schema.range_sums_ttl), and a withdrawal deletes every
range over one of its days (statements.erase_visitor).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from .client import Store
from .schema import (
    RANGE_COLUMNS,
    RANGE_FUNNELS_TABLE,
    RANGE_SUMS_A_DAY,
    RANGE_SUMS_TABLE,
    VISIT_SUMS_TABLE,
    VISITOR_SET,
)


def range_key(built: Iterable[int]) -> int:
    """The key of the range sums merged from the builds ``built``: a 64-bit digest of their ids."""
    ids = ",".join(str(int(b)) for b in sorted(built))
    return int.from_bytes(hashlib.blake2b(ids.encode(), digest_size=8).digest(), "big")


def ready_range_sums(
    store: Store, site: str, fresh: Mapping[dt.date, int], kinds: Iterable[str], cluster: str = ""
) -> int | None:
    """The key of the merged sums of ``site``'s ``fresh`` days (day → build id) for the lists
    ``kinds``, merging and storing the lists not stored yet; None when they cannot be read from there
    (the site has made RANGE_SUMS_A_DAY ranges today): the day sums answer then."""
    if not fresh:
        return None
    key = range_key(fresh.values())
    found, ranges = _stored_ranges(store, site, key)
    missing = sorted(set(kinds) - found)
    if not missing:
        return key
    if ranges >= RANGE_SUMS_A_DAY:
        return None
    # One INSERT ... SELECT stores a list whole; a list with no rows in the day sums (no events, say)
    # stores none and reads as empty from both.
    _merge_range(store, site, fresh, key, missing, cluster)
    return key


def _stored_ranges(store: Store, site: str, key: int) -> tuple[set[str], int]:
    """The lists stored today for the range ``key`` of ``site``, and how many ranges it stored today."""
    found: set[str] = set()
    ranges = 0
    for mine, lists, count in store.query_rows(
        f"SELECT builds = {{key:UInt64}} AS mine, groupUniqArray(list), uniqExact(builds) "
        f"FROM {store.table(RANGE_SUMS_TABLE)} WHERE site = {{site:String}} AND made = today() GROUP BY mine",
        {"key": key, "site": site},
    ):
        ranges += int(count)
        if mine:
            found = set(lists)
    return found, ranges


def _merge_range(
    store: Store, site: str, fresh: Mapping[dt.date, int], key: int, lists: list[str], cluster: str
) -> None:
    """Merge the day sums of the builds ``fresh`` for ``lists`` into one row an item, stored as ``key``."""
    days = sorted(fresh)
    settings: dict[str, Any] = {"insert_distributed_sync": 1} if cluster else {}
    store.command(
        f"INSERT INTO {store.table(RANGE_SUMS_TABLE)} (site, builds, first_day, last_day, made, merge, "
        f"{RANGE_COLUMNS}) SELECT {{site:String}}, {{key:UInt64}}, {{first:Date}}, {{last:Date}}, today(), "
        f"{{merge:UInt64}}, list, item, {VISITOR_SET}MergeState(consented_hashes), sum(pseudonymous), "
        "max(pseudonymous), sum(pageviews), sum(events), sum(visits), sum(bounces), sum(duration) "
        f"FROM {store.table(VISIT_SUMS_TABLE)} WHERE site = {{site:String}} AND day BETWEEN {{first:Date}} "
        "AND {last:Date} AND build IN {builds:Array(UInt64)} AND list IN {lists:Array(String)} "
        "GROUP BY list, item",
        {
            "site": site,
            "key": key,
            "first": days[0],
            "last": days[-1],
            "builds": [int(b) for b in fresh.values()],
            "lists": lists,
            "merge": secrets.randbits(63),
        },
        settings=settings,
    )


def funnel_key(built: Iterable[int], definition: str) -> int:
    """The key of a funnel's levels over the builds ``built``: ``definition`` says which funnel (its
    steps, window, filters and their values)."""
    ids = ",".join(str(int(b)) for b in sorted(built))
    return int.from_bytes(hashlib.blake2b(f"{ids}|{definition}".encode(), digest_size=8).digest(), "big")


def ready_range_funnel(
    store: Store,
    site: str,
    key: int,
    fresh: Mapping[dt.date, int],
    levels: tuple[str, Mapping[str, Any]],
    cluster: str = "",
) -> bool:
    """Whether the funnel ``key``'s levels over ``site``'s ``fresh`` days are stored, storing them if
    not: ``levels`` is the statement (and its parameters) giving each visit of those days its level
    (``identified``, ``visitor``, ``day``, ``lv``). False when the site has stored
    RANGE_SUMS_A_DAY funnels today: the answer then reads the days' visits."""
    if not fresh:
        return False
    table = store.table(RANGE_FUNNELS_TABLE)
    rows = store.query_rows(
        f"SELECT funnel = {{key:UInt64}} AS mine, uniqExact(funnel) FROM {table} "
        "WHERE site = {site:String} AND made = today() GROUP BY mine",
        {"key": key, "site": site},
    )
    if any(mine for mine, _ in rows):
        return True
    if sum(int(count) for _, count in rows) >= RANGE_SUMS_A_DAY:
        return False
    sql, params = levels
    days = sorted(fresh)
    settings: dict[str, Any] = {"insert_distributed_sync": 1} if cluster else {}
    store.command(
        f"""
INSERT INTO {table} (site, funnel, first_day, last_day, made, merge, identified, visitor, d, level, n)
SELECT {{site:String}}, {{funnel:UInt64}}, {{first:Date}}, {{last:Date}}, today(), {{merge:UInt64}}, *
FROM (
    SELECT identified, if(identified = 1, visitor, 0) AS v, d, level, count() AS n
    FROM (
        SELECT identified, visitor, if(identified = 1, toDate(0), day) AS d, max(lv) AS level
        FROM ({sql})
        GROUP BY identified, visitor, d
    )
    WHERE level > 0
    GROUP BY identified, v, d, level
    UNION ALL
    SELECT toUInt8(0), toUInt64(0), toDate(0), toUInt8(0), toUInt64(0)
)""",
        {**params, "site": site, "funnel": key, "first": days[0], "last": days[-1], "merge": secrets.randbits(63)},
        settings=settings,
    )
    return True


def range_funnel_rows(table: str) -> str:
    """The stored levels of the funnel ``{funnel:UInt64}`` of ``{site:String}``, from one of its merges
    (two answers storing one funnel at once both store it): (identified, visitor, d, level, n)."""
    return (
        f"SELECT identified, visitor, d, level, n FROM {table} WHERE site = {{site:String}} "
        f"AND funnel = {{funnel:UInt64}} AND merge = (SELECT min(merge) FROM {table} "
        "WHERE site = {site:String} AND funnel = {funnel:UInt64})"
    )
