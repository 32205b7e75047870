# ruff: noqa: S608 - SQL is assembled only from fixed fragments; every request value is a {name:Type} parameter.
"""The analytics queries: parameterised SQL over ``events``, the daily rollup and the receipts.

Counting rules, applied everywhere:

- Visitors: consented rows (``identified = 1``) carry a key derived from the consent id, stable
  across days. Pseudonymised rows carry a key salted per day, so the same person is a new key each
  day: they are counted once per day (``uniqExact((visitor, day))``). The sum is an estimate, and
  every response lists it under ``estimates``. Consented keys are counted with ``uniqCombined``
  (schema.VISITOR_SET), as the stored sums hold them: exact up to a few thousand keys a number (so
  always at k), within 0.3 % beyond in the sizes measured (up to 1 M keys), approximate as
  Plausible's ``uniq`` is; page views, visits and events are exact counts.
- k-anonymity: a number is shown only if at least k distinct people provably stand behind it. The
  bound used is ``max(consented visitors, largest single-day count of pseudonymised visitors)``,
  which never counts one pseudonymised person seen on many days as many people. It applies to the
  whole filtered population first (under k: the answer is the suppression alone, no rows), then to
  every row, time bucket and funnel step; groups under k fold into one "other" row only when it
  holds at least two groups and at least k people (counted over the folded groups together).
- The daily rollup holds hits, not people, so it cannot prove k people behind a number: the API
  never answers from it (it stays for operators and trends outside the API).
- Campaign and click attribution come only from rows whose visitor granted the marketing category.
- Attribution follows the visit: every hit takes its visit's entry referrer, UTM values and click id,
  so a campaign is credited with all the pages, events and conversions of the visits it brought.
- Consent on the landing page: a choice that grants analytics writes a link row (``records.LINK``);
  the pseudonymised hits of its key in the 30 minutes before it are read as the chooser's, so the
  visit stays one visitor and one visit (``store.visits.linked_hits_sql``; docs/privacy.md).
- Bots (``is_bot``; receipts: ``device = 'bot'``) are left out of every count, consent rates included.
- Visits are defined once, in ``store/visits.py``: runs of one key's hits on one day with no gap
  over 30 minutes; a pseudonymised key cannot link across midnight (UTC), so neither can a visit.
  Questions whose filters are properties of a visit read visit rows (``_visits``: stored rows of
  built days still matching their events, the other days made from the hits), pages and event
  names and hours through each visit's lists (VISIT_LISTS); named goals, funnels, realtime and
  page or event-name filters read the hits.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from ..errors import RequestError
from ..settings import Settings
from ..store import Store
from ..store.ranges import funnel_key, range_funnel_rows, ready_range_funnel, ready_range_sums
from ..store.schema import (
    RANGE_FUNNELS_TABLE,
    RANGE_SUMS_TABLE,
    STEP_EVENT,
    STEP_PAGE,
    VISIT_SUMS_TABLE,
    VISITOR_SET,
    VISITS_TABLE,
)
from ..store.visits import (
    HIT_COLUMNS,
    PAGEVIEW,
    VISIT_ATTRIBUTES,
    VISIT_GAP_SECONDS,
    VISIT_START,
    VISIT_WINDOW,
    Partial,
    build_params,
    fresh_builds,
    linked_hits_sql,
    look_up_open_keys,
    partial_builds,
    sums_groups_sql,
    visits_source,
)
from .params import DIMENSIONS, EMPTY_VALUE, FunnelStep, Query

# Dimensions whose value is a visit's, taken from its entry (``_hits_sql``).
VISIT_DIMENSIONS = frozenset(
    {"referrer_host", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "click_attribution"}
)

# Filters and breakdowns a visit row answers alone: its entry's attribution and its device.
VISIT_LEVEL = frozenset({*VISIT_DIMENSIONS, "browser", "os", "device"})
# Time buckets by a visit's day (it never spans midnight), or by each hour it had hits in.
VISIT_BUCKETS = {
    "hour": "toDateTime(day, 'UTC') + toIntervalHour(item.1)",
    "day": "day",
    "week": "toMonday(day)",
    "month": "toStartOfMonth(day)",
}

SUPPRESSED = "other (suppressed)"
# The population of a query nobody matches.
NOBODY: Mapping[str, Any] = {"visitors": 0, "k_visitors": 0, "pageviews": 0, "events": 0}
REALTIME_SECONDS = 1800

NOTES = {
    "visitors": (
        "estimate: pseudonymised visitors get a new key every day, so one person visiting on several days "
        "counts once per day; consented visitors are counted once over the whole range"
    ),
    "visits": "visits end after 30 minutes without a page view and never span midnight (UTC)",
    "marketing": (
        "campaign and click attribution come only from visitors who granted marketing, and follow the visit: "
        "a visit's campaign is that of its landing page"
    ),
    "population": (
        "fewer than k = {k} people match this query, so it is answered with the suppression alone: "
        "widen the range or remove a filter"
    ),
    "goals": (
        "a conversion is a visitor who reached a goal (an event name or a page); without 'goals' every "
        "event name is a goal; the conversion rate is converted visitors over all visitors"
    ),
    "compare": "the comparison period ({start} to {end}) is not covered by raw events: no comparison",
    "compare_range": "the comparison period starts on {cutoff}, where raw events begin: it is shorter",
    "realtime": "visitors in the last 30 minutes, shown only when at least k = {k} people stand behind the number",
    "range": (
        "the range asked for starts on {start}, but raw events are kept only from {cutoff}: the answer "
        "covers {cutoff} on (the daily rollup counts hits, not people, so k cannot be applied to it)"
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


def _rate(visitors: int, total: int) -> float:
    """``visitors`` as a share of ``total``, to four places (0 when there is no one)."""
    return round(visitors / total, 4) if total else 0.0


class Analytics:
    """Runs validated queries against one store for one settings object."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.k = settings.k_anonymity
        self.retention_months = settings.events_retention_months
        self.categories = settings.category_keys
        self.marketing = settings.consent.marketing_category
        self.events = store.table("events")
        self.receipts = store.table("consent_receipts")
        self.visits = store.table(VISITS_TABLE)
        self.sums = store.table(VISIT_SUMS_TABLE)
        self.range_sums = store.table(RANGE_SUMS_TABLE)
        self.range_funnels = store.table(RANGE_FUNNELS_TABLE)
        self.cluster = settings.cluster
        # The fresh builds of a range, remembered for the length of one answer (per thread).
        self._answer = threading.local()
        self._linked_hits = _hits_sql(self.events, visits=False)
        self._visit_hits = _hits_sql(self.events, visits=True)

    def __repr__(self) -> str:
        return f"Analytics({self.store!r}, k={self.k})"

    def _hits(self, q: Query, *, by_dimension: bool = True) -> str:
        """The hits ``q`` reads (``_hits_sql``): with each visit's entry attribution only when ``q``
        filters by one of those attributes or (``by_dimension``) groups by one, which costs two
        ordered passes over the range's hits."""
        dims = {d for d, _ in q.filters} | ({q.dimension} if by_dimension else set())
        return self._visit_hits if dims & VISIT_DIMENSIONS else self._linked_hits

    def run(self, q: Query, *, today: dt.date | None = None, now: dt.datetime | None = None) -> Result:
        """Answer ``q``; ``today`` fixes the raw-retention cut-off and ``now`` the last time bucket (tests)."""
        self._answer.fresh, self._answer.opened = {}, {}
        try:
            return self._run(q, today=today, now=now)
        finally:
            self._answer.fresh = self._answer.opened = None

    def _run(self, q: Query, *, today: dt.date | None, now: dt.datetime | None) -> Result:
        now = now or dt.datetime.now(dt.UTC)
        today = today or now.date()
        notes: dict[str, str] = {}
        if q.endpoint not in ("consent-rates", "realtime"):
            q, clamped = self._within_raw(q, today)
            if clamped:
                notes["range"] = clamped
        if q.endpoint == "aggregate":
            result = self._aggregate(q)
            if q.compare:
                result.meta["comparison"] = self._comparison(q, result, today, notes)
        elif q.endpoint == "goals":
            result = self._goals(q)
        elif q.endpoint == "realtime":
            result = self._realtime(q, now)
        elif q.endpoint == "timeseries":
            result = self._timeseries(q, now)
            if q.compare:
                result.meta["comparison"] = self._series_comparison(q, now, today, notes)
        elif q.endpoint == "breakdown":
            result = self._breakdown(q)
        elif q.endpoint == "funnel":
            result = self._funnel(q)
        else:
            result = self._consent_rates(q)
        notes.update(result.meta.pop("notes", {}))
        if q.marketing_only:
            notes["marketing"] = NOTES["marketing"]
        if result.meta.get("suppressed") and not result.rows:
            notes["suppressed"] = NOTES["population"].format(k=self.k)
        result.meta = {
            "query": {"site": q.site} if q.endpoint == "realtime" else q.as_dict(),
            "source": "receipts" if q.endpoint == "consent-rates" else "raw",
            "k": self.k,
            **result.meta,
            "notes": notes,
        }
        return result

    # -- shared pieces ----------------------------------------------------------------------

    def _within_raw(self, q: Query, today: dt.date) -> tuple[Query, str]:
        """``q`` cut to the dates the raw events still cover, and a note when it was cut.

        The daily rollup keeps hits, not people, so it cannot show that k people stand behind a
        number: the API refuses it rather than answer with a weaker rule.
        """
        cutoff = _months_before(today, self.retention_months)
        if q.source == "rollup":
            raise RequestError(
                "source=rollup is refused: the daily rollup counts hits, not people, so it cannot show that "
                f"k = {self.k} people stand behind each number; use source=raw over a range from {cutoff} on",
                field="source",
            )
        if q.end < cutoff:
            raise RequestError(
                f"the range {q.start} to {q.end} ends before {cutoff}: raw events are kept "
                f"{self.retention_months} months and the daily rollup has no visitor counts to apply k to; "
                f"ask for dates from {cutoff} on",
                field="to",
            )
        if q.start >= cutoff:
            return q, ""
        return replace(q, start=cutoff), NOTES["range"].format(start=q.start, cutoff=cutoff)

    def _where(self, q: Query, params: dict[str, Any], *, filters: bool = True) -> str:
        """The rows of ``q``'s site, range and consent; with ``filters``, only those matching its filters."""
        params.update(site=q.site, start=q.start, end=q.end, keep=self.retention_months)
        clauses = [
            "site = {site:String}",
            "toDate(ts) BETWEEN {start:Date} AND {end:Date}",
            "ts >= now() - toIntervalMonth({keep:UInt32})",
            "is_bot = 0",
        ]
        if q.marketing_only:
            params["marketing"] = self.marketing
            clauses.append("has(granted, {marketing:String})")
        if filters:
            clauses.extend(self._filter_clauses(q, params))
        return " AND ".join(clauses)

    def _filter_clauses(self, q: Query, params: dict[str, Any], *, visits: bool = False) -> list[str]:
        """The filters of ``q`` as conditions on hits, or (``visits``) on visit rows: a visit matches a
        page or event-name filter when one of its page views or events does."""
        clauses: list[str] = []
        for i, (dim, value) in enumerate(q.filters):
            # "(none)" names the empty value; click attribution's own "(none)" is a value of its expression.
            params[f"f{i}"] = "" if value == EMPTY_VALUE and dim != "click_attribution" else value
            if visits and dim in ("page", "event_name"):
                clauses.append(f"has({'paths' if dim == 'page' else 'names'}, {{f{i}:String}})")
            elif dim == "event_name":
                clauses.append(f"(kind = 'event' AND name = {{f{i}:String}})")
            else:
                clauses.append(f"{DIMENSIONS[dim]} = {{f{i}:String}}")
        return clauses

    def _visitor_groups(
        self,
        q: Query,
        group: str,
        *,
        extra: str = "",
        extra_params: Mapping[str, Any] | None = None,
        by_dimension: bool = True,
        visit_group: str = "",
        visit_extra: str | None = None,
        visit_list: str = "",
    ) -> Iterator[dict[str, Any]]:
        """Per group: visitors (estimate), the k bound, page views and events.

        Read from the visits when ``q`` and the group are visit-level (``visit_group`` and
        ``visit_extra`` then stand for ``group`` and ``extra``; ``visit_list``: grouped by a
        visit's pages or event names, VISIT_LISTS), else from the hits. One flat pass counts
        consented keys and pseudonymised (key, day) pairs. The k bound also needs each group's
        busiest day of pseudonymised keys (``_peaks``), only when some group's size depends on it.
        """
        params: dict[str, Any] = dict(extra_params or {})
        by_visits = self._by_visits(q, by_dimension=by_dimension)
        if by_visits and (visit_extra is not None or not extra or visit_list):
            source, group, counts = self._visit_rows(q, params, visit_list, visit_group or group)
            where, day, extra = self._visit_where(q, params), "day", visit_extra or ""
        else:
            hits = self._hits(q, by_dimension=by_dimension)
            source, where, day, counts = hits, self._where(q, params), "toDate(ts)", HIT_COUNTS
        where += f" AND {extra}" if extra else ""
        rows = self.store.query_rows(
            f"""
SELECT {group} AS g,
       {VISITOR_SET}If(visitor, identified = 1) AS consented_keys,
       uniqExactIf(cityHash64(visitor, {day}), identified = 0) AS pseudonymous_days,
       {counts}
FROM {source}
WHERE {where}
GROUP BY g""",
            params,
        )
        peaks: dict[Any, int] = {}
        if any(int(ident) < self.k <= int(ident) + int(days) for _, ident, days, _, _ in rows):
            peaks = self._peaks(f"SELECT {group} AS g, {day} AS d, visitor FROM {source} WHERE {where}", params)
        for g, identified, pseudo_days, pageviews, event_count in rows:
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
                "events": int(event_count),
            }

    def _visit_rows(self, q: Query, params: dict[str, Any], listed: str, group: str) -> tuple[str, str, str]:
        """The visits of ``q`` (with ``listed``: one row per item of that list, VISIT_LISTS, the item as
        ``item``), the group expression over them, and their page views' and events' sums."""
        source = self._visits(q, params)
        if not listed:
            return source, group, VISIT_COUNTS
        items, counts = VISIT_LISTS[listed]
        return f"(SELECT *, item FROM {source} ARRAY JOIN {items} AS item)", group, counts

    def _peaks(self, rows: str, params: Mapping[str, Any]) -> dict[Any, int]:
        """Per group ``g`` of ``rows`` (g, d, visitor): its busiest day's count of pseudonymised keys."""
        return {
            g: int(peak)
            for g, peak in self.store.query_rows(
                f"""
SELECT g, max(pd)
FROM (
    SELECT g, d, uniqExact(visitor) AS pd
    FROM ({rows} AND identified = 0)
    GROUP BY g, d
)
GROUP BY g""",
                params,
            )
        }

    # -- visits -----------------------------------------------------------------------------

    def _by_visits(self, q: Query, *, by_dimension: bool = True) -> bool:
        """Whether ``q``'s filters (and, with ``by_dimension``, its breakdown) are all properties of a visit."""
        if any(d not in VISIT_LEVEL for d, _ in q.filters):
            return False
        return (
            not by_dimension
            or q.dimension in ("", "entry_page", "exit_page", *VISIT_LISTS)
            or q.dimension in VISIT_LEVEL
        )

    def _visits(self, q: Query, params: dict[str, Any]) -> str:
        """The visits of ``q``'s site and range: stored rows of its fresh built days, the settled part
        of its open days with the rest made live, the others made live."""
        fresh, held, partial = self._fresh(q.start, q.end)
        built, live = build_params(fresh, held - {p.day for p in partial})
        params.update(site=q.site, start=q.start, end=q.end, live_days=live, keep=self.retention_months)
        return visits_source(self.events, self.visits, built, bool(live), self._opened(q.site, partial), params)

    def _opened(self, site: str, partial: list[Partial]) -> list[Partial]:
        """``partial`` with ``site``'s open keys looked up, once an answer."""
        memo = cast("dict[tuple[str, Partial], Partial] | None", getattr(self._answer, "opened", None))
        if memo is None:  # outside ``run``: nothing to share
            memo = {}
        for p in partial:
            if (site, p) not in memo:
                memo[(site, p)] = look_up_open_keys(self.store, self.events, p, site)
        return [memo[(site, p)] for p in partial]

    def _fresh(self, start: dt.date, end: dt.date) -> tuple[dict[dt.date, int], set[dt.date], list[Partial]]:
        """The built days of ``start`` to ``end`` that still match their events and lie wholly within
        the raw retention (its first day is cut at this time of day, and its visits expire first);
        the days holding events; and of the others, those an open-day build still covers."""
        memo = cast(
            "dict[tuple[dt.date, dt.date], tuple[dict[dt.date, int], set[dt.date], list[Partial]]] | None",
            getattr(self._answer, "fresh", None),
        )
        if memo is not None and (start, end) in memo:
            return memo[(start, end)]
        cutoff = _months_before(dt.datetime.now(dt.UTC).date(), self.retention_months)
        fresh, held = fresh_builds(self.store, start, end, self.cluster)
        fresh = {day: build for day, build in fresh.items() if day > cutoff}
        partial = [p for p in partial_builds(self.store, held - set(fresh)) if p.day > cutoff]
        found = (fresh, held, partial)
        if memo is not None:
            memo[(start, end)] = found
        return found

    def _visit_where(self, q: Query, params: dict[str, Any]) -> str:
        """The visits of ``q``'s consent and filters (site, range and retention are the source's own)."""
        clauses: list[str] = []
        if q.marketing_only:
            params["marketing"] = self.marketing
            clauses.append("has(granted, {marketing:String})")
        clauses.extend(self._filter_clauses(q, params, visits=True))
        return " AND ".join(clauses) or "1"

    def _population(self, q: Query) -> dict[str, Any]:
        """The whole filtered population as one group (zeros when nobody matches)."""
        summed = self._summed(q, "")
        groups = summed[""] if summed is not None else list(self._visitor_groups(q, "0", by_dimension=False))
        return groups[0] if groups else dict(NOBODY)

    def _too_few(self, population: Mapping[str, Any]) -> bool:
        return bool(0 < population["k_visitors"] < self.k)

    def _too_few_behind(self, q: Query, bounds: Iterable[int]) -> bool:
        """Whether ``q``'s filtered population is under k people, given the k bounds of some of its
        groups: each group is part of the population, so one group of k settles it without a pass."""
        return not any(b >= self.k for b in bounds) and self._too_few(self._population(q))

    # -- aggregate --------------------------------------------------------------------------

    def _aggregate(self, q: Query) -> Result:
        # Without named goals every figure is a visit's: one pass over the visits answers them all.
        headline = self._visit_headline(q) if self._by_visits(q, by_dimension=False) and not q.goals else None
        top = headline[0] if headline else self._population(q)
        columns = [
            "visitors",
            "visits",
            "pageviews",
            "events",
            "views_per_visit",
            "bounce_rate",
            "visit_duration",
            "conversions",
            "conversion_rate",
        ]
        meta: dict[str, Any] = {
            "estimates": ["visitors", "conversions"],
            "notes": {"visitors": NOTES["visitors"], "visits": NOTES["visits"], "goals": NOTES["goals"]},
        }
        if self._too_few(top):
            return Result(columns, [dict.fromkeys(columns)], {**meta, "suppressed": True})
        visits, bounces, seconds, views = headline[1] if headline else self._visit_totals(q)
        converted = headline[2] if headline else self._converted(q)
        conversions: int | None = converted["visitors"]
        if conversions and converted["k_visitors"] < self.k:
            conversions = None  # fewer than k people converted: the count would single them out
        row: dict[str, Any] = {
            "visitors": top["visitors"],
            "visits": visits,
            "pageviews": top["pageviews"],
            "events": top["events"],
            # the page views of the visits counted (with filters: all pages of the visits they select)
            "views_per_visit": round(views / visits, 2) if visits else 0.0,
            "bounce_rate": round(bounces / visits, 4) if visits else 0.0,
            "visit_duration": round(seconds / visits) if visits else 0,
            "conversions": conversions,
            "conversion_rate": (
                None if conversions is None else (round(conversions / top["visitors"], 4) if top["visitors"] else 0.0)
            ),
        }
        return Result(columns, [row], {**meta, "suppressed": False})

    def _converted(self, q: Query) -> dict[str, Any]:
        """The people who reached a goal of ``q`` (any event without goals), as one group."""
        goal_params: dict[str, Any] = {}
        groups = self._visitor_groups(
            q,
            "0",
            extra=_goal_condition(q.goals, goal_params),
            extra_params=goal_params,
            by_dimension=False,
            visit_extra=None if q.goals else "events > 0",
        )
        return next(iter(groups), {"visitors": 0, "k_visitors": 0})

    def _visit_headline(self, q: Query) -> tuple[dict[str, Any], tuple[int, int, int, int], dict[str, Any]]:
        """From one pass over the visits ``q`` selects: the population (as ``_population``), the visit
        totals (as ``_visit_totals``) and the people who sent an event (as ``_converted``); unfiltered,
        from the sums of the built days."""
        summed = self._summed(q, "", "converted")
        if summed is not None:
            nobody = {**NOBODY, "visits": 0, "bounces": 0, "seconds": 0}
            everyone, reached = ((summed[kind] or [nobody])[0] for kind in ("", "converted"))
            top = {k: everyone[k] for k in ("visitors", "k_visitors", "pageviews", "events")}
            totals = (everyone["visits"], everyone["bounces"], everyone["seconds"], everyone["pageviews"])
            return top, totals, {"visitors": reached["visitors"], "k_visitors": reached["k_visitors"]}
        params: dict[str, Any] = {}
        source, where = self._visits(q, params), self._visit_where(q, params)
        row = self.store.query_rows(
            f"""
SELECT {VISITOR_SET}If(visitor, identified = 1), uniqExactIf(cityHash64(visitor, day), identified = 0),
       sum(pageviews), sum(events), countIf(pageviews > 0), sum(bounce), sum(duration),
       {VISITOR_SET}If(visitor, identified = 1 AND events > 0),
       uniqExactIf(cityHash64(visitor, day), identified = 0 AND events > 0)
FROM {source}
WHERE {where}""",
            params,
        )[0]
        ident, pseudo, pageviews, events, visits, bounces, seconds, sent, sent_pseudo = (int(x or 0) for x in row)

        def peak(extra: str) -> Callable[[], int]:
            rows = f"SELECT 0 AS g, day AS d, visitor FROM {source} WHERE {where}{extra}"
            return lambda: self._peaks(rows, params).get(0, 0)

        top = {"visitors": ident + pseudo, "k_visitors": self._bound(ident, pseudo, peak(""))}
        converted = {
            "visitors": sent + sent_pseudo,
            "k_visitors": self._bound(sent, sent_pseudo, peak(" AND events > 0")),
        }
        return {**top, "pageviews": pageviews, "events": events}, (visits, bounces, seconds, pageviews), converted

    def _bound(self, identified: int, pseudo_days: int, peak: Callable[[], int]) -> int:
        """The k bound of one group (as in ``_visitor_groups``): its busiest day is asked only when
        consented keys alone are under k and counting every pseudonymised day would reach it."""
        visitors = identified + pseudo_days
        if identified < self.k <= visitors:
            return max(identified, peak())
        return visitors if visitors < self.k else identified

    def _visit_totals(self, q: Query) -> tuple[int, int, int, int]:
        """Visits (with a page view), bounces, seconds in visits and their page views, of the visits ``q`` selects."""
        params: dict[str, Any] = {}
        sql = (
            "SELECT countIf(pageviews > 0), sum(bounce), sum(duration), sum(pageviews) "
            f"FROM {self._visits(q, params)} WHERE {self._visit_where(q, params)}"
        )
        visits, bounces, seconds, views = self.store.query_rows(sql, params)[0]
        return int(visits or 0), int(bounces or 0), int(seconds or 0), int(views or 0)

    def _comparison(self, q: Query, current: Result, today: dt.date, notes: dict[str, str]) -> dict[str, Any]:
        """The previous period of the same length, and each headline figure's change against it.

        Counts change by a ratio ((now - before) / before); rates (bounce, conversion) by their
        difference, in shares. A change is null when either side is hidden or the earlier one is 0.
        """
        prev = q.previous()
        cutoff = _months_before(today, self.retention_months)
        out: dict[str, Any] = {"from": prev.start.isoformat(), "to": prev.end.isoformat()}
        if prev.end < cutoff:
            notes["compare"] = NOTES["compare"].format(start=prev.start, end=prev.end)
            return {**out, "suppressed": False, "available": False, "results": [], "change": {}}
        if prev.start < cutoff:
            prev = replace(prev, start=cutoff)
            out["from"] = cutoff.isoformat()
            notes["compare_range"] = NOTES["compare_range"].format(cutoff=cutoff)
        before = self._aggregate(prev)
        now_row, before_row = current.rows[0], before.rows[0]
        change: dict[str, float | None] = {}
        for column in current.columns:
            a, b = now_row.get(column), before_row.get(column)
            if a is None or b is None:
                change[column] = None
            elif column in RATES:
                change[column] = round(a - b, 4)
            else:
                change[column] = round((a - b) / b, 4) if b else None
        return {
            **out,
            "available": True,
            "suppressed": bool(before.meta.get("suppressed")),
            "results": before.rows,
            "change": change,
        }

    def _series_comparison(self, q: Query, now: dt.datetime, today: dt.date, notes: dict[str, str]) -> dict[str, Any]:
        """The previous period's series, bucket for bucket (the n-th bucket before the n-th now)."""
        prev = q.previous()
        cutoff = _months_before(today, self.retention_months)
        out: dict[str, Any] = {"from": prev.start.isoformat(), "to": prev.end.isoformat()}
        if prev.end < cutoff:
            notes["compare"] = NOTES["compare"].format(start=prev.start, end=prev.end)
            return {**out, "available": False, "suppressed": False, "results": []}
        if prev.start < cutoff:
            prev = replace(prev, start=cutoff)
            out["from"] = cutoff.isoformat()
            notes["compare_range"] = NOTES["compare_range"].format(cutoff=cutoff)
        before = self._timeseries(prev, now)
        # Buckets cut off at the start are padded with nulls, so the n-th bucket stays the n-th.
        missing = len(_buckets(q.previous().start, prev.end, q.interval, now)) - len(before.rows)
        gap = [
            {"date": key, "visitors": None, "pageviews": None, "events": None, "suppressed": False}
            for key in _buckets(q.previous().start, prev.end, q.interval, now)[: max(0, missing)]
        ]
        rows = gap + before.rows if before.rows else []
        return {**out, "available": True, "suppressed": bool(before.meta.get("suppressed")), "results": rows}

    # -- goals ------------------------------------------------------------------------------

    def _goals(self, q: Query) -> Result:
        """Per goal: the visitors who reached it, how often, and the share of all visitors.

        Goals named in the query are listed each (hidden when fewer than k people reached one);
        without them every event name is a goal, and names reached by fewer than k people are
        left out and counted, as in breakdowns (their names would say that someone sent them).
        """
        columns = ["goal", "kind", "value", "visitors", "conversions", "conversion_rate", "suppressed"]
        meta: dict[str, Any] = {
            "estimates": ["visitors"],
            "notes": {"visitors": NOTES["visitors"], "goals": NOTES["goals"]},
        }
        # Without named goals the population and the event names come from one read of the sums.
        summed = None if q.goals else self._summed(q, "", "event_name")
        top = (summed[""] or [dict(NOBODY)])[0] if summed is not None else self._population(q)
        if self._too_few(top):
            return Result(columns, [], {**meta, "suppressed": True, "groups": 0, "suppressed_groups": 0})
        total = top["visitors"]
        if q.goals:
            rows, hidden = self._named_goal_rows(q, total), 0
        else:
            rows, hidden = self._event_goal_rows(q, total, summed["event_name"] if summed is not None else None)
        return Result(
            columns,
            rows,
            {**meta, "suppressed": False, "visitors": total, "groups": len(rows), "suppressed_groups": hidden},
        )

    def _named_goal_rows(self, q: Query, total: int) -> list[dict[str, Any]]:
        """One row per goal named in ``q``, its figures hidden when fewer than k people reached it."""
        params: dict[str, Any] = {}
        parts = []
        for i, goal in enumerate(q.goals):
            parts.append(f"{_goal_condition((goal,), params, prefix=f'g{i}')}, {i}")
        found = {
            int(g["g"]): g
            for g in self._visitor_groups(
                q, f"multiIf({', '.join(parts)}, -1)", extra=_goal_condition(q.goals, params), extra_params=params
            )
        }
        rows: list[dict[str, Any]] = []
        for i, goal in enumerate(q.goals):
            g = found.get(i, {"visitors": 0, "k_visitors": 0, "pageviews": 0, "events": 0})
            small = 0 < g["k_visitors"] < self.k
            hits = g["pageviews"] if goal.kind == "page" else g["events"]
            rows.append(
                {
                    "goal": str(goal),
                    "kind": goal.kind,
                    "value": goal.value,
                    "visitors": None if small else g["visitors"],
                    "conversions": None if small else hits,
                    "conversion_rate": None if small else _rate(g["visitors"], total),
                    "suppressed": small,
                }
            )
        return rows

    def _event_goal_rows(
        self, q: Query, total: int, groups: Iterable[Mapping[str, Any]] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """One row per event name reached by at least k people, most visitors first; and how many
        names were left out. ``groups``: the event names' groups when already read (the sums)."""
        rows: list[dict[str, Any]] = []
        hidden = 0
        if groups is None:
            groups = self._visitor_groups(
                q, "name", extra="kind = 'event'", visit_list="event_name", visit_group="item.1"
            )
        for g in groups:
            if g["k_visitors"] < self.k:
                hidden += 1
                continue
            rows.append(
                {
                    "goal": f"event:{g['g']}",
                    "kind": "event",
                    "value": g["g"],
                    "visitors": g["visitors"],
                    "conversions": g["events"],
                    "conversion_rate": _rate(g["visitors"], total),
                    "suppressed": False,
                }
            )
        rows.sort(key=lambda r: (-r["visitors"], -r["conversions"], r["value"]))
        return rows, hidden

    # -- realtime ---------------------------------------------------------------------------

    def _realtime(self, q: Query, now: dt.datetime) -> Result:
        """Visitors and page views of the last 30 minutes, shown only when k people stand behind them."""
        columns = ["visitors", "pageviews", "suppressed"]
        since = int(now.timestamp()) - REALTIME_SECONDS
        today = now.astimezone(dt.UTC).date()
        params = {
            "site": q.site, "since": since, "until": int(now.timestamp()), "today": today,
            "start": today - dt.timedelta(days=1), "end": today,
        }  # fmt: skip
        ident, pseudo, pseudo_today, pseudo_before, pageviews = self.store.query_rows(
            f"""
SELECT {VISITOR_SET}If(visitor, identified = 1),
       uniqExactIf(cityHash64(visitor, toDate(ts)), identified = 0),
       uniqExactIf(visitor, identified = 0 AND toDate(ts) = {{today:Date}}),
       uniqExactIf(visitor, identified = 0 AND toDate(ts) != {{today:Date}}),
       countIf({PAGEVIEW})
FROM {self._hits(q)}
WHERE site = {{site:String}} AND is_bot = 0
  AND ts >= toDateTime({{since:UInt32}}, 'UTC') AND ts <= toDateTime({{until:UInt32}}, 'UTC')""",
            params,
        )[0]
        visitors = int(ident) + int(pseudo)
        bound = max(int(ident), int(pseudo_today), int(pseudo_before))
        small = 0 < bound < self.k
        row = {
            "visitors": None if small else visitors,
            "pageviews": None if small else int(pageviews),
            "suppressed": small,
        }
        since_text = dt.datetime.fromtimestamp(since, dt.UTC).isoformat(timespec="seconds")
        meta: dict[str, Any] = {
            "estimates": ["visitors"],
            "notes": {"realtime": NOTES["realtime"].format(k=self.k)},
            "suppressed": False,
            "since": since_text,
        }
        return Result(columns, [row], meta)

    # -- timeseries -------------------------------------------------------------------------

    def _timeseries(self, q: Query, now: dt.datetime) -> Result:
        columns = ["date", "visitors", "pageviews", "events", "suppressed"]
        meta: dict[str, Any] = {"estimates": ["visitors"], "notes": {"visitors": NOTES["visitors"]}}
        bucket = {
            "hour": "toStartOfHour(ts)",
            "day": "toDate(ts)",
            "week": "toMonday(ts)",
            "month": "toStartOfMonth(ts)",
        }[q.interval]
        # A visit may span two hours: hourly series count each visit's hours (its list of them).
        listed = "hour" if q.interval == "hour" else ""
        groups = list(self._visitor_groups(q, bucket, visit_group=VISIT_BUCKETS[q.interval], visit_list=listed))
        if self._too_few_behind(q, (g["k_visitors"] for g in groups)):
            return Result(columns, [], {**meta, "suppressed": True})
        found = {_bucket_key(g["g"], q.interval): g for g in groups}
        rows = []
        for key in _buckets(q.start, q.end, q.interval, now):
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
        return Result(columns, rows, {**meta, "suppressed": False})

    # -- breakdown --------------------------------------------------------------------------

    def _breakdown(self, q: Query) -> Result:
        dim = q.dimension
        entry = dim in ("entry_page", "exit_page")
        columns = (
            ["value", "visitors", "visits", "bounce_rate"] if entry else ["value", "visitors", "pageviews", "events"]
        )
        notes = {"visitors": NOTES["visitors"], **({"visits": NOTES["visits"]} if entry else {})}
        meta: dict[str, Any] = {"estimates": ["visitors"], "notes": notes}
        suppressed = Result(columns, [], {**meta, "suppressed": True, "groups": 0, "suppressed_groups": 0})
        if entry:
            ends = dim == "exit_page"
            groups = self._entry_groups(q, exit=ends)
            if self._too_few_behind(q, (g["_k"] for g in groups)):
                return suppressed
            return self._ranked(groups, columns, q.limit, meta, lambda values: self._entry_groups(q, values, exit=ends))
        expr = DIMENSIONS[dim]
        # A page's events are the events sent from it (their path); asset requests are left out.
        extra = (
            f"({PAGEVIEW} OR kind = 'event')" if dim == "page" else ("kind = 'event'" if dim == "event_name" else "")
        )

        def as_row(g: Mapping[str, Any], value: Any) -> dict[str, Any]:
            return {
                "value": value,
                "visitors": g["visitors"],
                "pageviews": g["pageviews"],
                "events": g["events"],
                "_k": g["k_visitors"],
            }

        listed = dim if dim in VISIT_LISTS else ""

        def fold(values: list[Any]) -> list[dict[str, Any]]:
            inside = f"has({{fold:Array(String)}}, toString({expr}))"
            listed_inside = "has({fold:Array(String)}, toString(item.1))"
            return [
                as_row(g, SUPPRESSED)
                for g in self._visitor_groups(
                    q,
                    "0",
                    extra=f"{extra} AND {inside}" if extra else inside,
                    extra_params={"fold": values},
                    visit_extra=listed_inside if listed else (None if extra else inside),
                    visit_group="0",
                    visit_list=listed,
                )
            ]

        summed = self._summed(q, dim) if listed else None
        found = (
            summed[dim]
            if summed is not None
            else self._visitor_groups(q, expr, extra=extra, visit_list=listed, visit_group="item.1" if listed else "")
        )
        groups = [as_row(g, g["g"]) for g in found]
        if self._too_few_behind(q, (g["_k"] for g in groups)):
            return suppressed
        return self._ranked(groups, columns, q.limit, meta, fold)

    def _summed(self, q: Query, *kinds: str) -> dict[str, list[dict[str, Any]]] | None:
        """Per list of ``kinds`` (schema.SUM_LISTS: "" the population, "converted" the visitors who
        sent an event, pages, event names, entry and exit pages), its groups, from the stored sums of
        the fresh whole builds and the visits of the other days, in one statement
        (``sums_groups_sql``); None when ``q`` has filters or no day of its range is built."""
        if q.filters or q.marketing_only:
            return None
        fresh, held, partial = self._fresh(q.start, q.end)
        if not fresh:
            return None
        live = sorted(held - set(fresh) - {p.day for p in partial})
        params: dict[str, Any] = {
            "site": q.site,
            "start": q.start,
            "end": q.end,
            "live_days": live,
            "keep": self.retention_months,
        }
        opened = self._opened(q.site, partial)
        others = visits_source(self.events, self.visits, (), bool(live), opened, params) if live or partial else ""
        key = ready_range_sums(self.store, q.site, fresh, kinds, self.cluster)
        ranged = ""
        if key is not None:
            params["builds"], ranged = key, self.range_sums
        sql = sums_groups_sql(self.sums, kinds, fresh.values(), others, self._visit_where(q, params), ranged=ranged)
        found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        for kind, g, consented, pseudo_days, peak, *sums in self.store.query_rows(sql, params):
            pageviews, event_count, visits, bounces, seconds = (int(x) for x in sums)
            found[kind].append(
                {
                    "g": g,
                    "visitors": int(consented) + int(pseudo_days),
                    "k_visitors": max(int(consented), int(peak)),
                    "pageviews": pageviews,
                    "events": event_count,
                    "visits": visits,
                    "bounces": bounces,
                    "seconds": seconds,
                }
            )
        return found

    def _entry_groups(self, q: Query, fold: list[Any] | None = None, *, exit: bool = False) -> list[dict[str, Any]]:
        """Visits by entry page (``exit``: by exit page); with ``fold``, the visits entering (or leaving)
        on any of those pages as one group. An exit page's bounce rate is that of the visits ending there."""
        page = "exit_page" if exit else "entry_page"
        summed = self._summed(q, page) if fold is None else None
        if summed is not None:
            return [
                {
                    "value": g["g"],
                    "visitors": g["visitors"],
                    "visits": g["visits"],
                    "bounce_rate": round(g["bounces"] / g["visits"], 4) if g["visits"] else 0.0,
                    "_k": g["k_visitors"],
                }
                for g in summed[page]
            ]
        params: dict[str, Any] = {}
        if fold is not None:
            params["fold"] = fold
        group = page if fold is None else "0"
        keep = "" if fold is None else f" AND has({{fold:Array(String)}}, {page})"
        rows = f"""
    SELECT {group} AS g, day AS d, identified, visitor, bounce = 1 AS bounced
    FROM {self._visits(q, params)}
    WHERE {self._visit_where(q, params)} AND pageviews > 0{keep}"""
        sql = f"""
SELECT g, {VISITOR_SET}Merge(ids), sum(pd), max(pd), sum(n), sum(b)
FROM (
    SELECT g, d,
           {VISITOR_SET}StateIf(visitor, identified = 1) AS ids,
           uniqExactIf(visitor, identified = 0) AS pd,
           count() AS n, countIf(bounced) AS b
    FROM ({rows})
    GROUP BY g, d
)
GROUP BY g"""
        groups = []
        for g, identified, pseudo_days, pseudo_max, visits, bounces in self.store.query_rows(sql, params):
            groups.append(
                {
                    "value": SUPPRESSED if fold is not None else g,
                    "visitors": int(identified) + int(pseudo_days),
                    "visits": int(visits),
                    "bounce_rate": round(int(bounces) / int(visits), 4) if visits else 0.0,
                    "_k": max(int(identified), int(pseudo_max)),
                }
            )
        return groups

    def _ranked(
        self,
        groups: list[dict[str, Any]],
        columns: list[str],
        limit: int,
        meta: dict[str, Any],
        fold: Callable[[list[Any]], list[dict[str, Any]]],
    ) -> Result:
        """Groups of k or more people, ranked and cut at ``limit``; smaller ones fold into one "other" row.

        The "other" row is shown only when it folds at least two groups and the people of all of
        them together (counted once each) are at least k: one small group alone is never exposed.
        """
        shown = [g for g in groups if g["_k"] >= self.k]
        hidden = [g for g in groups if g["_k"] < self.k]
        shown.sort(
            key=lambda g: (-(g.get("visitors") or 0), -(g.get("pageviews") or g.get("visits") or 0), str(g["value"]))
        )
        rows = [{c: g[c] for c in columns} for g in shown[:limit]]
        other = None
        if len(hidden) >= 2:
            folded = fold([str(g["value"]) for g in hidden])
            if folded and folded[0]["_k"] >= self.k:
                other = folded[0]
                rows.append({c: other[c] for c in columns})
        meta = {
            **meta,
            "suppressed": False,
            "groups": len(shown),
            "suppressed_groups": len(hidden),
            "other_shown": other is not None,
            "truncated": len(shown) > limit,
        }
        return Result(columns, rows, meta)

    # -- funnel -----------------------------------------------------------------------------

    def _funnel(self, q: Query) -> Result:
        columns = ["step", "kind", "value", "visitors", "conversion", "suppressed"]
        meta: dict[str, Any] = {"estimates": ["visitors"], "notes": {"visitors": NOTES["visitors"]}}
        params: dict[str, Any] = {"window": q.window}
        sql = self._funnel_sql(q, params)
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
        bounds = [max(identified_reached[i], max(pseudo_by_day[i].values(), default=0)) for i in range(len(q.steps))]
        if self._too_few_behind(q, bounds):
            return Result(columns, [], {**meta, "suppressed": True})
        rows: list[dict[str, Any]] = []
        first = reached[0] if reached else 0
        for i, step in enumerate(q.steps):
            bound = bounds[i]
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
        return Result(columns, rows, {**meta, "suppressed": False})

    def _funnel_sql(self, q: Query, params: dict[str, Any]) -> str:
        """Per level reached, identified or not and day (toDate(0) for a consented key): the people who
        reached it. A pseudonymised key is only valid for one day, so its funnel is bounded by the day.

        Within a visit's gap (``q.window`` at most VISIT_GAP_SECONDS) every chain of steps lies in one
        visit, so a person's level is the best of their visits', read from the visits' ordered steps
        (fresh builds; live visits for the other days) when ``q`` filters by visit properties alone,
        as their 64-bit ids (``step_ids``): comparing numbers, not strings, saves about a third.
        Otherwise from the hits."""
        if q.window <= VISIT_GAP_SECONDS and self._by_visits(q, by_dimension=False):
            return self._visit_funnel_sql(q, params)
        conditions = []
        for i, step in enumerate(q.steps):
            params[f"s{i}"] = step.value
            if step.kind == "page":
                conditions.append(f"({PAGEVIEW} AND path = {{s{i}:String}})")
            else:
                conditions.append(f"(kind = 'event' AND name = {{s{i}:String}})")
        return f"""
SELECT level, identified, day, count()
FROM (
    SELECT identified, if(identified = 1, toDate(0), toDate(ts)) AS day,
           windowFunnel({{window:UInt64}})(toDateTime(ts), {", ".join(conditions)}) AS level
    FROM {self._hits(q)}
    WHERE {self._where(q, params)} AND ({" OR ".join(conditions)})
    GROUP BY identified, visitor, day
)
WHERE level > 0
GROUP BY level, identified, day"""

    def _visit_funnel_sql(self, q: Query, params: dict[str, Any]) -> str:
        """``_funnel_sql`` from the visits' steps. The levels of the fresh closed days are stored once
        a range and funnel (store/ranges.py) and read back; only the other days' visits are read."""
        fresh, held, partial = self._fresh(q.start, q.end)
        live = sorted(held - set(fresh) - {p.day for p in partial})
        params.update(site=q.site, start=q.start, end=q.end, live_days=live, keep=self.retention_months)
        where = self._visit_where(q, params)
        marks = []
        for i, step in enumerate(q.steps):
            params[f"s{i}"] = (STEP_PAGE if step.kind == "page" else STEP_EVENT) + step.value
            marks.append(f"arrayMap(x -> x = cityHash64({{s{i}:String}}), step_ids)")
        times = "arrayMap(x -> toDateTime(intDiv(toUnixTimestamp64Milli(start_ts) + x, 1000)), step_ms)"

        def levels(source: str) -> str:
            return f"""
        SELECT identified, visitor, day,
               arrayReduce('windowFunnel({int(q.window)})', {times}, {", ".join(marks)}) AS lv
        FROM {source}
        WHERE {where} AND has(step_ids, cityHash64({{s0:String}}))"""

        opened = self._opened(q.site, partial)
        closed = visits_source(self.events, self.visits, fresh.values(), False, (), dict(params))
        definition = repr((q.window, sorted((k, str(v)) for k, v in params.items() if k != "live_days"), where))
        key = funnel_key(fresh.values(), definition)
        if not ready_range_funnel(self.store, q.site, key, fresh, (levels(closed), params), self.cluster):
            source = visits_source(self.events, self.visits, fresh.values(), bool(live), opened, params)
            return f"""
SELECT level, identified, d, count()
FROM (
    SELECT identified, if(identified = 1, toDate(0), day) AS d, max(lv) AS level
    FROM ({levels(source)})
    GROUP BY identified, visitor, d
)
WHERE level > 0
GROUP BY level, identified, d"""
        params["funnel"] = key
        stored = range_funnel_rows(self.range_funnels)
        others = visits_source(self.events, self.visits, (), bool(live), opened, params) if live or partial else ""
        # Each consented key's best level: the stored one or a level on the other days, whichever is higher.
        other_levels = f"UNION ALL SELECT identified, visitor, day, lv FROM ({levels(others)})" if others else ""
        return f"""
SELECT level, identified, d, sum(n)
FROM (
    SELECT level, identified, d, n FROM ({stored}) WHERE identified = 0
    UNION ALL
    SELECT level, identified, d, count() AS n
    FROM (
        SELECT identified, if(identified = 1, toDate(0), day) AS d, max(lv) AS level
        FROM (
            SELECT identified, visitor, d AS day, level AS lv FROM ({stored}) WHERE identified = 1
            {other_levels}
        )
        GROUP BY identified, visitor, d
    )
    WHERE level > 0
    GROUP BY level, identified, d
)
GROUP BY level, identified, d"""

    # -- consent rates ----------------------------------------------------------------------

    def _consent_rates(self, q: Query) -> Result:
        params: dict[str, Any] = {"site": q.site, "start": q.start, "end": q.end}
        counts = []
        for i, cat in enumerate(self.categories):
            params[f"c{i}"] = cat
            counts.append(f"countIf(has(cats, {{c{i}:String}}))")
        # Each consent id counts once per day, with its last choice of that day. Receipts of bots
        # (headless browsers and crawlers: device 'bot') are left out, as they are out of visits.
        sql = f"""
SELECT d, count(), {", ".join(counts)}
FROM (
    SELECT toDate(ts) AS d, consent_id, argMax(categories, ts) AS cats
    FROM {self.receipts}
    WHERE site = {{site:String}} AND toDate(ts) BETWEEN {{start:Date}} AND {{end:Date}} AND device != 'bot'
    GROUP BY d, consent_id
)
GROUP BY d ORDER BY d"""
        found = {row[0]: row[1:] for row in self.store.query_rows(sql, params)}
        columns = ["date", "visitors", *self.categories, "suppressed"]
        meta: dict[str, Any] = {
            "estimates": [],
            "notes": {"visitors": "visitors who chose that day (one consent id, last choice of the day)"},
        }
        totals = [0] * (len(self.categories) + 1)
        hidden_choices = 0
        for day_counts in found.values():
            totals = [t + int(v) for t, v in zip(totals, day_counts, strict=True)]
            if int(day_counts[0]) < self.k:
                hidden_choices += int(day_counts[0])
        if 0 < totals[0] < self.k:
            return Result(columns, [], {**meta, "suppressed": True, "total": {"choices": None, "suppressed": True}})
        rows: list[dict[str, Any]] = []
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
            rows.append(row)
        # The total minus the shown days is what the suppressed days hold: it is given only when
        # that remainder is itself k people or more (or nothing is suppressed), as for "other".
        summary: dict[str, Any]
        if hidden_choices == 0 or hidden_choices >= self.k:
            summary = {"choices": totals[0], "suppressed": False}
            if totals[0]:
                summary.update({c: round(v / totals[0], 4) for c, v in zip(self.categories, totals[1:], strict=True)})
        else:
            summary = {"choices": None, "suppressed": True}
        return Result(columns, rows, {**meta, "suppressed": False, "total": summary})


RATES = frozenset({"bounce_rate", "conversion_rate"})
# A group's page views and events, counted over hits or over visits.
HIT_COUNTS = f"countIf({PAGEVIEW}) AS pv, countIf(kind = 'event') AS ev"
VISIT_COUNTS = "sum(pageviews) AS pv, sum(events) AS ev"
# Breakdowns a visit row answers through its lists, one row per item (``item``): the list, its counts.
VISIT_LISTS = {
    "page": ("arrayZip(paths, path_views, path_events)", "sum(item.2) AS pv, sum(item.3) AS ev"),
    "event_name": ("arrayZip(names, name_events)", "toUInt64(0) AS pv, sum(item.2) AS ev"),
    "hour": ("arrayZip(hours, hour_views, hour_events)", "sum(item.2) AS pv, sum(item.3) AS ev"),
}


def _hits_sql(events: str, *, visits: bool) -> str:
    """The site's stored hits as every query reads them (a subquery in place of ``events``).

    1. Consent on the landing page: ``store.visits.linked_hits_sql`` (the link merge).
    2. With ``visits``, every hit takes its visit's entry referrer, UTM values and click id (the
       visit split of ``store.visits``), so a visit's source and campaign apply to all of its pages,
       events and conversions.
    Only the site's rows of the range's days are read (every query binds site, start and end).
    """
    names = HIT_COLUMNS

    def entry_of(n: str) -> str:
        return f"entry.{VISIT_ATTRIBUTES.index(n) + 1} AS {n}" if n in VISIT_ATTRIBUTES else n

    # Visits and links never span midnight (UTC): the range's days alone are read.
    linked_hits = linked_hits_sql(events, "toDate(ts) BETWEEN {start:Date} AND {end:Date}")
    if not visits:
        return f"({linked_hits})"
    # The entry of a hit's visit is the latest visit start at or before it: one ordered pass after
    # the one that marks the starts.
    return f"""(
SELECT {", ".join(entry_of(n) for n in names)}
FROM (
    SELECT *,
           argMax(({", ".join(VISIT_ATTRIBUTES)}), if(visit_start, toUnixTimestamp64Milli(ts), toInt64(0)))
               {VISIT_WINDOW} AS entry
    FROM (
        SELECT *, {VISIT_START} AS visit_start
        FROM ({linked_hits})
    )
)
)"""


def _goal_condition(goals: Sequence[FunnelStep], params: dict[str, Any], prefix: str = "goal") -> str:
    """The rows that reach any of ``goals``: page views of a goal's page or events of its name.

    Without goals every event is one (each event name is a goal)."""
    if not goals:
        return "kind = 'event'"
    parts = []
    for i, goal in enumerate(goals):
        name = f"{prefix}_{i}"
        params[name] = goal.value
        if goal.kind == "page":
            parts.append(f"({PAGEVIEW} AND path = {{{name}:String}})")
        else:
            parts.append(f"(kind = 'event' AND name = {{{name}:String}})")
    return "(" + " OR ".join(parts) + ")"


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


def _buckets(start: dt.date, end: dt.date, interval: str, now: dt.datetime) -> list[str]:
    """The bucket keys from ``start`` to ``end``, none starting after ``now`` (no future buckets)."""
    if interval == "hour":
        hour = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
        return [
            f"{d.isoformat()}T{h:02d}:00:00Z"
            for d in _days(start, end)
            for h in range(24)
            if dt.datetime.combine(d, dt.time(h)) <= hour
        ]
    keys: list[str] = []
    for d in _days(start, min(end, now.astimezone(dt.UTC).date())):
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
