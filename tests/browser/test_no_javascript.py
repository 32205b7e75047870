"""With JavaScript disabled in the browser, the server-rendered forms alone give and change consent."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from consent_gateway.settings import BannerTexts

pytestmark = pytest.mark.browser

T = BannerTexts()
NON_NECESSARY = {"_pa_id", "_pa_js", "_mk_px", "_mk_js", "ui_lang"}


def names(context: Any) -> set[str]:
    return {c["name"] for c in context.cookies()}


def test_reject_then_change_in_settings_page(site: Any, new_context: Any) -> None:
    context = new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(site.url + "/students")
    banner = page.locator("#cg-banner")
    expect(banner).to_be_visible()
    assert names(context) & NON_NECESSARY == set()
    banner.get_by_role("button", name=T.reject_ko).click()
    page.wait_for_url(site.url + "/students")
    expect(page.locator("#cg-banner")).to_have_count(0)
    assert "cg_consent" in names(context)
    assert names(context) & NON_NECESSARY == set()
    # The persistent link leads to the settings page, which posts the choice and comes back.
    page.locator(".cg-settings-link").click()
    page.wait_for_url("**/_consent/?**")
    assert parse_qs(urlsplit(page.url).query)["return_to"] == ["/students"]
    expect(page.locator("h1#cg-prefs-title")).to_have_text(T.settings_link_ko)
    expect(page.locator("#cg-cat-necessary")).to_be_disabled()
    expect(page.locator("#cg-cat-analytics")).not_to_be_checked()
    page.locator("#cg-cat-analytics").check()
    page.get_by_role("button", name=T.save_ko).click()
    page.wait_for_url(site.url + "/students")
    jar = names(context)
    assert "_pa_id" in jar  # the redirected-to page was rendered under the new consent
    assert not {"_mk_px", "_mk_js", "ui_lang"} & jar
    # Withdrawal from the settings page deletes the cookies again, HttpOnly _pa_id included.
    page.locator(".cg-settings-link").click()
    page.get_by_role("button", name=T.withdraw_ko).click()
    page.wait_for_url(site.url + "/students")
    assert "cg_consent" not in names(context)
    assert names(context) & NON_NECESSARY == set()
    expect(page.locator("#cg-banner")).to_be_visible()


def test_accept_all_and_settings_button_without_javascript(site: Any, new_context: Any) -> None:
    context = new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(site.url + "/portfolio")
    # "Settings" (same kind of button as the other two) opens the settings page in the banner's language.
    page.locator("#cg-banner").get_by_role("button", name=T.settings_ko).click()
    page.wait_for_url("**/_consent/?**")
    query = parse_qs(urlsplit(page.url).query)
    assert query["return_to"] == ["/portfolio"] and query["locale"] == ["ko"]
    # The language link switches the settings page to English.
    page.get_by_role("link", name=T.other_language_ko).click()
    expect(page.locator("#cg-prefs-title")).to_have_text(T.settings_link_en)
    page.get_by_role("button", name=T.accept_en).click()
    page.wait_for_url(site.url + "/portfolio")
    page.reload()
    assert {"cg_consent", "_pa_id", "_mk_px"} <= names(context)
    expect(page.locator("#cg-banner")).to_have_count(0)
    # Scripts stay off with JavaScript disabled, whatever the consent says.
    assert page.locator("script[type='text/plain'][data-consent]").count() == 2
