# ruff: noqa: S608 - SQL is assembled only from fixed fragments; dates and ids are bound parameters.
"""Visits: the one definition of a visit, the stored ``visits`` table of closed days, and its builder.

A visit is a run of one visitor key's hits (page views, events, requests; never link records or
bots) on one UTC day, with no gap of more than VISIT_GAP_SECONDS between two hits. Consent on the
landing page keeps it whole: a pseudonymised hit followed within the gap by a link record of its key
takes the consented key (``linked_hits_sql``). The visit's referrer, UTM values, click id and
device come from its entry (first hit); it is read for campaign figures only when every one of its
hits was made under a choice granting that category (its ``granted`` is their intersection).

``visit_rows_sql`` turns hits into visit rows. The builder stores its rows for closed days (day <
today and the last visit of the day settled) under a build id; a day's rows are read only when
the day's events count still equals the count recorded with its build (``fresh_builds``), so late
journal replays and erasures make the day answer live again until it is rebuilt. A build is made
visible by one insert into ``visit_builds`` after its rows are all in: concurrent builders of one
day each insert a whole build, readers take the highest committed one, and a builder drops only
builds older than its own.

A day still open (today, and yesterday until it settles) is built as far as it has settled
(``build_open_day``): from its hits before the build's ``upto``, the visits that ended more than the
gap before ``upto``, which no later hit can extend. A reader takes such a build while the day's
events before ``upto`` still number what the build counted, and makes live only the visits of the
keys seen since ``upto`` minus the gap (``open_keys_sql``): those keys' stored visits are left out
and all of their visits of the day are made from the hits, the rest are read as stored. A link
written after ``upto`` names keys seen then, so it is always made live.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..records import LINK, LINK_PSEUDONYM
from .client import Store
from .cluster import render
from .schema import (
    BUILDS_TABLE,
    EVENT_COLUMNS,
    RANGE_COLUMNS,
    STEP_EVENT,
    STEP_IDS,
    STEP_PAGE,
    VISIT_FIELDS,
    VISIT_SUMS_TABLE,
    VISITOR_SET,
    VISITS_TABLE,
    sums_insert,
    sums_sql,
)

logger = logging.getLogger("consent_gateway.store")

VISIT_GAP_SECONDS = 1800
PAGEVIEW = "kind = 'visit' AND name = 'pageview'"
# A day is closed once its last visit can no longer grow (midnight + the gap) and late rows had
# time to arrive (the writer's flushes, a restart's journal replay).
SETTLE = dt.timedelta(seconds=VISIT_GAP_SECONDS) + dt.timedelta(minutes=30)
# How often a running gateway looks for closed days to build, and builds the open ones so far (seconds).
VISIT_BUILD_INTERVAL = 600.0
# An open day's build reads the hits up to this long before it starts: the writer's flushes are in.
OPEN_DAY_LAG = dt.timedelta(minutes=1)

# What a visit takes from its entry (first hit) for all of its pages and events.
VISIT_ATTRIBUTES = ("referrer_host", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "click_id")
ENTRY_COLUMNS = (*VISIT_ATTRIBUTES, "browser", "os", "device")
# What a link turns a pseudonymised hit into: the consented key, identified, the choice's categories.
LINKED = ("identified", "visitor", "granted", "click_id")

# What questions and visits read of a hit: never its event id, category, status, duration, address
# prefix, browser version or properties, so hits are linked without them (the join carries every
# column it is given, which cost the funnel a third of its time on 10 M events).
HIT_COLUMNS = tuple(
    n
    for n, _ in EVENT_COLUMNS
    if n not in {"event_id", "category", "status", "duration_ms", "ip_prefix", "browser_version", "props"}
)

# -- the one definition ------------------------------------------------------------------------------


def linked_hits_sql(events: str, days: str, *, one_site: bool = True, hits: str = "") -> str:
    """The stored hits of ``days`` (a condition on ``toDate(ts)``) as every query reads them (HIT_COLUMNS).

    A pseudonymised hit followed, on the same day and within VISIT_GAP_SECONDS, by a link record of
    its key (written by a choice that granted analytics) takes the link's consented key, granted
    categories and click id; link records themselves are no hits, nor are bots' hits. With
    ``one_site`` only the hits of ``{site:String}`` are read; with ``hits`` (a condition on ``e``),
    only the hits that meet it.
    """
    names = HIT_COLUMNS
    gap_ms = VISIT_GAP_SECONDS * 1000
    linked = f"(l.lv != 0 AND toUnixTimestamp64Milli(l.lts) - toUnixTimestamp64Milli(e.ts) <= {gap_ms})"

    def remap(n: str) -> str:
        if n == "click_id":  # the landing hit's own click id was not kept: the link's is the visit's
            return f"if({linked} AND e.click_id = '', l.l_click_id, e.click_id) AS click_id"
        return f"if({linked}, l.l_{n}, e.{n}) AS {n}" if n in LINKED else f"e.{n} AS {n}"

    site = "site = {site:String} AND " if one_site else ""
    return f"""
            SELECT {", ".join(remap(n) for n in names)}
            FROM {events} AS e
            ASOF LEFT JOIN (
                SELECT site AS l_site, JSONExtractUInt(props, '{LINK_PSEUDONYM}') AS p, toUInt8(0) AS pseudonymous,
                       ts AS lts, visitor AS lv, identified AS l_identified, visitor AS l_visitor,
                       granted AS l_granted, click_id AS l_click_id
                FROM {events}
                WHERE {site}kind = '{LINK}' AND identified = 1 AND {days}
            ) AS l ON e.site = l.l_site AND e.visitor = l.p AND e.identified = l.pseudonymous AND e.ts <= l.lts
            WHERE {site}e.kind != '{LINK}' AND e.is_bot = 0 AND {days}{f" AND {hits}" if hits else ""}"""


# Per site, key and day, in time order: a visit starts at a hit more than the gap after the one before.
VISIT_WINDOW = (
    "OVER (PARTITION BY site, identified, visitor, toDate(ts) ORDER BY ts "
    "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
)
VISIT_START = (
    f"toUInt8(toUnixTimestamp64Milli(ts) - lagInFrame(toUnixTimestamp64Milli(ts), 1, toInt64(0)) {VISIT_WINDOW}"
    f" > {VISIT_GAP_SECONDS * 1000})"
)


# A visit's page views and events in order (``v``: its hits), each with its time after the visit's
# start, its text and its id (funnels).
VISIT_STEPS = f"""arrayFilter(x -> x.2 OR x.3, v) AS stepped,
       arrayMap(x -> toUInt32(x.1 - v[1].1), stepped) AS step_ms,
       arrayMap(x -> if(x.2, concat('{STEP_PAGE}', x.4), concat('{STEP_EVENT}', x.8)), stepped) AS steps,
       {STEP_IDS} AS step_ids"""


def visit_rows_sql(events: str, days: str, *, one_site: bool = True, keys: str = "", hits: str = "") -> str:
    """One row per visit of ``days`` (columns VISIT_FIELDS), from ``linked_hits_sql``; with ``keys``
    (what ``(identified, visitor) IN`` takes: a query in parentheses, an array parameter), only the
    visits of those keys, and with ``hits`` (a condition on the hits ``e`` before they are linked)
    only those read.

    Entry and exit pages are the visit's first and last page views; its duration runs from the first
    page view to the last (whole seconds); a bounce is a visit of exactly one page view. A visit of
    requests or events alone has no pages and is no bounce: it counts its visitor, not as a visit.
    Each key's hits of a day are gathered in time order and cut where a gap exceeds VISIT_GAP_SECONDS
    (arrays: one grouping pass, no sort of all hits as a window function would need).
    """
    gap_ms = VISIT_GAP_SECONDS * 1000
    entry = ", ".join(f"v[1].5.{i} AS {n}" for i, n in enumerate(ENTRY_COLUMNS, start=1))
    first_page, last_page = "arrayFirst(x -> x.2, v)", "arrayLast(x -> x.2, v)"
    return f"""
SELECT site, day, identified, visitor,
       fromUnixTimestamp64Milli(v[1].1, 'UTC') AS start_ts, fromUnixTimestamp64Milli(v[-1].1, 'UTC') AS end_ts,
       {first_page}.4 AS entry_page, {last_page}.4 AS exit_page,
       toUInt32(arrayCount(x -> x.2, v)) AS pageviews, toUInt32(arrayCount(x -> x.3, v)) AS events,
       toUInt32(if(pageviews = 0, 0, intDiv({last_page}.1, 1000) - intDiv({first_page}.1, 1000))) AS duration,
       toUInt8(pageviews = 1) AS bounce,
       {entry},
       arrayReduce('groupArrayIntersect', arrayMap(x -> x.6, v)) AS granted,
       -- per path (per name): its counts summed, paths of requests alone (all counts 0) left out
       arrayReduce('sumMap', [arrayMap(x -> x.7, v)], [arrayMap(x -> toUInt64(x.2), v)],
                   [arrayMap(x -> toUInt64(x.3), v)]) AS by_path,
       by_path.1 AS paths,
       arrayMap(n -> toUInt32(n), by_path.2) AS path_views,
       arrayMap(n -> toUInt32(n), by_path.3) AS path_events,
       arrayReduce('sumMap', [arrayMap(x -> x.8, v)], [arrayMap(x -> toUInt64(x.3), v)]) AS by_name,
       by_name.1 AS names,
       arrayMap(n -> toUInt32(n), by_name.2) AS name_events,
       -- every hit counts in the third sum, so an hour of requests alone is kept (its visitor was there)
       arrayReduce('sumMap', [arrayMap(x -> toUInt8(intDiv(x.1 % 86400000, 3600000)), v)],
                   [arrayMap(x -> toUInt64(x.2), v)], [arrayMap(x -> toUInt64(x.3), v)],
                   [arrayMap(x -> toUInt64(1), v)]) AS by_hour,
       by_hour.1 AS hours,
       arrayMap(n -> toUInt32(n), by_hour.2) AS hour_views,
       arrayMap(n -> toUInt32(n), by_hour.3) AS hour_events,
       {VISIT_STEPS}
FROM (
    SELECT key_site AS site, key_identified AS identified, key AS visitor, day,
           arrayJoin(arraySplit((h, s) -> s, hits,
               arrayMap((gap, i) -> i = 1 OR gap > {gap_ms}, arrayDifference(arrayMap(h -> h.1, hits)),
                        arrayEnumerate(hits)))) AS v
    FROM (
        SELECT any(site) AS key_site, any(identified) AS key_identified, any(visitor) AS key, any(toDate(ts)) AS day,
               arraySort(h -> h.1, groupArray((toUnixTimestamp64Milli(ts), {PAGEVIEW}, kind = 'event',
                   if({PAGEVIEW}, path, ''), ({", ".join(ENTRY_COLUMNS)}), granted,
                   path, if(kind = 'event', name, '')))) AS hits
        FROM ({linked_hits_sql(events, days, one_site=one_site, hits=hits)})
        {f"WHERE (identified, visitor) IN {keys}" if keys else ""}
        -- one 64-bit key per (site, key, day) groups faster than the four columns
        GROUP BY cityHash64(site, identified, visitor, toDate(ts))
    )
)"""


# -- reading -----------------------------------------------------------------------------------------


def fresh_builds(
    store: Store, start: dt.date, end: dt.date, cluster: str = ""
) -> tuple[dict[dt.date, int], set[dt.date]]:
    """For the days from ``start`` to ``end``: those whose latest build still matches the events
    (day → build id), and those holding events at all. Two small queries: joined in ClickHouse they
    took twice as long."""
    counts = events_by_day(store, start, end, cluster)
    builds = store.query_rows(
        f"SELECT day, max(build), argMax(events, build) FROM {store.table(BUILDS_TABLE)} "
        f"WHERE day BETWEEN {{start:Date}} AND {{end:Date}} AND {WHOLE} GROUP BY day HAVING {WITH_STEPS}",
        {"start": start, "end": end},
    )
    fresh = {day: int(build) for day, build, built in builds if counts.get(day, 0) == int(built) and int(built)}
    return fresh, {day for day, n in counts.items() if n}


@dataclass(frozen=True, slots=True)
class Partial:
    """The build of an open day a reader can take: its id and the time (ms) it read hits up to; with
    its open keys once looked up (``look_up_open_keys``)."""

    day: dt.date
    build: int
    upto_ms: int
    # The open keys as (identified, visitor) pairs; None: not looked up, the query finds them itself.
    keys: tuple[tuple[int, int], ...] | None = None
    # Every visitor key a hit of theirs can carry before the link: their own and the pseudonyms
    # their links of the day name.
    reach: tuple[int, ...] = ()


# At most this many open keys are written into a query; past it the query finds them itself.
OPEN_KEYS_INLINE = 5000


# Builds of whole closed days; an open day's build has its ``upto``.
WHOLE = "toUnixTimestamp64Milli(upto) = 0"
# What a build stores, recorded in ``visit_builds.steps``: 1, the visits' steps (migration 10); 2, also
# their step ids and the sums' hashed visitor sets (migration 11). A day whose latest build is of
# another format is stale and built again, by this release and by an earlier one alike.
BUILD_FORMAT = 2
WITH_STEPS = f"argMax(steps, build) = {BUILD_FORMAT}"
# An open day's events count is recorded with the top bit set: a reader that knows only whole builds
# (one of a version before open days, during an upgrade) compares it with the day's count and never
# takes the open day's build for the whole day.
OPEN_MARK = 1 << 63


def partial_builds(store: Store, days: Iterable[dt.date]) -> list[Partial]:
    """Of ``days``, those whose latest open-day build still matches its events: as many rows before
    its ``upto`` as it counted (a late replay or an erasure makes the day wholly live again)."""
    wanted = sorted(days)
    if not wanted:
        return []
    found = []
    for day, build, upto_ms, counted in store.query_rows(
        f"SELECT day, max(build), toUnixTimestamp64Milli(argMax(upto, build)), argMax(events, build) "
        f"FROM {store.table(BUILDS_TABLE)} WHERE day IN {{days:Array(Date)}} AND NOT {WHOLE} GROUP BY day "
        f"HAVING {WITH_STEPS}",
        {"days": wanted},
    ):
        if _events_before(store, day, int(upto_ms)) == int(counted) - OPEN_MARK:
            found.append(Partial(day, int(build), int(upto_ms)))
    return found


def _events_before(store: Store, day: dt.date, upto_ms: int) -> int:
    rows = store.query_rows(
        f"SELECT count() FROM {store.table('events')} "
        "WHERE toDate(ts) = {day:Date} AND toUnixTimestamp64Milli(ts) < {upto:Int64}",
        {"day": day, "upto": upto_ms},
    )
    return int(rows[0][0])


def look_up_open_keys(store: Store, events: str, partial: Partial, site: str) -> Partial:
    """``partial`` with ``site``'s open keys and their reach looked up, so that a query reads and links
    only those keys' hits of the day (and none when there are none); unchanged past OPEN_KEYS_INLINE."""
    rows = store.query_rows(
        f"SELECT DISTINCT identified, visitor FROM ({open_keys_sql(events, partial)}) LIMIT {OPEN_KEYS_INLINE + 1}",
        {"site": site},
    )
    if len(rows) > OPEN_KEYS_INLINE:
        return partial
    keys = tuple(sorted((int(i), int(v)) for i, v in rows))
    consented = [v for i, v in keys if i == 1]
    named: set[int] = set()
    if consented:
        named = {
            int(p)
            for (p,) in store.query_rows(
                f"SELECT DISTINCT JSONExtractUInt(props, '{LINK_PSEUDONYM}') FROM {events} "
                f"WHERE site = {{site:String}} AND kind = '{LINK}' AND identified = 1 AND toDate(ts) = {{day:Date}} "
                "AND visitor IN {keys:Array(UInt64)}",
                {"site": site, "day": partial.day, "keys": consented},
            )
        }
    return replace(partial, keys=keys, reach=tuple(sorted({v for _, v in keys} | named)))


def open_keys_sql(events: str, partial: Partial) -> str:
    """The keys of ``partial``'s day seen since its ``upto`` minus the gap: each row's own key and the
    pseudonymised key a link names. Their visits may differ from the stored ones: they are made live."""
    since = partial.upto_ms - VISIT_GAP_SECONDS * 1000
    where = (
        f"site = {{site:String}} AND toDate(ts) = '{partial.day.isoformat()}' "
        f"AND toUnixTimestamp64Milli(ts) >= {int(since)}"
    )
    return (
        f"SELECT identified, visitor FROM {events} WHERE {where} "
        f"UNION ALL SELECT toUInt8(0), JSONExtractUInt(props, '{LINK_PSEUDONYM}') FROM {events} "
        f"WHERE {where} AND kind = '{LINK}'"
    )


def _day_of_event(cluster: str) -> str:
    # The partition id is the day: counting by it reads no column (deleted rows are still left out).
    # A Distributed table is not relied on to pass the virtual column through: it reads the time.
    return "toDate(ts)" if cluster else "toDate(_partition_id)"


def events_by_day(store: Store, start: dt.date, end: dt.date, cluster: str = "") -> dict[dt.date, int]:
    """Every site's stored event rows per day from ``start`` to ``end`` (the freshness measure)."""
    rows = store.query_rows(
        f"SELECT {_day_of_event(cluster)} AS d, count() FROM {store.table('events')} "
        "WHERE toDate(ts) BETWEEN {start:Date} AND {end:Date} GROUP BY d",
        {"start": start, "end": end},
    )
    return {day: int(n) for day, n in rows}


def visits_source(
    events: str,
    visits: str,
    built: Iterable[int],
    live: bool,
    partial: Iterable[Partial],
    params: dict[str, Any],
) -> str:
    """The visits of ``{site:String}`` from ``{start:Date}`` to ``{end:Date}`` as one subquery: the
    stored rows of the ``built`` build ids, those of each ``partial`` build with the visits of its open
    keys made live, then (``live``) the rows of ``{live_days:Array(Date)}`` made from the hits that
    begin within the last ``{keep:UInt32}`` months (the builds' days lie wholly within them). Open
    keys looked up go into the query's ``params``, as arrays: the engine reads them faster than the
    same keys written out."""
    fields = ", ".join(VISIT_FIELDS)
    stored = (
        f"SELECT {fields} FROM {visits} WHERE site = {{site:String}} AND day BETWEEN {{start:Date}} AND {{end:Date}}"
    )
    parts = []
    ids = ", ".join(str(int(b)) for b in built)
    if ids:
        parts.append(f"{stored} AND build IN ({ids})")
    for p in partial:
        hits = ""
        if p.keys is None:
            keys = f"({open_keys_sql(events, p)})"
        elif not p.keys:
            parts.append(f"{stored} AND build = {int(p.build)}")
            continue
        else:
            name = f"open_{p.day:%Y%m%d}"
            params[f"{name}_keys"], params[f"{name}_reach"] = list(p.keys), list(p.reach)
            keys = f"{{{name}_keys:Array(Tuple(UInt8, UInt64))}}"
            hits = f"e.visitor IN {{{name}_reach:Array(UInt64)}}"
        parts.append(f"{stored} AND build = {int(p.build)} AND (identified, visitor) NOT IN {keys}")
        made = visit_rows_sql(events, f"toDate(ts) = '{p.day.isoformat()}'", keys=keys, hits=hits)
        parts.append(f"SELECT {fields} FROM ({made})")
    if live or not parts:
        # Only a live day can begin before the raw retention (its first day is cut at this time of
        # day): the days of builds read here all lie wholly within it, so their rows need no check.
        live_rows = visit_rows_sql(events, "toDate(ts) IN {live_days:Array(Date)}")
        parts.append(f"SELECT {fields} FROM ({live_rows}) WHERE start_ts >= now() - toIntervalMonth({{keep:UInt32}})")
    return "(" + "\nUNION ALL\n".join(parts) + ")"


# A day's sums as a range's columns (schema.RANGE_COLUMNS): one day is its own busiest.
DAY_AS_RANGE = RANGE_COLUMNS.replace("peak", "pseudonymous AS peak")


def sums_groups_sql(
    sums: str, kinds: Iterable[str], built: Iterable[int], others: str, where: str, *, ranged: str = ""
) -> str:
    """Per list and item of the lists ``kinds`` (schema.SUM_LISTS) of ``{site:String}`` from
    ``{start:Date}`` to ``{end:Date}``: its consented keys, pseudonymised keys (summed over days, and
    the busiest day's), page views, events, visits, bounces and seconds in visits. The days of the
    ``built`` whole builds come from their stored sums, or (``ranged``: the range sums table, with
    ``{builds:UInt64}`` their key) from those sums merged once (``ready_range_sums``); the visits of
    ``others`` (a visits subquery of every other day, or empty) matching ``where`` are summed the
    same way, in one pass."""
    kinds = list(kinds)
    ids = ", ".join(str(int(b)) for b in built) or "0"
    listed = ", ".join(f"'{k}'" for k in kinds)
    if ranged:
        # Two answers merging one range at once can both store it: each list is read from one of its
        # merges (GLOBAL: on a cluster the merge's rows lie on every shard).
        stored = (
            f"SELECT {RANGE_COLUMNS} FROM {ranged} WHERE site = {{site:String}} AND builds = {{builds:UInt64}} "
            f"AND list IN ({listed}) AND (list, merge) GLOBAL IN (SELECT list, min(merge) FROM {ranged} "
            "WHERE site = {site:String} AND builds = {builds:UInt64} GROUP BY list)"
        )
    else:
        stored = (
            f"SELECT {DAY_AS_RANGE} FROM {sums} WHERE site = {{site:String}} AND day BETWEEN {{start:Date}} "
            f"AND {{end:Date}} AND build IN ({ids}) AND list IN ({listed})"
        )
    parts = [stored]
    if others:
        parts.append(f"SELECT {DAY_AS_RANGE} FROM ({sums_sql(kinds, others, where)})")
    return f"""
SELECT list, item, {VISITOR_SET}Merge(consented_hashes), sum(pseudonymous), max(peak), sum(pageviews),
       sum(events), sum(visits), sum(bounces), sum(duration)
FROM ({" UNION ALL ".join(parts)})
GROUP BY list, item"""


# -- building ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayBuild:
    """One day's build: its id, the events it was made from and the visits it holds."""

    day: dt.date
    build: int
    events: int
    visits: int
    seconds: float


def closed_day(now: dt.datetime) -> dt.date:
    """The last day that is closed at ``now``: its visits can no longer change, barring late rows."""
    return (now.astimezone(dt.UTC) - SETTLE).date() - dt.timedelta(days=1)


def days_to_build(store: Store, first: dt.date, last: dt.date, cluster: str = "") -> list[dt.date]:
    """The days from ``first`` to ``last`` never built or built from other events than stored now, newest first."""
    if last < first:
        return []
    counts = events_by_day(store, first, last, cluster)
    builds = {
        day: int(count)
        for day, count in store.query_rows(
            f"SELECT day, argMax(events, build) FROM {store.table(BUILDS_TABLE)} "
            f"WHERE day BETWEEN {{start:Date}} AND {{end:Date}} AND {WHOLE} GROUP BY day HAVING {WITH_STEPS}",
            {"start": first, "end": last},
        )
    }
    stale = {d for d, n in counts.items() if builds.get(d) != n} | {
        d for d, n in builds.items() if counts.get(d, 0) != n
    }
    return sorted(stale, reverse=True)


def build_day(store: Store, day: dt.date, cluster: str = "") -> DayBuild:
    """Store the visits of ``day`` under a new build id and make them the day's (idempotent, safe to race)."""
    began = time.monotonic()
    # Counted first: rows arriving during the build make the recorded count low, so the day is stale, not wrong.
    count = events_by_day(store, day, day, cluster).get(day, 0)
    build = time.time_ns()
    sync = {"insert_distributed_sync": 1} if cluster else None
    fields = ", ".join(VISIT_FIELDS)
    rows = visit_rows_sql(store.table("events"), "toDate(ts) = {day:Date}", one_site=False)
    store.command(
        f"INSERT INTO {store.table(VISITS_TABLE)} (build, {fields}) SELECT {build} AS build, {fields} FROM ({rows})",
        {"day": day},
        settings=sync,
    )
    source = f"(SELECT * FROM {store.table(VISITS_TABLE)} WHERE day = {{day:Date}} AND build = {build})"
    store.command(sums_insert(store, source), {"day": day}, settings=sync)
    store.insert_lines(
        BUILDS_TABLE,
        [json.dumps([day.isoformat(), build, count, BUILD_FORMAT]).encode()],
        ["day", "build", "events", "steps"],
        settings=sync,
    )
    _drop_older_builds(store, day, build, cluster)
    held = store.query_rows(
        f"SELECT count() FROM {store.table(VISITS_TABLE)} WHERE day = {{day:Date}} AND build = {build}", {"day": day}
    )
    return DayBuild(day, build, count, int(held[0][0]), time.monotonic() - began)


def build_open_day(store: Store, day: dt.date, *, now: dt.datetime, cluster: str = "") -> DayBuild | None:
    """Store the settled part of ``day``, a day not yet closed: from its hits before ``upto`` (now less
    OPEN_DAY_LAG, at most the day's end), the visits that ended more than the gap before ``upto``.
    None when nothing of the day can have settled yet."""
    began = time.monotonic()
    day_start = dt.datetime.combine(day, dt.time(), dt.UTC)
    upto = min(now.astimezone(dt.UTC) - OPEN_DAY_LAG, day_start + dt.timedelta(days=1))
    if upto - dt.timedelta(seconds=VISIT_GAP_SECONDS) <= day_start:
        return None
    upto_ms = int(upto.timestamp() * 1000)
    count = _events_before(store, day, upto_ms)
    build = time.time_ns()
    sync = {"insert_distributed_sync": 1} if cluster else None
    fields = ", ".join(VISIT_FIELDS)
    hits = "toDate(ts) = {day:Date} AND toUnixTimestamp64Milli(ts) < {upto:Int64}"
    store.command(
        f"INSERT INTO {store.table(VISITS_TABLE)} (build, {fields}) SELECT {build} AS build, {fields} "
        f"FROM ({visit_rows_sql(store.table('events'), hits, one_site=False)}) "
        f"WHERE toUnixTimestamp64Milli(end_ts) < {{upto:Int64}} - {VISIT_GAP_SECONDS * 1000}",
        {"day": day, "upto": upto_ms},
        settings=sync,
    )
    stamp = upto.strftime("%Y-%m-%d %H:%M:%S.") + f"{upto.microsecond // 1000:03d}"
    store.insert_lines(
        BUILDS_TABLE,
        [json.dumps([day.isoformat(), build, count | OPEN_MARK, stamp, BUILD_FORMAT]).encode()],
        ["day", "build", "events", "upto", "steps"],
        settings=sync,
    )
    _drop_older_builds(store, day, build, cluster)
    held = store.query_rows(
        f"SELECT count() FROM {store.table(VISITS_TABLE)} WHERE day = {{day:Date}} AND build = {build}", {"day": day}
    )
    return DayBuild(day, build, count, int(held[0][0]), time.monotonic() - began)


def build_open_days(
    store: Store,
    *,
    cluster: str = "",
    now: dt.datetime | None = None,
    progress: Callable[[DayBuild], object] | None = None,
) -> list[DayBuild]:
    """Build the settled part of each day not yet closed (today, and yesterday until it settles)."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    day, done = closed_day(now) + dt.timedelta(days=1), []
    while day <= now.date():
        result = build_open_day(store, day, now=now, cluster=cluster)
        if result is not None:
            logger.info("visits of %s so far built: %d visits from %d events", day, result.visits, result.events)
            if progress is not None:
                progress(result)
            done.append(result)
        day += dt.timedelta(days=1)
    return done


def _drop_older_builds(store: Store, day: dt.date, build: int, cluster: str) -> None:
    """Delete the day's builds older than ``build``, in the background: readers no longer see them.

    Older builds only: a concurrent builder's newer build stays, and readers take the newest."""
    older = store.query_rows(
        f"SELECT count() FROM {store.table(BUILDS_TABLE)} WHERE day = {{day:Date}} AND build < {int(build)}",
        {"day": day},
    )
    if not int(older[0][0]):
        return  # the day's first build: nothing to delete
    # Each table's partition of the day only: no other day's parts are checked or rewritten.
    for table, partition in (
        (VISITS_TABLE, f"'{day.isoformat()}'"),
        (VISIT_SUMS_TABLE, f"'{day.isoformat()}'"),
        (BUILDS_TABLE, f"{day:%Y%m}"),
    ):
        delete = (
            f"ALTER TABLE {store.table(table)} DELETE IN PARTITION {partition} "
            f"WHERE day = '{day.isoformat()}' AND build < {int(build)}"
        )
        for statement in render([delete], cluster):
            # Not waited for (the embedded engine waits by default, some 10 s a table): readers
            # already take the newest build, so the old rows only have to go eventually.
            store.command(statement, settings={"mutations_sync": 0})


def build_closed_days(
    store: Store,
    *,
    events_months: int,
    cluster: str = "",
    now: dt.datetime | None = None,
    progress: Callable[[DayBuild], object] | None = None,
    keep_going: Callable[[], bool] = lambda: True,
) -> list[DayBuild]:
    """Build every closed day of the retained range that is not built or is stale, newest first,
    while ``keep_going()`` says so."""
    now = now or dt.datetime.now(dt.UTC)
    last = closed_day(now)
    first = months_before(now.date(), events_months) + dt.timedelta(days=1)
    done = []
    for day in days_to_build(store, first, last, cluster):
        if not keep_going():
            break
        result = build_day(store, day, cluster)
        logger.info("visits of %s built: %d visits from %d events", day, result.visits, result.events)
        if progress is not None:
            progress(result)
        done.append(result)
    return done


def months_before(day: dt.date, months: int) -> dt.date:
    """``day`` moved back ``months`` calendar months (clamped to the month's last day)."""
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month + 1, d)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def build_params(fresh: Mapping[dt.date, int], held: set[dt.date]) -> tuple[list[int], list[dt.date]]:
    """The build ids to read and the days to make live: those with events and no fresh build."""
    return [fresh[d] for d in sorted(fresh)], sorted(held - set(fresh))


def describe(result: DayBuild) -> str:
    """One progress line for ``result``."""
    return f"{result.day}: {result.visits} visits from {result.events} events in {result.seconds:.1f}s"
