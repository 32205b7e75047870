"""The banner in a real browser: first visit, the three choices, re-opening, withdrawal, GPC, notices.

Cookies are read from the browser's own store (``context.cookies()``), which holds HttpOnly
cookies too: ``_pa_id`` is set HttpOnly by the demo's server, so only the gateway can keep it out.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from consent_gateway.settings import DEFAULT_CATEGORIES, BannerTexts

from .conftest import upcoming_policy

pytestmark = pytest.mark.browser

T = BannerTexts()
NON_NECESSARY = {"_pa_id", "_pa_js", "_mk_px", "_mk_js", "ui_lang"}
ALL = sorted(c.key for c in DEFAULT_CATEGORIES)


def cookies(context: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in context.cookies()}


def scripts_ran(page: Any) -> dict[str, bool]:
    return page.evaluate(
        "({analytics: window.demoAnalyticsLoaded === true, marketing: window.demoMarketingLoaded === true})"
    )


def gated_left(page: Any) -> list[str]:
    """Categories of the gated scripts still inert on the page."""
    return page.eval_on_selector_all(
        "script[type='text/plain'][data-consent]", "els => els.map(e => e.dataset.consent)"
    )


# A page listener that keeps what it was told across the reload that follows a revocation.
TELL = """consentGateway.on('change', d => sessionStorage.setItem('told',
  JSON.stringify(JSON.parse(sessionStorage.getItem('told') || '[]').concat([d]))))"""


def told(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("JSON.parse(sessionStorage.getItem('told') || '[]')")


def first_layer(page: Any) -> Any:
    return page.locator("#cg-banner")


def test_first_visit_shows_banner_and_runs_nothing(site: Any, new_context: Any) -> None:
    context = new_context()
    page = context.new_page()
    response = page.goto(site.url + "/")
    assert response is not None and response.ok
    banner = first_layer(page)
    expect(banner).to_be_visible()
    assert banner.get_attribute("role") == "dialog"
    assert banner.get_attribute("aria-labelledby") == "cg-title"
    expect(page.locator("#cg-title")).to_have_text(T.title_ko)
    expect(banner.get_by_role("link", name=T.policy_link_ko)).to_have_attribute("href", "/privacy")
    assert scripts_ran(page) == {"analytics": False, "marketing": False}
    assert sorted(gated_left(page)) == ["analytics", "marketing"]
    # The demo server tried to set _pa_id (HttpOnly) and _mk_px on this page: the gateway dropped them.
    assert set(cookies(context)) & NON_NECESSARY == set()
    assert page.evaluate("consentGateway.get()") == {"status": "unset", "categories": ["necessary"], "gpc": False}
    expect(page.locator(".cg-settings-link")).to_have_text(T.settings_link_ko)


def test_accept_all_runs_scripts_without_reload(site: Any, new_context: Any) -> None:
    context = new_context()
    page = context.new_page()
    page.goto(site.url + "/")
    page.evaluate("window.__samePage = true")
    changes = page.evaluate_handle(
        "(() => { const seen = []; consentGateway.on('change', d => seen.push(d)); return seen; })()"
    )
    first_layer(page).get_by_role("button", name=T.accept_ko).click()
    expect(first_layer(page)).to_have_count(0)
    page.wait_for_function("window.demoAnalyticsLoaded && window.demoMarketingLoaded")
    assert page.evaluate("window.__samePage") is True
    assert gated_left(page) == []
    assert page.evaluate("consentGateway.get().categories") == ALL
    assert changes.json_value() == [{"status": "given", "categories": ALL, "revoked": []}]
    expect(page.locator(".cg-sr[role=status]")).to_have_text(T.saved_ko)
    jar = cookies(context)
    assert {"cg_consent", "_pa_js", "_mk_js"} <= set(jar)
    page.reload()
    jar = cookies(context)
    assert {"_pa_id", "_mk_px"} <= set(jar)
    assert jar["_pa_id"]["httpOnly"] is True  # the store shows HttpOnly cookies, so their absence above counts
    expect(first_layer(page)).to_have_count(0)
    page.wait_for_function("window.demoAnalyticsLoaded && window.demoMarketingLoaded")


def test_reject_all_keeps_everything_off(site: Any, new_context: Any) -> None:
    context = new_context()
    page = context.new_page()
    page.goto(site.url + "/students")
    first_layer(page).get_by_role("button", name=T.reject_ko).click()
    expect(first_layer(page)).to_have_count(0)
    page.wait_for_function("consentGateway.get().status === 'given'")
    assert page.evaluate("consentGateway.get().categories") == ["necessary"]
    assert sorted(gated_left(page)) == ["analytics", "marketing"]
    page.reload()
    assert sorted(gated_left(page)) == ["analytics", "marketing"]
    assert scripts_ran(page) == {"analytics": False, "marketing": False}
    jar = cookies(context)
    assert "cg_consent" in jar and jar["cg_consent"]["httpOnly"] is True
    assert set(jar) & NON_NECESSARY == set()


def test_custom_choice_in_second_layer(site: Any, new_context: Any) -> None:
    context = new_context()
    page = context.new_page()
    page.goto(site.url + "/portfolio")
    first_layer(page).get_by_role("button", name=T.settings_ko).click()
    prefs = page.locator("#cg-prefs")
    expect(prefs).to_be_visible()
    assert prefs.get_attribute("role") == "dialog" and prefs.get_attribute("aria-modal") == "true"
    expect(page.locator("#cg-prefs-title")).to_have_text(T.settings_link_ko)
    # One toggle per category with its description and the registry's cookie names.
    assert page.eval_on_selector_all("#cg-prefs input[name=categories]", "els => els.map(e => e.value)") == [
        c.key for c in DEFAULT_CATEGORIES
    ]
    necessary = page.locator("#cg-cat-necessary")
    expect(necessary).to_be_checked()
    expect(necessary).to_be_disabled()
    for cat in DEFAULT_CATEGORIES:
        expect(page.locator(f"#cg-desc-{cat.key} .cg-description")).to_have_text(cat.description_ko)
        if not cat.required:
            expect(page.locator(f"#cg-cat-{cat.key}")).not_to_be_checked()
    expect(page.locator("#cg-desc-analytics .cg-cookies")).to_have_text(f"{T.cookies_ko}: _pa_id, _pa_js")
    expect(page.locator("#cg-desc-marketing .cg-cookies")).to_have_text(f"{T.cookies_ko}: _mk_*")
    # Everything behind the modal layer is inert.
    assert page.evaluate("document.getElementById('cg-root').inert")
    assert page.evaluate("document.getElementById('main').closest('[inert]') !== null")
    page.get_by_label(DEFAULT_CATEGORIES[2].name_ko).check()  # analytics
    prefs.get_by_role("button", name=T.save_ko).click()
    expect(prefs).to_have_count(0)
    page.wait_for_function("window.demoAnalyticsLoaded === true")
    assert gated_left(page) == ["marketing"]
    assert page.evaluate("consentGateway.get().categories") == ["analytics", "necessary"]
    assert page.evaluate("document.getElementById('cg-root').inert") is False
    page.reload()
    jar = cookies(context)
    assert {"_pa_id", "_pa_js"} <= set(jar)
    assert not {"_mk_px", "_mk_js", "ui_lang"} & set(jar)


def test_reopen_change_and_withdraw(site: Any, new_context: Any) -> None:
    context = new_context()
    page = context.new_page()
    page.goto(site.url + "/")
    first_layer(page).get_by_role("button", name=T.accept_ko).click()
    page.wait_for_function("window.demoAnalyticsLoaded && window.demoMarketingLoaded")
    page.goto(site.url + "/attendance")
    page.wait_for_function("window.demoMarketingLoaded === true")
    assert {"_pa_id", "_mk_px", "_mk_js"} <= set(cookies(context))
    # The persistent button re-opens the settings on a page the server rendered without the form.
    assert page.locator("#cg-banner, #cg-prefs").count() == 0
    page.locator(".cg-settings-link").click()
    expect(page.locator("#cg-prefs")).to_be_visible()
    for key in ("preferences", "analytics", "marketing"):
        expect(page.locator(f"#cg-cat-{key}")).to_be_checked()
    page.locator("#cg-cat-marketing").uncheck()
    page.evaluate(TELL)
    # Marketing scripts already ran: the page is told, then reloads so that only allowed ones run.
    with page.expect_navigation():
        page.locator("#cg-prefs").get_by_role("button", name=T.save_ko).click()
    assert told(page) == [
        {"status": "given", "categories": ["analytics", "necessary", "preferences"], "revoked": ["marketing"]}
    ]
    page.wait_for_function("window.demoAnalyticsLoaded === true")
    assert gated_left(page) == ["marketing"]
    jar = cookies(context)
    assert {"_pa_id", "_pa_js"} <= set(jar)
    assert not {"_mk_px", "_mk_js"} & set(jar)
    # Withdrawal: the page is told, the server expires every non-necessary cookie, the page reloads.
    page.evaluate("consentGateway.open()")
    page.evaluate(TELL)
    withdraw = page.locator("#cg-prefs").get_by_role("button", name=T.withdraw_ko)
    with page.expect_navigation():
        withdraw.click()
    assert told(page)[-1] == {"status": "unset", "categories": [], "revoked": ["analytics"], "withdrawn": True}
    expect(first_layer(page)).to_be_visible()
    jar = cookies(context)
    assert "cg_consent" not in jar
    assert set(jar) & NON_NECESSARY == set()
    assert sorted(gated_left(page)) == ["analytics", "marketing"]


def test_gpc_refuses_marketing_and_says_so(site: Any, new_context: Any) -> None:
    context = new_context(extra_http_headers={"Sec-GPC": "1"})
    page = context.new_page()
    page.goto(site.url + "/")
    expect(first_layer(page).locator(".cg-gpc")).to_have_text(T.gpc_notice_ko)
    first_layer(page).get_by_role("button", name=T.accept_ko).click()
    page.wait_for_function("window.demoAnalyticsLoaded === true")
    assert page.evaluate("consentGateway.get()") == {
        "status": "given",
        "categories": ["analytics", "necessary", "preferences"],
        "gpc": True,
    }
    assert gated_left(page) == ["marketing"]
    page.evaluate("consentGateway.open()")
    expect(page.locator("#cg-prefs .cg-gpc")).to_have_text(T.gpc_notice_ko)
    expect(page.locator("#cg-cat-marketing")).to_be_disabled()
    expect(page.locator("#cg-cat-marketing")).not_to_be_checked()
    page.reload()
    assert not {"_mk_px", "_mk_js"} & set(cookies(context))
    assert "_pa_id" in cookies(context)


def test_upcoming_policy_notice_with_date(serve: Any, new_context: Any) -> None:
    upcoming = upcoming_policy()
    site = serve(upcoming_policy=upcoming)
    page = new_context().new_page()
    page.goto(site.url + "/")
    expected = T.upcoming_notice_ko.format(version="1.1", date=upcoming.effective.isoformat())
    expect(first_layer(page).locator(".cg-upcoming")).to_have_text(expected)
    first_layer(page).get_by_role("button", name=T.settings_ko).click()
    expect(page.locator("#cg-prefs .cg-upcoming")).to_have_text(expected)
    page.locator("#cg-prefs [data-cg-lang=en]").click()
    expect(page.locator("#cg-prefs .cg-upcoming")).to_have_text(
        T.upcoming_notice_en.format(version="1.1", date=upcoming.effective.isoformat())
    )


def test_google_consent_mode_defaults_then_updates(serve: Any, new_context: Any) -> None:
    site = serve(google_consent_mode=True)
    page = new_context().new_page()
    page.goto(site.url + "/")
    # banner.js runs before the site's own scripts, so the defaults come before any tag.
    order = page.evaluate(
        "[...document.scripts].map(s => s.getAttribute('src') || '')"
        ".filter(s => s.endsWith('.js') && !s.includes('-demo'))"
    )
    assert order[0] == "/_consent/static/banner.js" and "/static/app.js" in order[1:]
    layer = page.evaluate("dataLayer.map(a => Array.from(a))")
    assert layer[0][:2] == ["consent", "default"]
    assert {k: v for k, v in layer[0][2].items() if k.startswith("ad_") or k == "analytics_storage"} == {
        "ad_storage": "denied",
        "ad_user_data": "denied",
        "ad_personalization": "denied",
        "analytics_storage": "denied",
    }
    assert len(layer) == 1
    first_layer(page).get_by_role("button", name=T.settings_ko).click()
    page.locator("#cg-cat-analytics").check()
    page.locator("#cg-prefs").get_by_role("button", name=T.save_ko).click()
    page.wait_for_function("dataLayer.length === 2")
    update = page.evaluate("Array.from(dataLayer[1])")
    assert update[:2] == ["consent", "update"]
    assert update[2]["analytics_storage"] == "granted"
    assert update[2]["ad_storage"] == "denied" and update[2]["ad_user_data"] == "denied"
    page.reload()
    layer = page.evaluate("dataLayer.map(a => Array.from(a))")
    assert [entry[1] for entry in layer] == ["default", "update"]
    assert layer[1][2]["analytics_storage"] == "granted"


def test_persistent_settings_button_on_every_page(site: Any, new_context: Any) -> None:
    context = new_context()
    page = context.new_page()
    page.goto(site.url + "/")
    first_layer(page).get_by_role("button", name=T.reject_ko).click()
    page.wait_for_function("consentGateway.get().status === 'given'")
    for path in ("/students", "/portfolio", "/attendance", "/privacy", "/login", "/no-such-page"):
        page.goto(site.url + path)
        link = page.locator(".cg-settings-link")
        expect(link).to_be_visible()
        assert link.get_attribute("href", timeout=1000).startswith("/_consent/?return_to=")
    page.locator(".cg-settings-link").click()
    expect(page.locator("#cg-prefs")).to_be_visible()
    expect(page.locator("#cg-cat-analytics")).not_to_be_checked()


def test_receipts_record_each_choice(site: Any, new_context: Any) -> None:
    context = new_context()
    page = context.new_page()
    page.goto(site.url + "/")
    first_layer(page).get_by_role("button", name=T.reject_ko).click()
    page.wait_for_function("consentGateway.get().status === 'given'")
    page.evaluate("consentGateway.open()")
    page.locator("#cg-prefs [data-cg-lang=en]").click()
    page.locator("#cg-cat-analytics").check()
    page.locator("#cg-prefs").get_by_role("button", name=T.save_en).click()
    page.wait_for_function("consentGateway.get().categories.includes('analytics')")
    body = page.request.get(site.url + "/_consent/receipts").json()
    assert [(r["method"], r["locale"]) for r in body["receipts"]] == [("reject_all", "ko"), ("custom", "en")]
    assert sorted(body["receipts"][1]["categories"]) == ["analytics", "necessary"]
