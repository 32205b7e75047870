"""Under a strict nonce CSP: src-gated scripts and gated iframes, and the tracker's beacons.

``/lab`` (added to the demo site by the browser conftest) sends
``script-src 'nonce-…'`` with no ``'unsafe-inline'``; the gateway copies the nonce onto its own
script tag and banner.js onto the scripts it activates.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import expect

from consent_gateway.settings import BannerTexts

from .conftest import LAB_NONCE

pytestmark = pytest.mark.browser

T = BannerTexts()
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def test_strict_csp_with_nonce_gates_src_scripts_and_iframes(site: Any, new_context: Any) -> None:
    context = new_context()
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    response = page.goto(site.url + "/lab")
    assert response is not None and "'nonce-" in response.headers["content-security-policy"]
    # The gateway gave its script the page's nonce, so banner.js runs under the policy.
    assert page.evaluate("document.querySelector('script[src$=\"/banner.js\"]').nonce") == LAB_NONCE
    expect(page.locator("#cg-banner")).to_be_visible()
    assert page.get_attribute("#ad", "src") is None
    # The banner's own style sheet applies (style-src 'self'); nothing inline is needed.
    assert page.evaluate("getComputedStyle(document.getElementById('cg-banner')).position") == "fixed"
    page.locator("#cg-banner").get_by_role("button", name=T.settings_en).click()
    page.locator("#cg-cat-marketing").check()
    page.locator("#cg-prefs").get_by_role("button", name=T.save_en).click()
    expect(page.locator("#ad")).to_have_attribute("src", "/lab/frame")
    expect(page.frame_locator("#ad").locator("body")).to_have_text("marketing frame")
    assert page.evaluate("window.demoAnalyticsLoaded") is None
    assert page.locator("script[type='text/plain'][data-consent=analytics]").count() == 1
    # Now analytics too: the src-gated script runs with the nonce banner.js copies onto it.
    page.evaluate("consentGateway.open()")
    page.locator("#cg-cat-analytics").check()
    page.locator("#cg-prefs").get_by_role("button", name=T.save_en).click()
    expect(page.locator("body")).to_have_attribute("data-analytics", "on")
    assert page.evaluate("window.__csp") == []
    # The policy is really enforced: a script without the nonce is refused and reported.
    page.evaluate(
        "(() => { const s = document.createElement('script'); s.src = '/static/marketing-demo.js';"
        " document.body.appendChild(s); })()"
    )
    page.wait_for_function("() => window.__csp.length === 1")
    assert page.evaluate("window.demoMarketingLoaded") is None


def test_tracker_sends_spa_views_and_events_the_server_keeps(serve: Any, new_context: Any) -> None:
    site = serve(
        event_registry=(
            ("pageview", "analytics"),
            ("signup", "marketing"),
            ("portfolio_view", "analytics"),
            ("promo_*", "marketing"),
        )
    )
    context = new_context()
    page = context.new_page()
    beacons: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: beacons.append(json.loads(r.post_data or "{}")) if r.url.endswith("/_consent/collect") else None,
    )
    page.goto(site.url + "/lab")
    page.wait_for_function("() => typeof consentGateway.track === 'function'")
    # No consent yet: a marketing event would be dropped by the server, so it is not sent at all.
    assert page.evaluate("consentGateway.track('signup', {plan: 'trial'})") is False
    assert page.evaluate("consentGateway.track('promo_spring')") is False  # a glob in the registry
    with page.expect_request("**/_consent/collect") as sent:
        assert page.evaluate("consentGateway.track('portfolio_view', {piece: 3})") is True
    answer = sent.value.response()
    assert answer is not None and answer.status == 202
    assert answer.json() == {"accepted": 1, "kept": 0, "pseudonymised": 1, "dropped": 0}
    with page.expect_request("**/_consent/collect"):
        page.evaluate("history.pushState({}, '', '/lab/next?tab=2')")
    with page.expect_request("**/_consent/collect"):
        page.go_back()
    # With marketing granted the same event goes out and is kept.
    page.locator("#cg-banner").get_by_role("button", name=T.accept_en).click()
    page.wait_for_function("() => consentGateway.get().categories.includes('marketing')")
    with page.expect_request("**/_consent/collect") as sent:
        assert page.evaluate("consentGateway.track('signup', {plan: 'trial'})") is True
    answer = sent.value.response()
    assert answer is not None and answer.json()["kept"] == 1
    with page.expect_request("**/_consent/collect"):
        assert page.evaluate("consentGateway.track('promo_spring')") is True
    # The page view of /lab itself was logged by the gateway when it served the page: not sent again.
    assert [(b["name"], b["url"]) for b in beacons] == [
        ("portfolio_view", "/lab"),
        ("pageview", "/lab/next?tab=2"),
        ("pageview", "/lab"),
        ("signup", "/lab"),
        ("promo_spring", "/lab"),
    ]
    assert beacons[0]["props"] == {"piece": 3}
