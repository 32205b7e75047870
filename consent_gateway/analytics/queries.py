# ruff: noqa: S608 - SQL is assembled only from fixed fragments; every request value is a {name:Type} parameter.
"""The analytics queries: parameterised SQL over ``events``, the daily rollup and the receipts.

Counting rules, applied everywhere:

- Visitors: consented rows (``identified = 1``) carry a key derived from the consent id, stable
  across days. Pseudonymised rows carry a key salted per day, so the same person is a new key each
  day: they are counted once per day (``uniqExact((visitor, day))``). The sum is an estimate, and
  every response lists it under ``estimates``.
- k-anonymity: a group is shown only if it provably holds at least k distinct people. The bound
  used is ``max(consented visitors, largest single-day count of pseudonymised visitors)``, which
  never counts one pseudonymised person seen on many days as many people.
- Campaign and click attribution come only from rows whose visitor granted ``marketing``.
- Visits are runs of page views by one visitor key on one day with gaps under 30 minutes; a
  pseudonymised key cannot link across midnight (UTC), so neither can a visit.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RequestError
from ..settings import Settings
from ..store import Store
from .params import DIMENSIONS, ROLLUP_DIMENSIONS, Query

ROLLUP_TABLE = "events_daily"
SUPPRESSED = "other (suppressed)"
VISIT_GAP_SECONDS = 1800
PAGEVIEW = "kind = 'visit' AND name = 'pageview'"

NOTES = {
    "visitors": (
        "estimate: pseudonymised visitors get a new key every day, so one person visiting on several days "
        "counts once per day; consented visitors are counted once over the whole range"
    ),
    "visits": "visits end after 30 minutes without a page view and never span midnight (UTC)",
    "marketing": "campaign and click attribution come only from visitors who granted marketing",
    "rollup": (
        "served from the anonymous daily rollup (no visitor keys): visitor counts are unavailable and "
        "groups with fewer than k hits are suppressed"
    ),
}


@dataclass
class Result:
    """One endpoint's answer: named columns, rows, and what the reader must know about them."""

    columns: list[str]
    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {**self.meta, "columns": self.columns, "results": self.rows}

    def as_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if row.get(c) is None else _csv_safe(row.get(c)) for c in self.columns])
        return out.getvalue()


def _csv_safe(value: Any) -> Any:
    # A spreadsheet runs cells starting with = + - @ as formulas; page paths and campaign names are visitor input.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class Analytics:
    """Runs validated queries against one store for one settings object."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.k = settings.k_anonymity
        self.retention_months = settings.events_retention_months
        self.categories = settings.category_keys
        self.events = store.table("events")
        self.rollup = store.table(ROLLUP_TABLE)
        self.receipts = store.table("consent_receipts")

    def __repr__(self) -> str:
        return f"Analytics({self.store!r}, k={self.k})"

    def run(self, q: Query, *, today: dt.date | None = None) -> Result:
        """Answer ``q``; ``today`` fixes the raw-retention cut-off (tests)."""
        today = today or dt.datetime.now(dt.UTC).date()
        rollup = self._use_rollup(q, today)
        if q.endpoint == "aggregate":
            result = self._aggregate_rollup(q) if rollup else self._aggregate(q)
        elif q.endpoint == "timeseries":
            result = self._timeseries_rollup(q) if rollup else self._timeseries(q)
        elif q.endpoint == "breakdown":
            result = self._breakdown_rollup(q) if rollup else self._breakdown(q)
        elif q.endpoint == "funnel":
            result = self._funnel(q)
        else:
            result = self._consent_rates(q)
        notes = dict(result.meta.pop("notes", {}))
        if q.marketing_only:
            notes["marketing"] = NOTES["marketing"]
        if rollup:
            notes["rollup"] = NOTES["rollup"]
        result.meta = {
            "query": q.as_dict(),
            "source": "rollup" if rollup else ("receipts" if q.endpoint == "consent-rates" else "raw"),
            "k": self.k,
            **result.meta,
            "notes": notes,
        }
        return result

    # -- shared pieces ----------------------------------------------------------------------

    def _use_rollup(self, q: Query, today: dt.date) -> bool:
        if q.endpoint in ("funnel", "consent-rates"):
            return False
        if q.source == "raw":
            return False
        cutoff = _months_before(today, self.retention_months)
        if q.source == "auto" and q.start >= cutoff:
            return False
        unsupported = [d for d, _ in q.filters if d not in ROLLUP_DIMENSIONS]
        if q.dimension and q.dimension not in ROLLUP_DIMENSIONS:
            unsupported.insert(0, q.dimension)
        if q.endpoint == "timeseries" and q.interval == "hour":
            unsupported.insert(0, "interval=hour")
        if unsupported:
            why = (
                "source=rollup was asked for"
                if q.source == "rollup"
                else f"the range starts before {cutoff} (raw retention)"
            )
            raise RequestError(
                f"{', '.join(unsupported)} cannot be served from the daily rollup, and {why}; "
                f"use one of {', '.join(sorted(ROLLUP_DIMENSIONS))} or a range from {cutoff} on",
                field="source" if q.source == "rollup" else "from",
            )
        return True

    def _where(self, q: Query, params: dict[str, Any], *, rollup: bool = False) -> str:
        params.update(site=q.site, start=q.start, end=q.end)
        if rollup:
            clauses = ["site = {site:String}", "day BETWEEN {start:Date} AND {end:Date}"]
        else:
            params["keep"] = self.retention_months
            clauses = [
                "site = {site:String}",
                "toDate(ts) BETWEEN {start:Date} AND {end:Date}",
                "ts >= now() - toIntervalMonth({keep:UInt32})",
                "is_bot = 0",
            ]
        if q.marketing_only:
            clauses.append("marketing = 1" if rollup else "has(granted, 'marketing')")
        for i, (dim, value) in enumerate(q.filters):
            params[f"f{i}"] = value
            if dim == "event_name":
                clauses.append(f"(kind = 'event' AND name = {{f{i}:String}})")
            else:
                clauses.append(f"{DIMENSIONS[dim]} = {{f{i}:String}}")
        return " AND ".join(clauses)

    def _visitor_groups(self, q: Query, group: str, *, extra: str = "") -> Iterator[dict[str, Any]]:
        """Per group: visitors (estimate), the k bound, page views and events.

        One flat pass counts consented keys and pseudonymised (key, day) pairs. The k bound also
        needs each group's busiest day of pseudonymised keys; that second pass reads only
        pseudonymised rows, and runs only when some group's size depends on it.
        """
        params: dict[str, Any] = {}
        where = self._where(q, params) + (f" AND {extra}" if extra else "")
        rows = self.store.query_rows(
            f"""
SELECT {group} AS g,
       uniqExactIf(visitor, identified = 1) AS consented_keys,
       uniqExactIf(cityHash64(visitor, toDate(ts)), identified = 0) AS pseudonymous_days,
       countIf({PAGEVIEW}) AS pv,
       countIf(kind = 'event') AS ev
FROM {self.events}
WHERE {where}
GROUP BY g""",
            params,
        )
        peaks: dict[Any, int] = {}
        if any(int(ident) < self.k <= int(ident) + int(days) for _, ident, days, _, _ in rows):
            peaks = {
                g: int(peak)
                for g, peak in self.store.query_rows(
                    f"""
SELECT g, max(pd)
FROM (
    SELECT {group} AS g, toDate(ts) AS d, uniqExact(visitor) AS pd
    FROM {self.events}
    WHERE {where} AND identified = 0
    GROUP BY g, d
)
GROUP BY g""",
                    params,
                )
            }
        for g, identified, pseudo_days, pageviews, events in rows:
            # Without the second pass every group here is either >= k on consented keys alone or
            # below k even counting every pseudonymised day as a new person.
            visitors = int(identified) + int(pseudo_days)
            bound = (
                max(int(identified), peaks.get(g, 0)) if peaks else (visitors if visitors < self.k else int(identified))
            )
            yield {
                "g": g,
                "visitors": visitors,
                "k_visitors": bound,
                "pageviews": int(pageviews),
                "events": int(events),
            }

    def _sessions_sql(self, q: Query, params: dict[str, Any], *, paths: bool = False) -> str:
        """One row per visitor key and day: its sorted page views, visit starts and bounces.

        Without ``paths`` the hits are bare timestamps, which halves the cost of the aggregate.
        """
        where = self._where(q, params)
        hit = "(toUnixTimestamp(ts), path)" if paths else "toUnixTimestamp(ts)"
        seconds = "arrayMap(h -> h.1, hits)" if paths else "hits"
        return f"""
SELECT ident AS identified, vkey AS visitor, d, hits,
       arrayMap((gap, i) -> i = 1 OR gap > {VISIT_GAP_SECONDS},
                arrayDifference({seconds}), arrayEnumerate(hits)) AS starts,
       arrayMap(i -> starts[i] AND (i = length(starts) OR starts[i + 1]), arrayEnumerate(starts)) AS bounced
FROM (
    SELECT any(identified) AS ident, any(visitor) AS vkey, any(toDate(ts)) AS d,
           arraySort(groupArray({hit})) AS hits
    FROM {self.events}
    WHERE {where} AND {PAGEVIEW}
    -- one 64-bit key per (key, day) groups about twice as fast as the three columns
    GROUP BY cityHash64(identified, visitor, toDate(ts))
)"""

    # -- aggregate --------------------------------------------------------------------------

    def _aggregate(self, q: Query) -> Result:
        groups = list(self._visitor_groups(q, "0"))
        params: dict[str, Any] = {}
        visits, bounces = self.store.query_rows(
            f"SELECT sum(arraySum(starts)), sum(arraySum(bounced)) FROM ({self._sessions_sql(q, params)})", params
        )[0]
        visits, bounces = int(visits or 0), int(bounces or 0)
        top = groups[0] if groups else {"visitors": 0, "k_visitors": 0, "pageviews": 0, "events": 0}
        row: dict[str, Any] = {
            "visitors": top["visitors"],
            "visits": visits,
            "pageviews": top["pageviews"],
            "events": top["events"],
            "views_per_visit": round(top["pageviews"] / visits, 2) if visits else 0.0,
            "bounce_rate": round(bounces / visits, 4) if visits else 0.0,
        }
        suppressed = 0 < top["k_visitors"] < self.k
        if suppressed:
            row = dict.fromkeys(row)
        return Result(
            list(row),
            [row],
            {
                "suppressed": suppressed,
                "estimates": ["visitors"],
                "notes": {"visitors": NOTES["visitors"], "visits": NOTES["visits"]},
            },
        )

    def _aggregate_rollup(self, q: Query) -> Result:
        params: dict[str, Any] = {}
        pageviews, events = self.store.query_rows(
            f"SELECT sumIf(hits, {PAGEVIEW}), sumIf(hits, kind = 'event') FROM {self.rollup} "
            f"WHERE {self._where(q, params, rollup=True)}",
            params,
        )[0]
        hits = int(pageviews or 0) + int(events or 0)
        row: dict[str, Any] = {
            "visitors": None,
            "visits": None,
            "pageviews": int(pageviews or 0),
            "events": int(events or 0),
            "views_per_visit": None,
            "bounce_rate": None,
        }
        suppressed = 0 < hits < self.k
        if suppressed:
            row = dict.fromkeys(row)
        return Result(
            list(row),
            [row],
            {
                "suppressed": suppressed,
                "estimates": [],
                "unavailable": ["visitors", "visits", "views_per_visit", "bounce_rate"],
            },
        )

    # -- timeseries -------------------------------------------------------------------------

    def _timeseries(self, q: Query) -> Result:
        bucket = {
            "hour": "toStartOfHour(ts)",
            "day": "toDate(ts)",
            "week": "toMonday(ts)",
            "month": "toStartOfMonth(ts)",
        }[q.interval]
        found = {_bucket_key(g["g"], q.interval): g for g in self._visitor_groups(q, bucket)}
        rows = []
        for key in _buckets(q.start, q.end, q.interval):
            g = found.get(key)
            if g is None:
                rows.append({"date": key, "visitors": 0, "pageviews": 0, "events": 0, "suppressed": False})
            elif g["k_visitors"] < self.k:
                rows.append({"date": key, "visitors": None, "pageviews": None, "events": None, "suppressed": True})
            else:
                rows.append(
                    {
                        "date": key,
                        "visitors": g["visitors"],
                        "pageviews": g["pageviews"],
                        "events": g["events"],
                        "suppressed": False,
                    }
                )
        return Result(
            ["date", "visitors", "pageviews", "events", "suppressed"],
            rows,
            {"estimates": ["visitors"], "notes": {"visitors": NOTES["visitors"]}},
        )

    def _timeseries_rollup(self, q: Query) -> Result:
        bucket = {"day": "day", "week": "toMonday(day)", "month": "toStartOfMonth(day)"}[q.interval]
        params: dict[str, Any] = {}
        found = {
            _bucket_key(b, q.interval): (int(pv), int(ev))
            for b, pv, ev in self.store.query_rows(
                f"SELECT {bucket} AS b, sumIf(hits, {PAGEVIEW}), sumIf(hits, kind = 'event') FROM {self.rollup} "
                f"WHERE {self._where(q, params, rollup=True)} GROUP BY b",
                params,
            )
        }
        rows = []
        for key in _buckets(q.start, q.end, q.interval):
            pv, ev = found.get(key, (0, 0))
            small = 0 < pv + ev < self.k
            rows.append(
                {
                    "date": key,
                    "visitors": None,
                    "pageviews": None if small else pv,
                    "events": None if small else ev,
                    "suppressed": small,
                }
            )
        return Result(
            ["date", "visitors", "pageviews", "events", "suppressed"],
            rows,
            {"estimates": [], "unavailable": ["visitors"]},
        )

    # -- breakdown --------------------------------------------------------------------------

    def _breakdown(self, q: Query) -> Result:
        dim = q.dimension
        if dim == "entry_page":
            return self._breakdown_entry(q)
        extra = PAGEVIEW if dim == "page" else ("kind = 'event'" if dim == "event_name" else "")
        groups = [
            {
                "value": g["g"],
                "visitors": g["visitors"],
                "pageviews": g["pageviews"],
                "events": g["events"],
                "_k": g["k_visitors"],
            }
            for g in self._visitor_groups(q, DIMENSIONS[dim], extra=extra)
        ]
        columns = ["value", "visitors", "pageviews", "events"]
        return self._ranked(
            groups, columns, q.limit, {"estimates": ["visitors"], "notes": {"visitors": NOTES["visitors"]}}
        )

    def _breakdown_entry(self, q: Query) -> Result:
        params: dict[str, Any] = {}
        sql = f"""
SELECT g, uniqExactMerge(ids), sum(pd), max(pd), sum(n), sum(b)
FROM (
    SELECT e.2 AS g, d,
           uniqExactStateIf(visitor, identified = 1) AS ids,
           uniqExactIf(visitor, identified = 0) AS pd,
           count() AS n, countIf(e.3) AS b
    FROM (
        SELECT identified, visitor, d,
               arrayJoin(arrayFilter(x -> x.1,
                   arrayMap(i -> (starts[i], hits[i].2, bounced[i]), arrayEnumerate(starts)))) AS e
        FROM ({self._sessions_sql(q, params, paths=True)})
    )
    GROUP BY g, d
)
GROUP BY g"""
        groups = []
        for g, identified, pseudo_days, pseudo_max, visits, bounces in self.store.query_rows(sql, params):
            groups.append(
                {
                    "value": g,
                    "visitors": int(identified) + int(pseudo_days),
                    "visits": int(visits),
                    "bounce_rate": round(int(bounces) / int(visits), 4) if visits else 0.0,
                    "_k": max(int(identified), int(pseudo_max)),
                    "_bounces": int(bounces),
                }
            )
        return self._ranked(
            groups,
            ["value", "visitors", "visits", "bounce_rate"],
            q.limit,
            {"estimates": ["visitors"], "notes": {"visitors": NOTES["visitors"], "visits": NOTES["visits"]}},
        )

    def _breakdown_rollup(self, q: Query) -> Result:
        dim = q.dimension
        column = {"page": "path", "event_name": "name"}.get(dim, dim)
        extra = PAGEVIEW if dim == "page" else ("kind = 'event'" if dim == "event_name" else "")
        params: dict[str, Any] = {}
        where = self._where(q, params, rollup=True) + (f" AND {extra}" if extra else "")
        groups = [
            {"value": v, "visitors": None, "pageviews": int(pv), "events": int(ev), "_k": int(pv) + int(ev)}
            for v, pv, ev in self.store.query_rows(
                f"SELECT {column} AS v, sumIf(hits, {PAGEVIEW}), sumIf(hits, kind = 'event') FROM {self.rollup} "
                f"WHERE {where} GROUP BY v",
                params,
            )
        ]
        return self._ranked(
            groups,
            ["value", "visitors", "pageviews", "events"],
            q.limit,
            {"estimates": [], "unavailable": ["visitors"]},
        )

    def _ranked(self, groups: list[dict[str, Any]], columns: list[str], limit: int, meta: dict[str, Any]) -> Result:
        """Groups below k fold into one 'other (suppressed)' row; the rest are ranked and cut at limit."""
        shown = [g for g in groups if g["_k"] >= self.k]
        hidden = [g for g in groups if g["_k"] < self.k]
        shown.sort(
            key=lambda g: (-(g.get("visitors") or 0), -(g.get("pageviews") or g.get("visits") or 0), str(g["value"]))
        )
        rows = [{c: g[c] for c in columns} for g in shown[:limit]]
        if hidden:
            other: dict[str, Any] = {"value": SUPPRESSED}
            for c in columns[1:]:
                if c == "bounce_rate":
                    visits = sum(g["visits"] for g in hidden)
                    other[c] = round(sum(g["_bounces"] for g in hidden) / visits, 4) if visits else 0.0
                else:
                    values = [g[c] for g in hidden]
                    other[c] = None if any(v is None for v in values) else sum(values)
            rows.append(other)
        meta = {**meta, "groups": len(shown), "suppressed_groups": len(hidden), "truncated": len(shown) > limit}
        return Result(columns, rows, meta)

    # -- funnel -----------------------------------------------------------------------------

    def _funnel(self, q: Query) -> Result:
        params: dict[str, Any] = {"window": q.window}
        conditions = []
        for i, step in enumerate(q.steps):
            params[f"s{i}"] = step.value
            if step.kind == "page":
                conditions.append(f"({PAGEVIEW} AND path = {{s{i}:String}})")
            else:
                conditions.append(f"(kind = 'event' AND name = {{s{i}:String}})")
        where = self._where(q, params)
        # A pseudonymised key is only valid for one day, so its funnel is bounded by the day too.
        sql = f"""
SELECT level, identified, day, count()
FROM (
    SELECT identified, if(identified = 1, toDate(0), toDate(ts)) AS day,
           windowFunnel({{window:UInt64}})(toDateTime(ts), {", ".join(conditions)}) AS level
    FROM {self.events}
    WHERE {where} AND ({" OR ".join(conditions)})
    GROUP BY identified, visitor, day
)
WHERE level > 0
GROUP BY level, identified, day"""
        reached: list[int] = [0] * len(q.steps)
        identified_reached: list[int] = [0] * len(q.steps)
        pseudo_by_day: list[dict[dt.date, int]] = [{} for _ in q.steps]
        for level, identified, day, count in self.store.query_rows(sql, params):
            for i in range(int(level)):
                reached[i] += int(count)
                if identified:
                    identified_reached[i] += int(count)
                else:
                    pseudo_by_day[i][day] = pseudo_by_day[i].get(day, 0) + int(count)
        rows: list[dict[str, Any]] = []
        first = reached[0] if reached else 0
        for i, step in enumerate(q.steps):
            bound = max(identified_reached[i], max(pseudo_by_day[i].values(), default=0))
            small = 0 < bound < self.k
            rows.append(
                {
                    "step": i + 1,
                    "kind": step.kind,
                    "value": step.value,
                    "visitors": None if small else reached[i],
                    "conversion": None if small else (round(reached[i] / first, 4) if first else 0.0),
                    "suppressed": small,
                }
            )
        return Result(
            ["step", "kind", "value", "visitors", "conversion", "suppressed"],
            rows,
            {"estimates": ["visitors"], "notes": {"visitors": NOTES["visitors"]}},
        )

    # -- consent rates ----------------------------------------------------------------------

    def _consent_rates(self, q: Query) -> Result:
        params: dict[str, Any] = {"site": q.site, "start": q.start, "end": q.end}
        counts = []
        for i, cat in enumerate(self.categories):
            params[f"c{i}"] = cat
            counts.append(f"countIf(has(cats, {{c{i}:String}}))")
        # Each consent id counts once per day, with its last choice of that day.
        sql = f"""
SELECT d, count(), {", ".join(counts)}
FROM (
    SELECT toDate(ts) AS d, consent_id, argMax(categories, ts) AS cats
    FROM {self.receipts}
    WHERE site = {{site:String}} AND toDate(ts) BETWEEN {{start:Date}} AND {{end:Date}}
    GROUP BY d, consent_id
)
GROUP BY d ORDER BY d"""
        found = {row[0]: row[1:] for row in self.store.query_rows(sql, params)}
        columns = ["date", "visitors", *self.categories, "suppressed"]
        rows: list[dict[str, Any]] = []
        totals = [0] * (len(self.categories) + 1)
        for day in _days(q.start, q.end):
            values = found.get(day)
            row: dict[str, Any] = {"date": day.isoformat()}
            if values is None:
                row.update({"visitors": 0, **dict.fromkeys(self.categories, None), "suppressed": False})
            elif values[0] < self.k:
                row.update({"visitors": None, **dict.fromkeys(self.categories, None), "suppressed": True})
            else:
                row["visitors"] = int(values[0])
                row.update(
                    {c: round(int(v) / int(values[0]), 4) for c, v in zip(self.categories, values[1:], strict=True)}
                )
                row["suppressed"] = False
            if values is not None:
                totals = [t + int(v) for t, v in zip(totals, values, strict=True)]
            rows.append(row)
        summary: dict[str, Any] = {"choices": totals[0]}
        if totals[0] >= self.k:
            summary.update({c: round(v / totals[0], 4) for c, v in zip(self.categories, totals[1:], strict=True)})
        return Result(
            columns,
            rows,
            {
                "estimates": [],
                "total": summary,
                "notes": {"visitors": "visitors who chose that day (one consent id, last choice of the day)"},
            },
        )


def _months_before(day: dt.date, months: int) -> dt.date:
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    month += 1
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month, d)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _days(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    day = start
    while day <= end:
        yield day
        day += dt.timedelta(days=1)


def _buckets(start: dt.date, end: dt.date, interval: str) -> list[str]:
    if interval == "hour":
        return [f"{d.isoformat()}T{h:02d}:00:00Z" for d in _days(start, end) for h in range(24)]
    keys: list[str] = []
    for d in _days(start, end):
        if interval == "week":
            d = d - dt.timedelta(days=d.weekday())
        elif interval == "month":
            d = d.replace(day=1)
        key = d.isoformat()
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys


def _bucket_key(value: Any, interval: str) -> str:
    if interval == "hour":
        if isinstance(value, dt.datetime):
            return value.strftime("%Y-%m-%dT%H:00:00Z")
        return str(value)
    if isinstance(value, dt.datetime):
        value = value.date()
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def run_query(
    store: Store,
    settings: Settings,
    endpoint: str,
    items: Sequence[tuple[str, str]] | Mapping[str, str],
    *,
    today: dt.date | None = None,
) -> Result:
    """Parse and run one query (the API and the CLI share this path)."""
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    query = Query.from_items(endpoint, pairs, default_site=settings.site_id, today=today)
    return Analytics(store, settings).run(query, today=today)
