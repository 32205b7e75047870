"""``GET {prefix}/my-data`` on the real engine, with rows written through the gateway's own row builder."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from consent_gateway import Settings
from consent_gateway.my_data import MyDataEndpoint, Visitor, cookie_identify, to_csv
from consent_gateway.policy import KEEP, PSEUDONYMISE
from consent_gateway.pseudonymize import SaltStore
from consent_gateway.ratelimit import TokenBucket
from consent_gateway.records import RawRecord, ReceiptRecord
from consent_gateway.rows import RowBuilder
from consent_gateway.signing import ConsentCodec
from consent_gateway.store import Store
from consent_gateway.store.schema import EVENT_COLUMNS, RECEIPT_COLUMNS, migrate

from .conftest import SECRET
from .gateway_support import sign_cookie

CID = "cid-mydata-0123456789"
OTHER = "cid-someone-else-9876"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
IP = "203.0.113.77"


def _record(action: str, consent_id: str | None, path: str, ip: str = IP, ua: str = UA) -> RawRecord:
    return RawRecord.of(
        kind="event",
        name="pageview",
        category="analytics",
        action=action,
        ts=time.time(),
        site="test-site",
        host="example.kr",
        path=path,
        query="utm_source=news",
        referrer="",
        user_agent=ua,
        ip=ip,
        consent_id=consent_id,
        granted=frozenset({"necessary", "analytics"}) if consent_id else frozenset(),
        props={"note": "=cmd|' /C calc'!A0"} if consent_id else None,
    )


@pytest.fixture
def salts(tmp_path: Path) -> SaltStore:
    return SaltStore(tmp_path / "keys")


@pytest.fixture
def held(store: Store, settings: Settings, salts: SaltStore) -> Store:
    """Two identified rows and a receipt of CID, one of someone else, three pseudonymised rows of this browser."""
    migrate(store)
    rows = RowBuilder(settings, salts)
    records = [
        _record(KEEP, CID, "/courses/1"),
        _record(KEEP, CID, "/courses/2"),
        _record(KEEP, OTHER, "/secret-of-other"),
        _record(PSEUDONYMISE, None, "/a"),
        _record(PSEUDONYMISE, None, "/b"),
        _record(PSEUDONYMISE, None, "/c"),
        _record(PSEUDONYMISE, None, "/d", ip="198.51.100.1"),  # another browser
    ]
    lines, _ = rows.event_lines(records)
    store.insert_lines("events", lines, [n for n, _ in EVENT_COLUMNS])
    receipt = ReceiptRecord(
        ts=time.time(),
        site="test-site",
        consent_id=CID,
        version="1.0",
        categories=("necessary", "analytics"),
        method="custom",
        banner_hash="abc",
        locale="ko",
        ip=IP,
        user_agent=UA,
    )
    store.insert_lines("consent_receipts", [rows.receipt_line(receipt)], [n for n, _ in RECEIPT_COLUMNS])
    return store


def _client(endpoint: MyDataEndpoint) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/_consent/my-data", endpoint.handle)])
    transport = httpx.ASGITransport(app=app, client=(IP, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://t", headers={"user-agent": UA})


def _get(endpoint: MyDataEndpoint, *urls: str, cookie: str | None = None, **headers: str) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with _client(endpoint) as client:
            if cookie:
                client.cookies.set("cg_consent", cookie)
            return [await client.get(url, headers=headers) for url in urls]

    return asyncio.run(go())


def _endpoint(settings: Settings, store: Store, salts: SaltStore, limiter: TokenBucket | None = None) -> MyDataEndpoint:
    codec = ConsentCodec(settings.secret_keys, max_age=86400)
    return MyDataEndpoint(settings, salts, lambda: store, cookie_identify(settings, codec), limiter=limiter)


def test_json_for_a_consented_visitor(settings: Settings, held: Store, salts: SaltStore) -> None:
    (r,) = _get(
        _endpoint(settings, held, salts), "/_consent/my-data?format=json", cookie=sign_cookie(SECRET, consent_id=CID)
    )
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    data = r.json()
    assert data["consent_id"] == CID
    assert [e["path"] for e in data["events"]] == ["/courses/1", "/courses/2"] and data["events_total"] == 2
    assert data["events"][0]["utm_source"] == "news" and data["events"][0]["ip_prefix"] == "203.0.113.0/24"
    assert [r["method"] for r in data["receipts"]] == ["custom"]
    # Three pseudonymised rows of this browser today; the other browser's row is not counted.
    assert [d["rows"] for d in data["pseudonymised"]["by_day"]] == [3]
    assert "secret-of-other" not in r.text


def test_csv_exports(settings: Settings, held: Store, salts: SaltStore) -> None:
    endpoint = _endpoint(settings, held, salts)
    events, receipts = _get(
        endpoint,
        "/_consent/my-data?format=csv",
        "/_consent/my-data?format=csv&part=receipts",
        cookie=sign_cookie(SECRET, consent_id=CID),
    )
    assert (
        events.headers["content-type"].startswith("text/csv") and "attachment" in events.headers["content-disposition"]
    )
    rows = list(csv.DictReader(io.StringIO(events.content.decode("utf-8-sig"))))
    assert [r["path"] for r in rows] == ["/courses/1", "/courses/2"]
    assert rows[0]["props"].startswith("{")  # JSON text, not a formula
    (receipt,) = list(csv.DictReader(io.StringIO(receipts.content.decode("utf-8-sig"))))
    assert receipt["categories"] == "necessary|analytics" and receipt["method"] == "custom"


def test_html_in_both_languages_and_for_a_pseudonymised_visitor(
    settings: Settings, held: Store, salts: SaltStore
) -> None:
    endpoint = _endpoint(settings, held, salts, TokenBucket(600, 100))
    ko, en = _get(
        endpoint, "/_consent/my-data?lang=ko", "/_consent/my-data?lang=en", cookie=sign_cookie(SECRET, consent_id=CID)
    )
    assert "내 정보 조회" in ko.text and "/courses/1" in ko.text and "전체 2건" in ko.text
    assert "My data" in en.text and "Consent receipts" in en.text
    # No consent cookie: nothing identifiable, the pseudonymised counts only.
    (anon,) = _get(endpoint, "/_consent/my-data?format=json")
    data = anon.json()
    assert data["consent_id"] is None and data["events"] == [] and data["receipts"] == []
    assert [d["rows"] for d in data["pseudonymised"]["by_day"]] == [3]
    # A forged cookie is not a consent id.
    (forged,) = _get(
        endpoint,
        "/_consent/my-data?format=json",
        cookie=sign_cookie("another-key-0123456789abcdefghijklmn", consent_id=CID),
    )
    assert forged.json()["events"] == []


def test_rate_limited_and_bad_format(settings: Settings, held: Store, salts: SaltStore) -> None:
    endpoint = _endpoint(settings, held, salts, TokenBucket(1, 2))
    responses = _get(endpoint, *["/_consent/my-data?format=json"] * 3, cookie=sign_cookie(SECRET, consent_id=CID))
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert int(responses[2].headers["retry-after"]) >= 1 and "retry in" in responses[2].json()["error"]
    (bad,) = _get(_endpoint(settings, held, salts), "/_consent/my-data?format=xml")
    assert bad.status_code == 400 and "format=html|json|csv" in bad.json()["error"]


def test_visitor_repr_hides_the_consent_id() -> None:
    assert CID not in repr(Visitor(CID, IP, UA))


def test_csv_cells_never_run_as_formulas() -> None:
    text = to_csv(({"path": "=HYPERLINK(1)", "name": "-2", "kind": ["a", "b"]},), ("path", "name", "kind"))
    assert text.splitlines()[1] == "'=HYPERLINK(1),'-2,a|b"
