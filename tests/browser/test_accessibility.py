"""Keyboard, screen sizes, colour schemes, languages and an axe-core audit of both banner layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from consent_gateway.settings import DEFAULT_CATEGORIES, BannerTexts

from .conftest import screenshot

pytestmark = pytest.mark.browser

T = BannerTexts()
FOCUSED = """() => {
  const el = document.activeElement;
  return {id: el.id, text: (el.textContent || '').trim(), tag: el.tagName,
          inPrefs: !!el.closest('#cg-prefs-wrap'), inBanner: !!el.closest('#cg-banner')};
}"""


def focused(page: Any) -> dict[str, Any]:
    return page.evaluate(FOCUSED)


def tab_until(page: Any, text: str | None = None, element_id: str | None = None, limit: int = 30) -> dict[str, Any]:
    """Press Tab until the focused element has ``text`` or ``element_id``; fail after ``limit`` presses."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        now = focused(page)
        if (text is not None and now["text"] == text) or (element_id is not None and now["id"] == element_id):
            return now
    raise AssertionError(f"Tab never reached {text or element_id!r}; focus is on {focused(page)}")


def test_keyboard_only_through_both_layers(site: Any, new_context: Any) -> None:
    page = new_context().new_page()
    page.goto(site.url + "/")
    # Focus starts in the first layer, which is not modal: the page stays usable.
    page.wait_for_function("document.activeElement.id === 'cg-banner'")
    assert page.get_attribute("#cg-banner", "aria-modal") == "false"
    order = [tab_until(page, T.accept_ko)["text"]]
    for _ in range(2):
        page.keyboard.press("Tab")
        order.append(focused(page)["text"])
    assert order == [T.accept_ko, T.reject_ko, T.settings_ko]
    outline = page.evaluate("(s => s.outlineStyle + ' ' + s.outlineWidth)(getComputedStyle(document.activeElement))")
    assert outline == "solid 3px"  # a visible focus ring on the focused control
    page.keyboard.press("Enter")
    expect(page.locator("#cg-prefs")).to_be_visible()
    page.wait_for_function("document.activeElement.id === 'cg-prefs'")
    # Focus is trapped: twice round the dialog's controls in either direction never leaves it.
    count = page.evaluate(
        "[...document.querySelectorAll('#cg-prefs a[href], #cg-prefs button:not([disabled]),"
        " #cg-prefs input:not([disabled]):not([type=hidden])')].length"
    )
    for key in ("Tab", "Shift+Tab"):
        for _ in range(2 * count + 1):
            page.keyboard.press(key)
            assert focused(page)["inPrefs"], f"{key} left the dialog"
    # Space toggles a category, Esc closes the second layer and returns to the settings button.
    page.locator("#cg-prefs").focus()
    tab_until(page, element_id="cg-cat-analytics")
    page.keyboard.press("Space")
    expect(page.locator("#cg-cat-analytics")).to_be_checked()
    page.keyboard.press("Escape")
    expect(page.locator("#cg-prefs")).to_have_count(0)
    assert focused(page)["text"] == T.settings_ko and focused(page)["inBanner"]
    # Open again, choose analytics only, save with Enter.
    page.keyboard.press("Enter")
    page.wait_for_function("document.activeElement.id === 'cg-prefs'")
    tab_until(page, element_id="cg-cat-analytics")
    page.keyboard.press("Space")
    tab_until(page, T.save_ko)
    page.keyboard.press("Enter")
    page.wait_for_function("window.demoAnalyticsLoaded === true")
    assert page.evaluate("window.demoMarketingLoaded") is None
    expect(page.locator("#cg-banner")).to_have_count(0)
    # Focus lands on the persistent settings button, which opens with Space like any button.
    assert page.evaluate("document.activeElement.classList.contains('cg-settings-link')")
    page.keyboard.press("Space")
    expect(page.locator("#cg-prefs")).to_be_visible()
    expect(page.locator("#cg-cat-analytics")).to_be_checked()
    expect(page.locator("#cg-cat-marketing")).not_to_be_checked()
    page.keyboard.press("Escape")
    expect(page.locator("#cg-prefs")).to_have_count(0)
    assert page.evaluate("document.activeElement.classList.contains('cg-settings-link')")


def test_choices_have_equal_weight(site: Any, new_context: Any) -> None:
    page = new_context().new_page()
    page.goto(site.url + "/")
    styles = page.eval_on_selector_all(
        "#cg-banner .cg-actions > *",
        """els => els.map(e => { const s = getComputedStyle(e), r = e.getBoundingClientRect();
            return {tag: e.tagName, bg: s.backgroundColor, fg: s.color, weight: s.fontWeight, size: s.fontSize,
                    border: s.borderTopColor, w: Math.round(r.width), h: Math.round(r.height)}; })""",
    )
    assert len(styles) == 3
    assert all(s == styles[0] for s in styles), styles
    page.locator("#cg-banner [data-cg-settings]").click()
    expect(page.locator("#cg-prefs")).to_be_visible()
    second = page.eval_on_selector_all(
        "#cg-prefs .cg-actions > *",
        """els => els.map(e => { const s = getComputedStyle(e), r = e.getBoundingClientRect();
            return [s.backgroundColor, s.color, s.fontWeight, Math.round(r.width), Math.round(r.height)]; })""",
    )
    assert len(second) == 3 and all(s == second[0] for s in second), second


@pytest.mark.parametrize(
    ("viewport", "scale", "label"),
    [({"width": 360, "height": 740}, 1, "360px"), ({"width": 640, "height": 400}, 2, "zoom200")],
)
def test_small_screen_and_200_percent_zoom(
    site: Any, new_context: Any, viewport: dict[str, int], scale: int, label: str
) -> None:
    """360 px wide, and a 1280x800 screen at 200% zoom (640x400 CSS pixels): nothing overflows sideways."""
    page = new_context(viewport=viewport, device_scale_factor=scale).new_page()
    page.goto(site.url + "/")
    width = viewport["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    box = page.locator("#cg-banner").bounding_box()
    assert box is not None and box["width"] <= width and box["height"] <= viewport["height"]
    for name in (T.accept_ko, T.reject_ko, T.settings_ko):
        button = page.locator("#cg-banner").get_by_role("button", name=name)
        button.scroll_into_view_if_needed()
        b = button.bounding_box()
        assert b is not None and b["x"] >= 0 and b["x"] + b["width"] <= width and b["height"] >= 44
    screenshot(page, f"layer1-ko-{label}")
    page.locator("#cg-banner [data-cg-settings]").click()
    prefs = page.locator("#cg-prefs")
    expect(prefs).to_be_visible()
    box = prefs.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
    assert box["height"] <= viewport["height"]
    save = prefs.get_by_role("button", name=T.save_ko)
    save.scroll_into_view_if_needed()
    b = save.bounding_box()
    assert b is not None and 0 <= b["y"] and b["y"] + b["height"] <= viewport["height"]
    screenshot(page, f"layer2-ko-{label}")


def test_reduced_motion_and_dark_scheme(site: Any, new_context: Any) -> None:
    page = new_context().new_page()
    page.emulate_media(reduced_motion="no-preference", color_scheme="light")
    page.goto(site.url + "/")
    banner = "getComputedStyle(document.getElementById('cg-banner'))"
    assert page.evaluate(f"{banner}.animationName") == "cg-in"
    assert page.evaluate(f"{banner}.backgroundColor") == "rgb(255, 255, 255)"
    page.emulate_media(reduced_motion="reduce", color_scheme="dark")
    assert page.evaluate(f"{banner}.animationName") == "none"
    assert page.evaluate(f"{banner}.backgroundColor") == "rgb(27, 27, 31)"
    assert page.evaluate(f"{banner}.color") == "rgb(236, 236, 241)"
    screenshot(page, "layer1-ko-dark")


def test_korean_and_english(site: Any, new_context: Any) -> None:
    """Korean from the page's lang, English by the switch, by the page's lang, and by Accept-Language."""
    context = new_context()
    page = context.new_page()
    page.goto(site.url + "/")
    banner = page.locator("#cg-banner")
    expect(banner).to_have_attribute("lang", "ko")
    expect(banner.locator(".cg-text")).to_contain_text(T.text_ko)
    expect(banner.locator(".cg-actions > *")).to_have_text([T.accept_ko, T.reject_ko, T.settings_ko])
    screenshot(page, "layer1-ko")
    banner.get_by_role("link", name=T.other_language_ko).click()
    expect(banner.locator("#cg-title")).to_have_text(T.title_en)
    expect(page.locator("#cg-banner")).to_have_attribute("lang", "en")
    expect(page.locator("#cg-banner .cg-text")).to_contain_text(T.text_en)
    expect(page.locator("#cg-banner .cg-actions > *")).to_have_text([T.accept_en, T.reject_en, T.settings_en])
    expect(page.locator(".cg-settings-link")).to_have_text(T.settings_link_en)
    assert page.evaluate("document.activeElement.dataset.cgLang") == "ko"  # focus stays on the switch
    screenshot(page, "layer1-en")
    page.locator("#cg-banner [data-cg-settings]").click()
    expect(page.locator("#cg-prefs-title")).to_have_text(T.settings_link_en)
    expect(page.locator("#cg-prefs .cg-category-name")).to_have_text(
        [c.name_en + (f" ({T.always_on_en})" if c.required else "") for c in DEFAULT_CATEGORIES]
    )
    page.locator("#cg-cat-analytics").check()
    screenshot(page, "layer2-en")
    # Switching language keeps the unsaved toggles.
    page.locator("#cg-prefs [data-cg-lang=ko]").click()
    expect(page.locator("#cg-prefs-title")).to_have_text(T.settings_link_ko)
    expect(page.locator("#cg-prefs .cg-category-name")).to_have_text(
        [c.name_ko + (f" ({T.always_on_ko})" if c.required else "") for c in DEFAULT_CATEGORIES]
    )
    expect(page.locator("#cg-cat-analytics")).to_be_checked()
    screenshot(page, "layer2-ko")
    # The English site (its own language cookie) gets the English banner from the server.
    context.add_cookies([{"name": "ui_lang", "value": "en", "url": site.url}])
    page.goto(site.url + "/students")
    expect(page.locator("#cg-banner")).to_have_attribute("lang", "en")
    expect(page.locator("#cg-title")).to_have_text(T.title_en)
    # A page without a lang of its own (the settings page) follows Accept-Language.
    for locale, title in (("en-US", T.settings_link_en), ("ko-KR", T.settings_link_ko)):
        other = new_context(locale=locale).new_page()
        other.goto(site.url + "/_consent/")
        expect(other.locator("#cg-prefs-title")).to_have_text(title)


AUDIT = """async (selector) => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                      nodes: v.nodes.map(n => n.target.join(' '))}));
}"""


def audit(page: Any, axe_script: Path) -> list[dict[str, Any]]:
    # Colour contrast is judged on the final frame, not halfway through the entrance animation.
    page.wait_for_function("document.getAnimations().every(a => a.playState !== 'running')")
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(axe_script))
    return page.evaluate(AUDIT)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_violations_on_either_layer(site: Any, new_context: Any, axe_script: Path, scheme: str) -> None:
    page = new_context(color_scheme=scheme).new_page()
    page.goto(site.url + "/")
    # Prove the audit sees the banner: it is in the tree and the audit runs over the whole page.
    expect(page.locator("#cg-banner")).to_be_visible()
    for locale in ("ko", "en"):
        if locale == "en":
            page.locator("#cg-banner [data-cg-lang=en]").click()
            expect(page.locator("#cg-title")).to_have_text(T.title_en)
        assert audit(page, axe_script) == [], f"first layer, {locale}, {scheme}"
        page.locator("#cg-banner [data-cg-settings]").click()
        expect(page.locator("#cg-prefs")).to_be_visible()
        assert audit(page, axe_script) == [], f"second layer, {locale}, {scheme}"
        page.keyboard.press("Escape")
        expect(page.locator("#cg-prefs")).to_have_count(0)
    # The settings page without JavaScript is audited too.
    page.goto(site.url + "/_consent/?locale=ko")
    assert audit(page, axe_script) == [], f"settings page, {scheme}"


def test_axe_catches_a_broken_banner(site: Any, new_context: Any, axe_script: Path) -> None:
    """The audit is not vacuous: an unlabelled dialog and an unnamed button are reported."""
    page = new_context().new_page()
    page.goto(site.url + "/")
    page.evaluate(
        "document.getElementById('cg-title').remove();document.querySelector('#cg-banner .cg-button').textContent = ''"
    )
    found = {v["id"] for v in audit(page, axe_script)}
    assert "button-name" in found
