"""The public cookie declaration and the policy section, from the registry, catalogue and a real inventory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from consent_gateway import Settings, SettingsError
from consent_gateway.declaration import (
    CookieDeclarationEndpoint,
    CookieDescription,
    build_declaration,
    lifetime_text,
    policy_section,
)
from consent_gateway.inventory import (
    Classifier,
    CookieInventory,
    create_inventory_table,
    flush_inventory,
    read_inventory,
)
from consent_gateway.store import Store
from consent_gateway.store.schema import migrate

from .test_inventory import catalogue

DESCRIPTIONS = {
    "palette_session": CookieDescription(
        purpose_ko="로그인 상태를 유지합니다.", purpose_en="Keeps you signed in.", provider="Palette"
    ),
}


@pytest.fixture
def filled(store: Store, settings: Settings) -> Callable[[], Any]:
    """An inventory in ClickHouse: server-set, catalogued, script-set and unknown script-only names."""
    migrate(store)
    create_inventory_table(store)
    inventory = CookieInventory(Classifier.from_settings(settings, catalogue))
    inventory.observe_set_cookie("palette_session=v; Path=/; HttpOnly", path="/", granted=True, blocked=False)
    inventory.observe_set_cookie("_mk_pixel=v; Max-Age=7776000", path="/", granted=False, blocked=True)
    inventory.observe_set_cookie("csrftoken=v; Max-Age=31449600", path="/login", granted=True, blocked=False)
    inventory.observe_request_cookies(["_ga", "<script>alert(1)</script>"], path="/", granted=["necessary"])
    flush_inventory(store, inventory, settings.site_id)
    return lambda: read_inventory(store, settings.site_id)


def _get(endpoint: CookieDeclarationEndpoint, url: str, **headers: str) -> httpx.Response:
    app = Starlette(routes=[Route("/_consent/cookies", endpoint.handle)])

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get(url, headers=headers)

    return asyncio.run(go())


def test_lifetime_text() -> None:
    assert lifetime_text(-1) == ("브라우저 종료 시까지", "Until the browser closes")
    assert lifetime_text(63_072_000) == ("2년", "2 years")
    assert lifetime_text(7_776_000) == ("3개월", "3 months")
    assert lifetime_text(86_400) == ("1일", "1 day")
    assert lifetime_text(1800) == ("30분", "30 minutes")


def test_declaration_merges_registry_catalogue_and_inventory(settings: Settings, filled: Callable[[], Any]) -> None:
    d = build_declaration(settings, Classifier.from_settings(settings, catalogue), filled(), DESCRIPTIONS)
    by_cat = {cat.key: {c.name: c for c in cookies} for cat, cookies in d.categories}
    assert [cat.key for cat, _ in d.categories] == ["necessary", "preferences", "analytics", "marketing"]
    session = by_cat["necessary"]["palette_session"]
    assert (session.provider, session.purpose_en, session.lifetime_en) == (
        "Palette",
        "Keeps you signed in.",
        "Until the browser closes",
    )
    assert by_cat["necessary"]["cg_consent"].lifetime_en == "365 days"
    csrf = by_cat["necessary"]["csrftoken"]
    assert (csrf.provider, csrf.source, csrf.party, csrf.lifetime_ko) == ("Django", "catalogue", "first", "1년")
    ga = by_cat["analytics"]["_ga"]
    assert (ga.provider, ga.party, ga.set_by, ga.lifetime_en) == ("Google Analytics", "third", "script", "2 years")
    assert by_cat["marketing"]["_mk_pixel"].lifetime_en == "3 months"
    assert "_mk_*" in by_cat["marketing"]  # a registered pattern is declared as written
    # Nothing said of ui_lang: the site is its provider and its category's purpose is its purpose.
    lang = by_cat["preferences"]["ui_lang"]
    assert lang.provider == "" and lang.purpose_en == "Remember settings such as your language and tailor the service."
    assert "| ui_lang | 회사 | 언어 같은 환경설정을 기억하고" in policy_section(d, locale="ko")
    # A name only strangers' requests carried, unknown to registry and catalogue, is not published.
    assert all("<script>" not in c.name for c in d.cookies())


def test_endpoint_html_in_both_languages_and_json(settings: Settings, filled: Callable[[], Any]) -> None:
    endpoint = CookieDeclarationEndpoint(
        settings, Classifier.from_settings(settings, catalogue), filled, descriptions=DESCRIPTIONS
    )
    ko = _get(endpoint, "/_consent/cookies", **{"accept-language": "ko-KR,ko;q=0.9"})
    assert ko.status_code == 200 and ko.headers["content-type"].startswith("text/html")
    assert "쿠키 목록" in ko.text and "로그인 상태를 유지합니다." in ko.text and "제3자" in ko.text
    assert '<html lang="ko">' in ko.text
    en = _get(endpoint, "/_consent/cookies?lang=en", **{"accept-language": "ko"})
    assert "Cookie declaration" in en.text and "Keeps you signed in." in en.text and "Third party" in en.text
    assert "Marketing and advertising" in en.text and "<code>_mk_pixel</code>" in en.text
    js = _get(endpoint, "/_consent/cookies", accept="application/json")
    assert js.headers["content-type"] == "application/json"
    cats = {c["key"]: c for c in js.json()["categories"]}
    assert {c["name"] for c in cats["analytics"]["cookies"]} >= {"_ga", "_pa_id", "_pa_js"}
    assert "Accept" in js.headers["vary"]


def test_endpoint_serves_without_clickhouse(settings: Settings) -> None:
    def broken() -> Any:
        raise RuntimeError("ClickHouse is down")

    endpoint = CookieDeclarationEndpoint(settings, Classifier.from_settings(settings, catalogue), broken)
    page = _get(endpoint, "/_consent/cookies?lang=en")
    assert page.status_code == 200 and "palette_session" in page.text


def test_policy_section_lists_what_is_set_and_how_to_refuse(settings: Settings, filled: Callable[[], Any]) -> None:
    d = build_declaration(settings, Classifier.from_settings(settings, catalogue), filled(), DESCRIPTIONS)
    ko = policy_section(d, locale="ko")
    assert ko.startswith("## 개인정보 자동수집 장치의 설치·운영 및 거부에 관한 사항")
    assert "| _ga | Google Analytics | 방문자 구분 | 2년 | 제3자 |" in ko
    assert "쿠키 설정" in ko and "Chrome" in ko and "/_consent/cookies?lang=ko" in ko
    en = policy_section(d, locale="en", fmt="html")
    assert en.startswith("<section><h2>Installation, operation and refusal")
    assert "<td>csrftoken</td><td>Django</td>" in en and "Refusing cookies" in en
    with pytest.raises(ValueError, match="use markdown or html"):
        policy_section(d, locale="en", fmt="pdf")


def test_descriptions_from_the_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "consent.toml"
    path.write_text(
        '[cookies]\n"sid" = "necessary"\n'
        '[cookie_descriptions."sid"]\nprovider = "Palette"\npurpose_ko = "로그인 유지"\npurpose_en = "Sign-in"\n'
        'party = "first"\n',
        encoding="utf-8",
    )
    settings = Settings.load(path)
    assert dict(settings.cookie_descriptions)["sid"] == CookieDescription(
        provider="Palette", purpose_ko="로그인 유지", purpose_en="Sign-in", party="first"
    )
    (sid,) = [c for c in build_declaration(settings, Classifier.from_settings(settings)).cookies() if c.name == "sid"]
    assert (sid.provider, sid.purpose_ko) == ("Palette", "로그인 유지")
    for table, key in (
        ('colour = "red"', "cookie_descriptions.sid.colour"),
        ('party = "fourth"', "cookie_descriptions.sid.party"),
    ):
        path.write_text(f'[cookie_descriptions."sid"]\n{table}\n', encoding="utf-8")
        with pytest.raises(SettingsError) as caught:
            Settings.load(path)
        assert caught.value.key == key
