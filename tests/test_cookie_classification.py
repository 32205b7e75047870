"""Which category a cookie gets: the site's registry, then the well-known catalogue, then the default."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from consent_gateway import ConsentGateway, Settings
from consent_gateway.catalogue import Catalogue
from consent_gateway.cli import DEMO_CONFIG
from consent_gateway.demo import create_demo_app
from consent_gateway.registry import CACHED_NAME_MAX, CategoryRegistry, Classification, Source
from consent_gateway.runtime import GatewayRuntime

from .conftest import PSEUDONYM_KEY, SECRET
from .gateway_support import client_for, set_cookie_map

CATEGORIES = ("necessary", "preferences", "analytics", "marketing")


def registry(entries: tuple[tuple[str, str], ...] = (), **kwargs: object) -> CategoryRegistry:
    options: dict[str, object] = {"catalogue": Catalogue.load(), "categories": CATEGORIES}
    options.update(kwargs)
    return CategoryRegistry(entries, unknown_category="preferences", **options)  # type: ignore[arg-type]


def test_the_catalogue_answers_for_names_the_site_did_not_register() -> None:
    cookies = registry()
    assert cookies.classify("sessionid") == Classification("necessary", Source.CATALOGUE, "Django")
    assert cookies.classify("csrftoken").category == "necessary"
    assert cookies.classify("_ga") == Classification("analytics", Source.CATALOGUE, "Google Analytics")
    assert cookies.classify("_ga_4XJ2").source is Source.CATALOGUE  # by the catalogue's pattern
    assert cookies.classify("_fbp").category == "marketing"
    assert cookies.classify("house_made") == Classification("preferences", Source.UNCLASSIFIED)
    assert cookies.category_of("sessionid") == "necessary"


def test_the_site_registry_wins_over_the_catalogue() -> None:
    cookies = registry((("_ga", "marketing"), ("sess*", "preferences")))
    assert cookies.classify("_ga") == Classification("marketing", Source.REGISTRY)
    assert cookies.classify("sessionid") == Classification("preferences", Source.REGISTRY)  # a pattern too
    assert cookies.classify("csrftoken").source is Source.CATALOGUE


def test_without_the_catalogue_only_the_registry_decides() -> None:
    cookies = registry((("_pa_id", "analytics"),), catalogue=None)
    assert cookies.classify("sessionid") == Classification("preferences", Source.UNCLASSIFIED)
    assert cookies.classify("_pa_id") == Classification("analytics", Source.REGISTRY)


def test_a_catalogue_category_the_site_does_not_offer_is_not_used() -> None:
    cookies = registry(categories=("necessary", "preferences", "analytics"))  # no "marketing"
    assert cookies.classify("_fbp") == Classification("preferences", Source.UNCLASSIFIED)
    assert cookies.classify("_ga").source is Source.CATALOGUE


def test_only_names_nobody_knows_are_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    cookies = registry(cache_size=0)  # no cache: every call really looks up
    with caplog.at_level(logging.WARNING, logger="consent_gateway.registry"):
        for _ in range(3):
            cookies.classify("sessionid")
            cookies.classify("_ga")
            cookies.classify("house_made")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert "'house_made'" in warned[0] and "cookie catalogue" in warned[0] and "[cookies]" in warned[0]


def test_the_lookup_cache_is_bounded_in_names_and_length() -> None:
    cookies = registry(cache_size=8)
    for i in range(50):
        assert cookies.category_of(f"_ga_{i}") == "analytics"
    assert cookies.cache_info().currsize == 8  # type: ignore[attr-defined]
    long_name = "_ga_" + "x" * CACHED_NAME_MAX
    before = cookies.cache_info()
    assert cookies.classify(long_name) == Classification("analytics", Source.CATALOGUE, "Google Analytics 4")
    after = cookies.cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)  # type: ignore[attr-defined]


def test_the_gateway_uses_the_catalogue_unless_turned_off(make_settings: Callable[..., Settings]) -> None:
    on = GatewayRuntime(make_settings(cookie_registry=()))
    assert on.cookies.classify("csrftoken") == Classification("necessary", Source.CATALOGUE, "Django")
    assert on.cookies.classify("cg_consent").source is Source.REGISTRY  # the gateway's own cookie
    off = GatewayRuntime(make_settings(cookie_registry=(), cookie_catalogue=False))
    assert off.cookies.classify("csrftoken").source is Source.UNCLASSIFIED


def test_the_catalogue_setting_reads_from_toml_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "consent.toml"
    config.write_text("[cookie]\ncatalogue = false\n", encoding="utf-8")
    assert Settings.load(config, environ={}).cookie.catalogue is False
    assert Settings().cookie_catalogue is True
    assert Settings.load(None, environ={"CONSENT_GATEWAY_COOKIE_CATALOGUE": "false"}).cookie.catalogue is False


def test_the_banner_links_to_a_policy_only_when_one_is_configured(make_settings: Callable[..., Settings]) -> None:
    assert Settings().policy_url == ""
    with client_for(ConsentGateway(create_demo_app(), make_settings())) as client:
        page = client.get("/students").text
    assert "cg-banner" in page and 'href="/privacy"' not in page.split("cg-banner", 1)[1].split("</section>")[0]
    demo = Settings.load(DEMO_CONFIG, secret_keys=(SECRET,), pseudonym_key=PSEUDONYM_KEY)
    assert demo.policy_url == "/privacy"


def test_the_demo_language_switch_works_after_reject_all(make_settings: Callable[..., Settings]) -> None:
    """The demo's language cookie is set only by the visitor's own button: it is necessary there."""
    demo = Settings.load(DEMO_CONFIG, secret_keys=(SECRET,), pseudonym_key=PSEUDONYM_KEY)
    settings = make_settings(cookie_registry=demo.cookie_registry)
    with client_for(ConsentGateway(create_demo_app(), settings)) as client:
        assert client.post("/_consent/", data={"action": "reject_all", "return_to": "/"}).status_code == 303
        switched = client.post("/settings/language", data={"lang": "en"}, headers={"Referer": "/students"})
        assert switched.status_code == 303, switched.text
        assert "ui_lang" in set_cookie_map(switched)
        assert '<html lang="en">' in client.get("/students").text
        # "reject all" again (a later change of mind) keeps the visitor's language.
        again = client.post("/_consent/", data={"action": "reject_all", "return_to": "/"})
        assert "ui_lang" not in set_cookie_map(again)
        assert '<html lang="en">' in client.get("/").text
