"""Query parameters of the analytics API: parsed and checked once, before any SQL is built."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from ..errors import RequestError

# Dimension name → the column expression it reads. A fixed list: no request text ever becomes SQL.
DIMENSIONS: Mapping[str, str] = {
    "page": "path",
    "entry_page": "path",
    "exit_page": "path",
    "referrer_host": "referrer_host",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
    "utm_term": "utm_term",
    "utm_content": "utm_content",
    "click_attribution": "if(click_id = '', '(none)', 'ad click')",
    "browser": "browser",
    "os": "os",
    "device": "device",
    "event_name": "name",
}
# Campaign and click attribution: read only from rows whose visitor granted marketing.
MARKETING_DIMENSIONS = frozenset({"utm_campaign", "utm_term", "utm_content", "click_attribution"})
# Entry and exit pages are properties of a visit, not of a row: breakdowns, never filters.
VISIT_DIMENSIONS = frozenset({"entry_page", "exit_page"})
FILTER_DIMENSIONS = tuple(d for d in DIMENSIONS if d not in VISIT_DIMENSIONS)
# A filter of this value matches the empty value (no referrer, no campaign): an empty filter value
# is refused, so "(direct)" and "(none)" rows need a name to be filtered by.
EMPTY_VALUE = "(none)"

PERIODS: Mapping[str, int] = {"today": 1, "7d": 7, "30d": 30, "90d": 90, "6mo": 183, "12mo": 365}
INTERVALS = ("hour", "day", "week", "month")
FORMATS = ("json", "csv")
# "rollup" is parsed so that asking for it gets the reason it is refused (queries.Analytics.run).
SOURCES = ("auto", "raw", "rollup")
MAX_SPAN_DAYS = 3660
MAX_LIMIT = 1000
MAX_STEPS = 8
MAX_GOALS = 20
COMPARES = ("previous",)
_SITE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_STEP = re.compile(r"^(page|event):(.{1,512})$", re.DOTALL)

COMMON = ("site", "period", "from", "to", "format")
ENDPOINT_PARAMS: Mapping[str, tuple[str, ...]] = {
    "aggregate": (*COMMON, "source", "compare", "goals", *FILTER_DIMENSIONS),
    "timeseries": (*COMMON, "source", "interval", "compare", *FILTER_DIMENSIONS),
    "breakdown": (*COMMON, "source", "dimension", "limit", *FILTER_DIMENSIONS),
    "funnel": (*COMMON, "steps", "window", *FILTER_DIMENSIONS),
    "goals": (*COMMON, "source", "goals", *FILTER_DIMENSIONS),
    "realtime": ("site", "format"),
    "consent-rates": COMMON,
}


@dataclass(frozen=True, slots=True)
class FunnelStep:
    """One funnel step: a page view of ``value`` or an event named ``value``."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True, slots=True)
class Query:
    """A validated request to one endpoint."""

    endpoint: str
    site: str
    start: dt.date
    end: dt.date
    format: str = "json"
    source: str = "auto"
    filters: tuple[tuple[str, str], ...] = ()
    interval: str = "day"
    dimension: str = ""
    limit: int = 10
    steps: tuple[FunnelStep, ...] = ()
    window: int = 1800
    compare: str = ""
    goals: tuple[FunnelStep, ...] = ()

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def marketing_only(self) -> bool:
        """Whether the query reads campaign data and so only marketing-consented rows."""
        return self.dimension in MARKETING_DIMENSIONS or any(d in MARKETING_DIMENSIONS for d, _ in self.filters)

    @classmethod
    def from_items(
        cls, endpoint: str, items: Iterable[tuple[str, str]], *, default_site: str, today: dt.date | None = None
    ) -> Query:
        """Parse ``(name, value)`` pairs (a query string); a 400 ``RequestError`` names each problem."""
        if endpoint not in ENDPOINT_PARAMS:
            raise RequestError(f"no endpoint {endpoint[:40]!r}; use one of {sorted(ENDPOINT_PARAMS)}", status=404)
        allowed = ENDPOINT_PARAMS[endpoint]
        values: dict[str, str] = {}
        for name, value in items:
            if name not in allowed:
                raise RequestError(
                    f"unknown parameter {name[:40]!r} for {endpoint}; allowed: {', '.join(allowed)}", field=name[:40]
                )
            if name in values:
                raise RequestError(f"parameter {name!r} is given twice; give it once", field=name)
            values[name] = value
        today = today or dt.datetime.now(dt.UTC).date()
        site = values.get("site", default_site)
        if not _SITE.match(site):
            raise _bad("site", site, "use 1-64 letters, digits, '.', '-' or '_'")
        start, end = _dates(values, today)
        fmt = _choice(values, "format", FORMATS, "json")
        source = _choice(values, "source", SOURCES, "auto")
        filters = tuple((d, _filter_value(d, values[d])) for d in FILTER_DIMENSIONS if d in values)
        interval, dimension, limit, window = "day", "", 10, 1800
        steps: tuple[FunnelStep, ...] = ()
        if endpoint == "timeseries":
            interval = _choice(values, "interval", INTERVALS, "day")
            if interval == "hour" and (end - start).days > 31:
                raise _bad("interval", "hour", "hourly series cover at most 32 days; use day or a shorter range")
        if endpoint == "breakdown":
            if "dimension" not in values:
                raise RequestError(
                    f"parameter 'dimension' is required; use one of {', '.join(DIMENSIONS)}", field="dimension"
                )
            dimension = _choice(values, "dimension", tuple(DIMENSIONS), "")
            limit = _int(values, "limit", 10, 1, MAX_LIMIT)
        if endpoint == "funnel":
            steps = _steps(values.get("steps", ""))
            window = _int(values, "window", 1800, 1, 7 * 86400)
        compare = _choice(values, "compare", COMPARES, "") if "compare" in values else ""
        goals = _goals(values["goals"]) if "goals" in values else ()
        return cls(
            endpoint=endpoint,
            site=site,
            start=start,
            end=end,
            format=fmt,
            source=source,
            filters=filters,
            interval=interval,
            dimension=dimension,
            limit=limit,
            steps=steps,
            window=window,
            compare=compare,
            goals=goals,
        )

    def previous(self) -> Query:
        """The same query over the period of the same length just before this one."""
        span = dt.timedelta(days=self.days)
        return replace(self, start=self.start - span, end=self.end - span, compare="")

    def as_dict(self) -> dict[str, object]:
        """The parameters in force, echoed in every response."""
        out: dict[str, object] = {"site": self.site, "from": self.start.isoformat(), "to": self.end.isoformat()}
        if self.filters:
            out["filters"] = dict(self.filters)
        if self.endpoint == "timeseries":
            out["interval"] = self.interval
        if self.endpoint == "breakdown":
            out["dimension"] = self.dimension
            out["limit"] = self.limit
        if self.endpoint == "funnel":
            out["steps"] = [str(s) for s in self.steps]
            out["window"] = self.window
        if self.compare:
            out["compare"] = self.compare
        if self.goals:
            out["goals"] = [str(g) for g in self.goals]
        return out


def _bad(name: str, value: str, fix: str) -> RequestError:
    return RequestError(f"parameter {name!r} = {value[:80]!r} is invalid: {fix}", field=name)


def _choice(values: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = values.get(name, default)
    if value not in choices:
        raise _bad(name, value, f"use one of {', '.join(choices)}")
    return value


def _int(values: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = values.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,7}", raw) or not low <= int(raw) <= high:
        raise _bad(name, raw, f"use a whole number from {low} to {high}")
    return int(raw)


def _date(name: str, raw: str) -> dt.date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        raise _bad(name, raw, "write the date as YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise _bad(name, raw, "write a real date as YYYY-MM-DD") from None


def _dates(values: Mapping[str, str], today: dt.date) -> tuple[dt.date, dt.date]:
    if "from" in values or "to" in values:
        if "period" in values:
            raise RequestError("give either 'period' or 'from' and 'to', not both", field="period")
        if "from" not in values or "to" not in values:
            missing = "to" if "from" in values else "from"
            raise RequestError(f"parameter {missing!r} is required with the other end of the range", field=missing)
        start, end = _date("from", values["from"]), _date("to", values["to"])
        if start > end:
            raise _bad("to", values["to"], f"use a date on or after from = {start.isoformat()}")
        if (end - start).days >= MAX_SPAN_DAYS:
            raise _bad("from", values["from"], f"a range covers at most {MAX_SPAN_DAYS} days")
        return start, end
    period = _choice(values, "period", tuple(PERIODS), "30d")
    return today - dt.timedelta(days=PERIODS[period] - 1), today


def _filter_value(dimension: str, value: str) -> str:
    if not value or len(value) > 512:
        raise _bad(dimension, value, "give a value of 1-512 characters")
    return value


def _goals(raw: str) -> tuple[FunnelStep, ...]:
    parts = list(dict.fromkeys(p for p in raw.split(",") if p))
    if not 1 <= len(parts) <= MAX_GOALS:
        raise _bad("goals", raw, f"give 1-{MAX_GOALS} comma-separated goals like event:signup,page:/thanks")
    goals = []
    for part in parts:
        match = _STEP.match(part)
        if match is None:
            raise _bad("goals", part, "write each goal as page:/path or event:name")
        goals.append(FunnelStep(match.group(1), match.group(2)))
    return tuple(goals)


def _steps(raw: str) -> tuple[FunnelStep, ...]:
    parts = [p for p in raw.split(",") if p] if raw else []
    if not 2 <= len(parts) <= MAX_STEPS:
        raise _bad("steps", raw, f"give 2-{MAX_STEPS} comma-separated steps like page:/pricing,event:signup")
    steps = []
    for part in parts:
        match = _STEP.match(part)
        if match is None:
            raise _bad("steps", part, "write each step as page:/path or event:name")
        steps.append(FunnelStep(match.group(1), match.group(2)))
    return tuple(steps)
