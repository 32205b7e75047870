"""``GET /api/v1/cookies``: the site's live cookie inventory for the analytics API and dashboard.

The inventory holds cookie names and counts per site and day, never visitors: it describes what the
site does, so k-anonymity does not apply and no number is hidden. Sources are worked out again
against today's registry and catalogue, as ``consent-gateway cookies`` does.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RequestError

if TYPE_CHECKING:
    # Imported where used: ``inventory`` and ``store`` import each other, and the store must load first.
    from ..inventory import Classifier, CookieSummary
    from ..store import Store

ENDPOINT = "cookies"
PARAMS = ("site", "days", "unclassified", "format")
DEFAULT_DAYS = 90
MAX_DAYS = 3660
_SITE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}

CSV_COLUMNS = (
    "name",
    "category",
    "source",
    "set_by",
    "set_count",
    "request_count",
    "blocked",
    "before_consent",
    "first_seen",
    "last_seen",
    "domain",
    "path",
    "lifetime_seconds",
    "http_only",
    "secure",
    "same_site",
    "top_paths",
)


@dataclass(frozen=True, slots=True)
class CookieQuery:
    """The parameters of one ``cookies`` call."""

    site: str
    days: int = DEFAULT_DAYS
    unclassified: bool = False
    format: str = "json"

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, str]], *, default_site: str) -> CookieQuery:
        """Parse ``(name, value)`` pairs of a query string; a 400 ``RequestError`` names each problem."""
        values: dict[str, str] = {}
        for name, value in items:
            if name not in PARAMS:
                raise RequestError(
                    f"unknown parameter {name[:40]!r} for cookies; allowed: {', '.join(PARAMS)}", field=name[:40]
                )
            if name in values:
                raise RequestError(f"parameter {name!r} is given twice; give it once", field=name)
            values[name] = value
        site = values.get("site", default_site)
        if not _SITE.match(site):
            raise _bad("site", site, "use 1-64 letters, digits, '.', '-' or '_'")
        raw_days = values.get("days", str(DEFAULT_DAYS))
        if not raw_days.isascii() or not raw_days.isdigit() or not 1 <= int(raw_days) <= MAX_DAYS:
            raise _bad("days", raw_days, f"use a whole number of days from 1 to {MAX_DAYS} (default {DEFAULT_DAYS})")
        raw_flag = values.get("unclassified", "0").lower()
        if raw_flag not in _FLAGS:
            raise _bad("unclassified", raw_flag, "use 1 or 0 (true or false)")
        fmt = values.get("format", "json")
        if fmt not in ("json", "csv"):
            raise _bad("format", fmt, "use json or csv")
        return cls(site, int(raw_days), _FLAGS[raw_flag], fmt)


def _bad(field: str, value: str, hint: str) -> RequestError:
    return RequestError(f"{field}={value[:64]!r} is not valid: {hint}", field=field)


@dataclass(frozen=True, slots=True)
class CookieAnswer:
    """The inventory as the API serves it: every name (or the unclassified ones) and the overflow."""

    query: CookieQuery
    cookies: tuple[CookieSummary, ...]
    unclassified: int
    overflow: int

    def as_json(self) -> dict[str, Any]:
        return {
            "query": {"site": self.query.site, "days": self.query.days, "unclassified": self.query.unclassified},
            "columns": list(CSV_COLUMNS),
            "results": [c.as_json() for c in self.cookies],
            "unclassified": self.unclassified,
            "overflow": self.overflow,
            "notes": {
                "about": "cookie names and counts describe the site, not visitors: no k-anonymity applies",
                "before_consent": "sightings for a visitor who had not granted the cookie's category "
                "(a script setting cookies before consent shows up here)",
            },
        }

    def as_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for cookie in self.cookies:
            row = cookie.as_json()
            row["top_paths"] = " ".join(f"{p['path']}={p['count']}" for p in row["top_paths"])
            writer.writerow([_csv_safe(row[c]) for c in CSV_COLUMNS])
        return out.getvalue()


def _csv_safe(value: Any) -> Any:
    # Cookie names and paths arrive from anyone's requests; a spreadsheet runs cells starting so as formulas.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def cookie_answer(store: Store, classifier: Classifier | None, query: CookieQuery) -> CookieAnswer:
    """Read the inventory of ``query.site``; with ``classifier`` (the site's own registry and the catalogue)
    each name is classified again, so a name registered since it was seen is no longer unclassified."""
    from ..inventory import SOURCE_UNCLASSIFIED, read_inventory

    report = read_inventory(store, query.site, days=query.days)
    cookies = []
    for cookie in report.cookies:
        if classifier is not None:
            category, source = classifier.classify(cookie.name)
            cookie = dataclasses.replace(cookie, category=category, source=source)
        cookies.append(cookie)
    unclassified = sum(1 for c in cookies if c.source == SOURCE_UNCLASSIFIED)
    if query.unclassified:
        cookies = [c for c in cookies if c.source == SOURCE_UNCLASSIFIED]
    # Unclassified first (they need the site's attention), then by name.
    cookies.sort(key=lambda c: (c.source != SOURCE_UNCLASSIFIED, c.name))
    return CookieAnswer(query, tuple(cookies), unclassified, report.overflow)
