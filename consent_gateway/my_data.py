"""``GET {prefix}/my-data``: a visitor's own data, shown and exported (HTML, JSON, CSV).

What is held for the visitor's consent id: the identifiable event rows (stored under the keyed hash
of the consent id) and the consent receipts. Pseudonymised rows carry no consent id; the only link
to them is the day's salt with the visitor's IP address and user agent, and salts are destroyed after
48 hours. So the page counts (never lists) the pseudonymised rows of the days whose salt still
exists for the requesting browser, and says that older ones can no longer be linked to anyone.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import html
import io
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from .declaration import request_locale, wants_json
from .pseudonymize import SaltStore, consented_visitor, pseudonymous_visitor
from .ratelimit import TokenBucket, client_key
from .settings import Settings
from .signing import ConsentCodec
from .store.client import Store
from .store.statements import (
    identified_events_of,
    identified_rows_of,
    pseudonymised_rows_on,
    receipts_held,
)

MAX_ROWS = 10_000
"""Identifiable rows listed at most; past it the export says it was cut and how many there are."""

EVENT_FIELDS = (
    "ts",
    "kind",
    "name",
    "category",
    "path",
    "status",
    "referrer_host",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "click_id",
    "ip_prefix",
    "browser",
    "os",
    "device",
    "props",
)
RECEIPT_FIELDS = ("receipt_id", "ts", "version", "categories", "method", "banner_hash", "locale", "ip_prefix")


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who asks: the consent id from the verified consent cookie (None without one), IP and user agent."""

    consent_id: str | None
    ip: str
    user_agent: str

    def __repr__(self) -> str:
        # The consent id is the key to this visitor's data: never whole in a log line.
        cid = f"{self.consent_id[:4]}…" if self.consent_id else None
        return f"Visitor(consent_id={cid!r})"


@dataclass(frozen=True, slots=True)
class MyData:
    """Everything the page shows: identifiable rows, receipts, and pseudonymised counts by day."""

    consent_id: str | None
    events: tuple[dict[str, Any], ...]
    events_total: int
    receipts: tuple[dict[str, Any], ...]
    pseudonymised: tuple[tuple[str, int], ...]

    @property
    def truncated(self) -> bool:
        return self.events_total > len(self.events)

    def as_json(self) -> dict[str, Any]:
        return {
            "consent_id": self.consent_id,
            "events": list(self.events),
            "events_total": self.events_total,
            "events_truncated": self.truncated,
            "receipts": list(self.receipts),
            "pseudonymised": {
                "by_day": [{"day": d, "rows": n} for d, n in self.pseudonymised],
                "note": "Counts only: pseudonymised rows are not linked to your consent id. Rows of days "
                "whose salt was destroyed (after 48 hours) can no longer be linked to anyone.",
            },
        }


def cookie_identify(settings: Settings, codec: ConsentCodec) -> Callable[[Request], Visitor]:
    """A ``Visitor`` from the verified consent cookie and the connection's peer address.

    Behind a proxy the peer is the proxy: the gateway's own request facts (which honour
    ``trusted_proxies``) should supply the address instead, as ``routes.facts_of`` does.
    """
    name = settings.consent_cookie_name

    def identify(request: Request) -> Visitor:
        verified = codec.decode(request.cookies.get(name, ""))
        return Visitor(
            verified.record.consent_id if verified else None,
            request.client.host if request.client else "",
            request.headers.get("user-agent", ""),
        )

    return identify


def read_my_data(store: Store, settings: Settings, salts: SaltStore, visitor: Visitor) -> MyData:
    """Read what is held for ``visitor`` (blocking: run it in a thread)."""
    site = settings.site_id
    events: list[dict[str, Any]] = []
    receipts: list[dict[str, Any]] = []
    total = 0
    if visitor.consent_id:
        key = consented_visitor(settings.pseudonym_key.encode("utf-8"), visitor.consent_id)
        total = identified_rows_of(store, site, key)
        rows = identified_events_of(store, site, key, EVENT_FIELDS, MAX_ROWS)
        events = [{f: _plain(row[f]) for f in EVENT_FIELDS} for row in rows]
        rows = receipts_held(store, site, visitor.consent_id, MAX_ROWS)
        receipts = [{k: _plain(v) for k, v in r.items()} for r in rows]
    return MyData(
        visitor.consent_id, tuple(events), total, tuple(receipts), _pseudonymised(store, site, salts, visitor)
    )


def _pseudonymised(store: Store, site: str, salts: SaltStore, visitor: Visitor) -> tuple[tuple[str, int], ...]:
    """Pseudonymised rows of this browser per day, for the days whose salt still exists."""
    if not visitor.ip and not visitor.user_agent:
        return ()
    out = []
    for day in salts.days():  # only existing salts: looking must never create one
        try:
            date = dt.date.fromisoformat(day)
        except ValueError:
            continue
        key = pseudonymous_visitor(salts.salt_for(date), site, visitor.ip, visitor.user_agent)
        out.append((day, pseudonymised_rows_on(store, site, key, date)))
    return tuple(out)


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def to_csv(rows: tuple[dict[str, Any], ...], fields: tuple[str, ...]) -> str:
    """Rows as CSV with a header; lists joined by '|'; cells that a spreadsheet would run are defused."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(fields)
    for row in rows:
        writer.writerow([_cell(row.get(f)) for f in fields])
    return buf.getvalue()


def _cell(value: Any) -> str:
    text = "|".join(map(str, value)) if isinstance(value, list) else "" if value is None else str(value)
    # A cell starting with = + - @ is a formula in spreadsheets (CSV injection): quote it as text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


_TEXTS = {
    "ko": {
        "title": "내 정보 조회",
        "none": "이 브라우저에는 동의 기록이 없어 식별 가능한 정보가 없습니다.",
        "events": "식별 가능한 방문·이벤트 기록",
        "receipts": "동의 기록",
        "pseudo": "가명처리된 기록(건수만)",
        "pseudo_note": "가명정보는 동의 식별자와 연결되지 않습니다. 48시간이 지나 솔트가 파기된 날의 기록은 "
        "누구와도 연결할 수 없습니다.",
        "truncated": "처음 {shown}건만 표시합니다(전체 {total}건). 전체는 내보내기로 받으세요.",
        "export": "내보내기",
        "total": "전체 {n}건",
        "no_rows": "없습니다.",
    },
    "en": {
        "title": "My data",
        "none": "This browser has no consent record, so nothing identifiable is held for it.",
        "events": "Identifiable visits and events",
        "receipts": "Consent receipts",
        "pseudo": "Pseudonymised rows (counts only)",
        "pseudo_note": "Pseudonymised data is not linked to your consent id. Rows of days whose salt was "
        "destroyed after 48 hours can no longer be linked to anyone.",
        "truncated": "Showing the first {shown} of {total}. Use an export for all of them.",
        "export": "Export",
        "total": "{n} in all",
        "no_rows": "None.",
    },
}
_HTML_ROWS = 200


def render_html(data: MyData, locale: str, prefix: str) -> str:
    """The page: receipts, identifiable rows (the first few hundred), pseudonymised counts, export links."""
    t = _TEXTS["ko" if locale == "ko" else "en"]
    esc = html.escape
    base = esc(prefix)
    out = [
        f'<!doctype html><html lang="{locale}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(t["title"])}</title><link rel="stylesheet" href="{base}/static/banner.css"></head>'
        f'<body class="cg-page cg-my-data"><main class="cg-wide"><h1>{esc(t["title"])}</h1>'
        f'<p>{esc(t["export"])}: <a href="{base}/my-data?format=json">JSON</a> · '
        f'<a href="{base}/my-data?format=csv">CSV</a> · '
        f'<a href="{base}/my-data?format=csv&amp;part=receipts">CSV ({esc(t["receipts"])})</a></p>'
    ]
    if not data.consent_id:
        out.append(f"<p>{esc(t['none'])}</p>")
    else:
        out.append(f"<h2>{esc(t['receipts'])}</h2>" + _table(data.receipts, RECEIPT_FIELDS, t["no_rows"]))
        out.append(f"<h2>{esc(t['events'])}</h2><p>{esc(t['total'].format(n=data.events_total))}</p>")
        shown = data.events[:_HTML_ROWS]
        if data.events_total > len(shown):
            out.append(f"<p>{esc(t['truncated'].format(shown=len(shown), total=data.events_total))}</p>")
        out.append(_table(shown, EVENT_FIELDS, t["no_rows"]))
    out.append(f"<h2>{esc(t['pseudo'])}</h2><p>{esc(t['pseudo_note'])}</p>")
    if data.pseudonymised:
        out.append("<ul>" + "".join(f"<li>{esc(day)}: {count}</li>" for day, count in data.pseudonymised) + "</ul>")
    else:
        out.append(f"<p>{esc(t['no_rows'])}</p>")
    out.append("</main></body></html>")
    return "".join(out)


def _table(rows: tuple[dict[str, Any], ...], fields: tuple[str, ...], empty: str) -> str:
    """Rows as a table of the columns that hold anything (an export has them all)."""
    esc = html.escape
    if not rows:
        return f"<p>{esc(empty)}</p>"
    shown = [f for f in fields if any(r.get(f) not in (None, "", []) for r in rows)]
    head = "".join(f'<th scope="col">{esc(f)}</th>' for f in shown)
    body = "".join("<tr>" + "".join(f"<td>{esc(_cell(r.get(f)))}</td>" for f in shown) + "</tr>" for r in rows)
    table = f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
    return f'<div class="cg-scroll"><table class="cg-data">{table}</table></div>'


class MyDataEndpoint:
    """``GET {prefix}/my-data``: ``?format=html|json|csv`` (``Accept: application/json`` too), rate-limited.

    ``identify`` turns a request into a ``Visitor`` (the gateway's verified consent cookie and client
    address); ``open_store`` gives this thread's ClickHouse client; ``before_read`` (optional) waits until
    the pipeline has written what it holds, so the page includes the visitor's latest rows.
    """

    def __init__(
        self,
        settings: Settings,
        salts: SaltStore,
        open_store: Callable[[], Store],
        identify: Callable[[Request], Visitor],
        *,
        limiter: TokenBucket | None = None,
        before_read: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.settings = settings
        self._salts = salts
        self._open_store = open_store
        self._identify = identify
        # A whole export is a heavy query: a few a minute per client is plenty for a person.
        self._limiter = limiter or TokenBucket(per_minute=6, burst=3, max_keys=10_000)
        self._before_read = before_read

    def __repr__(self) -> str:
        return f"MyDataEndpoint(prefix={self.settings.prefix!r})"

    async def handle(self, request: Request) -> Response:
        """Answer one request (a Starlette endpoint: ``Route(f"{prefix}/my-data", endpoint.handle)``)."""
        headers = {"Cache-Control": "no-store", "Vary": "Cookie, Accept, Accept-Language"}
        fmt = request.query_params.get("format") or ("json" if wants_json(request) else "html")
        part = request.query_params.get("part", "events")
        if fmt not in ("html", "json", "csv") or part not in ("events", "receipts"):
            return JSONResponse(
                {
                    "error": f"format {fmt[:16]!r} / part {part[:16]!r} is not known; use format=html|json|csv "
                    "and part=events|receipts"
                },
                status_code=400,
                headers=headers,
            )
        visitor = self._identify(request)
        key = client_key(visitor.ip) or (f"cid:{visitor.consent_id}" if visitor.consent_id else "anonymous")
        wait = self._limiter.take(key)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return JSONResponse(
                {"error": f"too many my-data requests from this address; retry in {seconds} s"},
                status_code=429,
                headers={**headers, "Retry-After": str(seconds)},
            )
        if self._before_read is not None and visitor.consent_id:
            await self._before_read()
        data = await asyncio.to_thread(self._read, visitor)
        if fmt == "json":
            return JSONResponse(data.as_json(), headers=headers)
        if fmt == "csv":
            text = to_csv(data.events, EVENT_FIELDS) if part == "events" else to_csv(data.receipts, RECEIPT_FIELDS)
            return Response(
                text.encode("utf-8-sig"),  # the BOM makes spreadsheets read Korean text as UTF-8
                media_type="text/csv; charset=utf-8",
                headers={**headers, "Content-Disposition": f'attachment; filename="my-data-{part}.csv"'},
            )
        locale = request_locale(request, self.settings.default_locale)
        return HTMLResponse(render_html(data, locale, self.settings.prefix), headers=headers)

    def _read(self, visitor: Visitor) -> MyData:
        return read_my_data(self._open_store(), self.settings, self._salts, visitor)
