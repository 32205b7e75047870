"""2. 개인정보 수집 및 이용: marketing (마케팅 및 광고에 활용) is optional (선택), and a refusal keeps
marketing data out entirely: no marketing events, no click ids, no marketing cookies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from consent_gateway.store import Store

from .support import JSON, SITE_COOKIES, VISITOR_IP, choose, flush, page, set_cookie_names

HTML = (b"content-type", b"text/html; charset=utf-8")
CAMPAIGN = b"utm_source=news&utm_campaign=spring&gclid=CLICK123&fbclid=FB456"


def _visit_and_signup(driver: Any, cookie: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> dict[str, int]:
    page(driver, "/landing", cookie=cookie, query=CAMPAIGN, headers=extra)
    body = json.dumps(
        [
            {"name": "signup", "url": "https://site.example/landing?" + CAMPAIGN.decode()},
            {"name": "portfolio_view", "url": "/portfolio?gclid=CLICK123"},
        ]
    ).encode()
    reply = driver.request(
        "POST", "/_consent/collect", headers=[*JSON, (b"cookie", cookie), *(extra or [])], body=body, client=VISITOR_IP
    )
    assert reply.status == 202
    counts: dict[str, int] = json.loads(reply.body)
    return counts


def test_2_refusing_marketing_keeps_marketing_data_out(make_gateway: Callable[..., Any], store: Store) -> None:
    driver, site = make_gateway()
    site.headers = [HTML, *SITE_COOKIES]
    _, cookie = choose(driver, {"action": "save", "categories": ["preferences", "analytics"]})
    assert not any(n.startswith("_mk_") for n in set_cookie_names(page(driver, "/", cookie=cookie)))
    counts = _visit_and_signup(driver, cookie)
    assert counts == {"accepted": 2, "kept": 1, "pseudonymised": 0, "dropped": 1}
    flush(driver)
    rows = store.query_dicts(f"SELECT category, name, click_id, identified FROM {store.table('events')}")
    assert rows and all(r["category"] != "marketing" for r in rows)
    assert all(r["click_id"] == "" for r in rows)
    assert "signup" not in {r["name"] for r in rows}


def test_2_marketing_data_only_with_marketing_consent(make_gateway: Callable[..., Any], store: Store) -> None:
    """The control: with consent the same requests do store the campaign and its click id."""
    driver, _ = make_gateway()
    _, cookie = choose(driver, {"action": "accept_all"})
    assert _visit_and_signup(driver, cookie)["dropped"] == 0
    flush(driver)
    rows = store.query_dicts(f"SELECT name, click_id FROM {store.table('events')} WHERE category = 'marketing'")
    assert [r["name"] for r in rows] == ["signup"] and rows[0]["click_id"] == "gclid:CLICK123"


def test_2_global_privacy_control_refuses_marketing(make_gateway: Callable[..., Any], store: Store) -> None:
    """A browser's Sec-GPC: 1 refuses marketing even after 'accept all'."""
    driver, site = make_gateway()
    site.headers = [HTML, *SITE_COOKIES]
    gpc = [(b"sec-gpc", b"1")]
    reply, cookie = choose(driver, {"action": "accept_all"}, extra=gpc)
    assert json.loads(reply.body)["method"] == "gpc"
    assert not any(n.startswith("_mk_") for n in set_cookie_names(page(driver, "/", cookie=cookie, headers=gpc)))
    assert _visit_and_signup(driver, cookie, gpc)["dropped"] == 1
    flush(driver)
    assert store.query_rows(
        f"SELECT count() FROM {store.table('events')} WHERE category = 'marketing' OR click_id != ''"
    ) == [(0,)]
