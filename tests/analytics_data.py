"""A generated data set with known answers for the analytics tests.

Three days (``base``, ``base+1``, ``base+2``) of one site:

- 12 consented visitors ``C1..C12`` (identified = 1, stable keys), each visiting on day 0 and 1.
  C1-C8 granted marketing, C9-C12 did not. C1-C6 use mobile, C7-C12 desktop.
  Every visit: ``/`` → ``/pricing`` (+ ``/signup`` page and a ``signup`` event for C1-C6).
  On day 0 every one of them arrives from the ``spring`` campaign (utm_source newsletter, medium email).
  C1 comes back on day 1 two hours later: a second visit, a single page view (a bounce).
- 6 pseudonymised visitors ``P1..P6`` (identified = 0): a new key each day (daily salt), one page view
  of ``/`` on each of the three days from search.example on a tablet: 18 visitor-days, all bounces.
- 2 consented visitors ``C13``, ``C14`` on day 2 with browser ``RareBrowser`` and a ``/secret`` page:
  groups of fewer than k = 5, which must be suppressed. C7 alone sends a ``download`` event.
- Bot page views (excluded everywhere).
- Receipts: day 0 ten consent ids (8 accept all, 2 reject), day 1 three (suppressed), one consent id
  choosing twice on day 0 (its last choice counts).

The ``expected_*`` functions compute the answers from the rows by a second, plain-Python route.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from consent_gateway.store import EVENT_COLUMNS, RECEIPT_COLUMNS

ALL = ["analytics", "marketing", "necessary", "preferences"]
NO_MARKETING = ["analytics", "necessary"]
SITE = "test-site"


def _row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "site": SITE,
        "kind": "visit",
        "name": "pageview",
        "category": "analytics",
        "identified": 1,
        "visitor": 0,
        "granted": [],
        "path": "/",
        "status": 200,
        "duration_ms": 12,
        "referrer_host": "",
        "utm_source": "",
        "utm_medium": "",
        "utm_campaign": "",
        "utm_term": "",
        "utm_content": "",
        "click_id": "",
        "ip_prefix": "203.0.113.0/24",
        "browser": "Chrome",
        "browser_version": "120",
        "os": "Android",
        "device": "mobile",
        "is_bot": 0,
        "props": "",
    }
    row.update(values)
    return row


def build_rows(base: dt.date) -> list[dict[str, Any]]:
    """All event rows of the data set, the first day being ``base``."""
    rows: list[dict[str, Any]] = []

    def at(day: int, seconds: int) -> dt.datetime:
        return dt.datetime.combine(base + dt.timedelta(days=day), dt.time(9, 0), dt.UTC) + dt.timedelta(seconds=seconds)

    for i in range(1, 13):
        visitor = 10_000 + i
        granted = ALL if i <= 8 else NO_MARKETING
        device = (
            {"device": "mobile", "os": "Android", "browser": "Chrome"}
            if i <= 6
            else {"device": "desktop", "os": "Windows", "browser": "Firefox"}
        )
        for day in (0, 1):
            start = i * 100
            campaign = (
                {
                    "utm_source": "newsletter",
                    "utm_medium": "email",
                    "utm_campaign": "spring",
                    "click_id": "gclid-x" if i <= 4 else "",
                }
                if day == 0
                else {}
            )
            common = {"identified": 1, "visitor": visitor, "granted": granted, **device}
            rows.append(_row(ts=at(day, start), path="/", **common, **campaign))
            rows.append(_row(ts=at(day, start + 60), path="/pricing", **common))
            if i <= 6:
                rows.append(_row(ts=at(day, start + 120), path="/signup", **common))
                rows.append(
                    _row(
                        ts=at(day, start + 130),
                        kind="event",
                        name="signup",
                        category="marketing",
                        path="/signup",
                        **common,
                    )
                )
            if i == 7:
                rows.append(_row(ts=at(day, start + 150), kind="event", name="download", path="/pricing", **common))
            if i == 1 and day == 1:
                rows.append(_row(ts=at(day, start + 7200), path="/blog", **common))
            # Asset requests count toward visitors, never toward page views.
            rows.append(_row(ts=at(day, start + 1), name="request", path="/static/app.js", **common))
    for p in range(1, 7):
        for day in (0, 1, 2):
            rows.append(
                _row(
                    ts=at(day, 3000 + p * 10),
                    identified=0,
                    visitor=900_000 + p * 10 + day,
                    granted=[],
                    referrer_host="search.example",
                    device="tablet",
                    os="iOS",
                    browser="Safari",
                    utm_source="newsletter",
                    utm_campaign="spring",
                )
            )
    for i, visitor in enumerate((10_013, 10_014)):
        common = {"identified": 1, "visitor": visitor, "granted": ALL, "browser": "RareBrowser"}
        rows.append(_row(ts=at(2, 5000 + i * 10), path="/", **common))
        rows.append(_row(ts=at(2, 5001 + i * 10), path="/secret", **common))
    for b in range(4):
        rows.append(_row(ts=at(0, 6000 + b), identified=0, visitor=777, is_bot=1, browser="Googlebot", device="bot"))
    return rows


def build_receipts(base: dt.date) -> list[dict[str, Any]]:
    """Consent receipts: day 0 ten consent ids (8 accept all, 2 reject), day 1 three."""
    rows = []

    def receipt(day: int, n: int, cid: str, cats: list[str], method: str) -> dict[str, Any]:
        ts = dt.datetime.combine(base + dt.timedelta(days=day), dt.time(10, 0), dt.UTC) + dt.timedelta(seconds=n)
        return {
            "receipt_id": uuid.uuid4(),
            "ts": ts,
            "site": SITE,
            "consent_id": cid,
            "version": "1.0",
            "categories": cats,
            "method": method,
            "banner_hash": "h",
            "locale": "ko",
            "ip_prefix": "",
            "browser": "",
            "os": "",
            "device": "",
            "child": 0,
            "guardian_categories": [],
        }

    for n in range(10):
        cats = ALL if n < 8 else ["necessary"]
        rows.append(receipt(0, n + 10, f"c{n}", cats, "accept_all" if n < 8 else "reject_all"))
    # c8 first accepted everything, then rejected: only the later choice counts.
    rows.append(receipt(0, 1, "c8", ALL, "accept_all"))
    for n in range(3):
        rows.append(receipt(1, n, f"d{n}", ["necessary", "analytics"], "custom"))
    return rows


def insert(store: Any, table: str, rows: Iterable[dict[str, Any]]) -> None:
    columns = EVENT_COLUMNS if table == "events" else RECEIPT_COLUMNS
    names = [n for n, _ in columns]
    store.insert(table, [[r[n] for n in names] for r in rows], names, [t for _, t in columns])


# -- the same answers by a second route ------------------------------------------------------------


def _human(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not r["is_bot"]]


def _is_pageview(r: dict[str, Any]) -> bool:
    return r["kind"] == "visit" and r["name"] == "pageview"


def visitor_count(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """(visitors estimate, provable lower bound used for k)."""
    ident = {r["visitor"] for r in rows if r["identified"]}
    pseudo = {(r["visitor"], r["ts"].date()) for r in rows if not r["identified"]}
    per_day: dict[dt.date, int] = defaultdict(int)
    for _, day in pseudo:
        per_day[day] += 1
    return len(ident) + len(pseudo), max(len(ident), max(per_day.values(), default=0))


def sessions(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    by_key: dict[tuple[int, int, dt.date], list[dict[str, Any]]] = defaultdict(list)
    for r in _human(rows):
        if _is_pageview(r):
            by_key[(r["identified"], r["visitor"], r["ts"].date())].append(r)
    out = []
    for hits in by_key.values():
        hits.sort(key=lambda r: r["ts"])
        current = [hits[0]]
        for prev, hit in itertools.pairwise(hits):
            if int(hit["ts"].timestamp()) - int(prev["ts"].timestamp()) > 1800:
                out.append(current)
                current = []
            current.append(hit)
        out.append(current)
    return out


VISIT_ATTRIBUTES = ("referrer_host", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "click_id")


def with_visit_attribution(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each hit's source, referrer, UTM values and click id those of its visit's entry:
    per key and day, a hit more than 30 minutes after the previous one starts a new visit."""
    by_key: dict[tuple[int, int, dt.date], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_key[(r["identified"], r["visitor"], r["ts"].date())].append(r)
    out = []
    for hits in by_key.values():
        hits.sort(key=lambda r: r["ts"])
        entry = hits[0]
        for i, hit in enumerate(hits):
            if i and (hit["ts"] - hits[i - 1]["ts"]).total_seconds() > 1800:
                entry = hit
            out.append({**hit, **{c: entry[c] for c in VISIT_ATTRIBUTES}})
    return out


def expected_aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    human = _human(rows)
    visits = sessions(rows)
    pageviews = sum(1 for r in human if _is_pageview(r))
    return {
        "visitors": visitor_count(human)[0],
        "visits": len(visits),
        "pageviews": pageviews,
        "events": sum(1 for r in human if r["kind"] == "event"),
        "views_per_visit": round(pageviews / len(visits), 2),
        "bounce_rate": round(sum(1 for s in visits if len(s) == 1) / len(visits), 4),
    }


DIMENSION_COLUMN = {"page": "path", "event_name": "name", "click_attribution": "click_id"}


def expected_breakdown(
    rows: list[dict[str, Any]], dimension: str, k: int = 5
) -> tuple[dict[str, dict[str, int]], int, dict[str, int] | None]:
    """Shown groups {value: {visitors, pageviews, events}}, the number of suppressed groups, and the
    "other" row (None unless it folds at least two groups and at least k people counted once)."""
    human = with_visit_attribution(_human(rows))
    if dimension in ("utm_campaign", "click_attribution"):
        human = [r for r in human if "marketing" in r["granted"]]
    if dimension == "page":
        human = [r for r in human if _is_pageview(r) or r["kind"] == "event"]
    if dimension == "event_name":
        human = [r for r in human if r["kind"] == "event"]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in human:
        value = r[DIMENSION_COLUMN.get(dimension, dimension)]
        if dimension == "click_attribution":
            value = "ad click" if value else "(none)"
        groups[value].append(r)
    shown: dict[str, dict[str, int]] = {}
    hidden: list[dict[str, Any]] = []
    hidden_groups = 0
    for value, members in groups.items():
        _, bound = visitor_count(members)
        if bound < k:
            hidden_groups += 1
            hidden.extend(members)
            continue
        shown[value] = _counts(members)
    other = None
    if hidden_groups >= 2 and visitor_count(hidden)[1] >= k:
        other = _counts(hidden)
    return shown, hidden_groups, other


def _counts(members: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "visitors": visitor_count(members)[0],
        "pageviews": sum(1 for r in members if _is_pageview(r)),
        "events": sum(1 for r in members if r["kind"] == "event"),
    }
