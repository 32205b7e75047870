"""The banner on every screen: all three choices in view, and a settings button that covers nothing.

Each case opens the demo site in Chromium at one screen size (200% zoom is a halved CSS viewport
at twice the pixel density, which is what the browser's zoom does), shows both layers in one
language and asserts that every choice button lies inside the viewport and is the element found
at its own centre (nothing covers it, no scrolling needed). Screenshots go to
test-output/screenshots/screens-*.png for a person to look at.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from consent_gateway.settings import BannerTexts

from .conftest import screenshot

pytestmark = pytest.mark.browser

T = BannerTexts()
# (name, CSS viewport width, height, device scale factor): 200% zoom halves the CSS viewport.
SCREENS = [
    ("320x568", 320, 568, 1),
    ("360x740", 360, 740, 1),
    ("768x1024", 768, 1024, 1),
    ("1280x800", 1280, 800, 1),
    ("1280x800-zoom200", 640, 400, 2),
    ("360x740-zoom200", 180, 370, 2),
]
LANGS = ["ko", "en"]

# For each element: its rectangle, and whether it is the topmost element at its own centre.
IN_VIEW = """sel => [...document.querySelectorAll(sel)].map(el => {
  const r = el.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return {text: el.textContent.trim(), top: r.top, bottom: r.bottom, left: r.left, right: r.right,
          width: r.width, height: r.height, vw: innerWidth, vh: innerHeight,
          covered: !(hit && (hit === el || el.contains(hit)))};
})"""

# Rectangles of the demo footer's text: the copyright line and the privacy-policy link.
FOOTER = """() => [...document.querySelectorAll('.site-footer p:first-child, .site-footer a')].map(el => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const r = range.getBoundingClientRect();
  return {text: el.textContent.trim(), top: r.top, bottom: r.bottom, left: r.left, right: r.right};
})"""

BUTTON = """() => { const r = document.querySelector('.cg-settings-link').getBoundingClientRect();
  return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; }"""


def texts(lang: str, *keys: str) -> list[str]:
    return [T.get(key, lang) for key in keys]


def assert_all_in_view(page: Any, selector: str, expected: list[str], where: str) -> None:
    boxes = page.evaluate(IN_VIEW, selector)
    assert [b["text"] for b in boxes] == expected, where
    for b in boxes:
        assert b["width"] > 0 and b["height"] > 0, f"{where}: {b['text']!r} is not rendered: {b}"
        assert b["top"] >= 0 and b["left"] >= 0, f"{where}: {b['text']!r} starts outside the viewport: {b}"
        assert b["bottom"] <= b["vh"] and b["right"] <= b["vw"], f"{where}: {b['text']!r} ends outside: {b}"
        assert not b["covered"], f"{where}: {b['text']!r} is covered by another element: {b}"


def overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def open_page(new_context: Any, url: str, width: int, height: int, scale: int, **options: Any) -> Any:
    context = new_context(viewport={"width": width, "height": height}, device_scale_factor=scale, **options)
    page = context.new_page()
    page.emulate_media(reduced_motion="reduce")
    response = page.goto(url)
    assert response is not None and response.ok
    return page


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("name", "width", "height", "scale"), SCREENS, ids=[s[0] for s in SCREENS])
def test_both_layers_show_every_choice(
    site: Any, new_context: Any, name: str, width: int, height: int, scale: int, lang: str
) -> None:
    page = open_page(new_context, site.url + "/", width, height, scale)
    banner = page.locator("#cg-banner")
    expect(banner).to_be_visible()
    if lang == "en":
        banner.locator("[data-cg-lang]").click()
        expect(page.locator("#cg-title")).to_have_text(T.title_en)
    assert_all_in_view(page, "#cg-banner .cg-actions > *", texts(lang, "accept", "reject", "settings"), name)
    screenshot(page, f"screens-{name}-{lang}-layer1")

    banner.locator("[data-cg-settings]").click()
    prefs = page.locator("#cg-prefs")
    expect(prefs).to_be_visible()
    expect(prefs).to_have_attribute("lang", lang)
    assert_all_in_view(page, "#cg-prefs .cg-actions > *", texts(lang, "accept", "reject", "save"), name)
    screenshot(page, f"screens-{name}-{lang}-layer2")

    # Refusing from the settings layer works from where it stands, without scrolling to it.
    prefs.get_by_role("button", name=T.get("reject", lang)).click()
    expect(page.locator("#cg-prefs")).to_have_count(0)
    assert page.evaluate("consentGateway.get().status") == "given"


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("name", "width", "height", "scale"), [SCREENS[0], SCREENS[4]], ids=["320x568", "zoom200"])
def test_settings_page_without_javascript_shows_every_choice(
    site: Any, new_context: Any, name: str, width: int, height: int, scale: int, lang: str
) -> None:
    url = f"{site.url}/_consent/?return_to=%2F&locale={lang}"
    page = open_page(new_context, url, width, height, scale, java_script_enabled=False)
    assert_all_in_view(page, "#cg-prefs .cg-actions > *", texts(lang, "accept", "reject", "save"), name)
    screenshot(page, f"screens-{name}-{lang}-nojs-settings")
    page.get_by_role("button", name=T.get("reject", lang)).click()
    page.wait_for_url(site.url + "/")
    expect(page.locator("#cg-banner")).to_have_count(0)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("name", "width", "height", "scale"), SCREENS[:4], ids=[s[0] for s in SCREENS[:4]])
def test_settings_button_leaves_the_footer_uncovered(
    site: Any, new_context: Any, name: str, width: int, height: int, scale: int, lang: str
) -> None:
    page = open_page(new_context, site.url + "/", width, height, scale)
    page.locator("#cg-banner").get_by_role("button", name=T.accept_ko).click()
    expect(page.locator("#cg-banner")).to_have_count(0)
    # Preferences are granted now, so the demo's language cookie is kept.
    page.context.add_cookies([{"name": "ui_lang", "value": lang, "url": site.url}])
    page.reload()
    expect(page.locator(".cg-settings-link")).to_have_text(T.get("settings_link", lang))
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    button = page.evaluate(BUTTON)
    footer = page.evaluate(FOOTER)
    assert len(footer) == 2 and footer[0]["text"].startswith("©"), footer
    for part in footer:
        assert not overlaps(button, part), f"{name}: the settings button {button} covers {part}"
    assert_all_in_view(page, ".cg-settings-link", [T.get("settings_link", lang)], name)
    screenshot(page, f"screens-{name}-{lang}-footer")


def test_settings_button_on_the_right(serve: Any, new_context: Any) -> None:
    site = serve(settings_button="bottom-right")
    page = open_page(new_context, site.url + "/", 360, 740, 1)
    page.locator("#cg-banner").get_by_role("button", name=T.reject_ko).click()
    expect(page.locator("#cg-banner")).to_have_count(0)
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    button = page.evaluate(BUTTON)
    assert button["right"] > 300 and button["left"] > 180, button
    for part in page.evaluate(FOOTER):
        assert not overlaps(button, part), f"the settings button {button} covers {part}"
    screenshot(page, "screens-360x740-ko-button-right")


def test_site_supplies_its_own_settings_control(serve: Any, new_context: Any) -> None:
    """With settings_button = "none" nothing floats; any element with data-cg-open-settings opens the layer."""
    site = serve(settings_button="none")
    page = open_page(new_context, site.url + "/", 360, 740, 1)
    expect(page.locator("#cg-banner")).to_be_visible()
    page.locator("#cg-banner").get_by_role("button", name=T.reject_ko).click()
    expect(page.locator("#cg-banner")).to_have_count(0)
    expect(page.locator(".cg-settings-link")).to_have_count(0)
    # The site's own control, as its footer markup would carry it.
    page.evaluate(
        """() => { const b = document.createElement('button'); b.type = 'button'; b.id = 'own';
        b.setAttribute('data-cg-open-settings', ''); b.append('Cookies');
        document.querySelector('.site-footer .footer-inner').append(b); }"""
    )
    page.locator("#own").click()
    prefs = page.locator("#cg-prefs")
    expect(prefs).to_be_visible()
    assert_all_in_view(page, "#cg-prefs .cg-actions > *", texts("ko", "accept", "reject", "save"), "none")
    page.keyboard.press("Escape")
    expect(prefs).to_have_count(0)
    assert page.evaluate("document.activeElement.id") == "own"


def test_no_policy_link_without_a_policy_url(serve: Any, new_context: Any) -> None:
    site = serve(policy_url="")
    page = open_page(new_context, site.url + "/", 1280, 800, 1)
    banner = page.locator("#cg-banner")
    expect(banner.locator(".cg-text")).to_have_text(T.text_ko)
    expect(banner.locator(".cg-text a")).to_have_count(0)
    banner.locator("[data-cg-lang]").click()  # the layer rebuilt by banner.js from /state
    expect(banner.locator(".cg-text")).to_have_text(T.text_en)
    expect(banner.locator(".cg-text a")).to_have_count(0)
    banner.locator("[data-cg-settings]").click()
    expect(page.locator("#cg-prefs .cg-text")).to_have_text(T.text_en)
    expect(page.locator("#cg-prefs .cg-text a")).to_have_count(0)
