"""The banner's server-rendered markup: where the settings button goes, when the policy link shows."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consent_gateway.banner import BannerRenderer
from consent_gateway.consent import Consent, ConsentStatus
from consent_gateway.errors import SettingsError
from consent_gateway.registry import CategoryRegistry
from consent_gateway.settings import Settings

UNSET = Consent(ConsentStatus.UNSET, frozenset({"necessary"}))


def renderer(settings: Settings) -> BannerRenderer:
    cookies = CategoryRegistry(settings.cookie_registry, unknown_category=settings.unknown_cookie_category)
    return BannerRenderer(settings, cookies)


@pytest.mark.parametrize("place", ["bottom-left", "bottom-right"])
def test_floating_settings_button_placement(make_settings: Callable[..., Settings], place: str) -> None:
    html = renderer(make_settings(settings_button=place)).render(UNSET, "ko", "/")
    assert f'class="cg-root cg-at-{place}"' in html
    assert 'class="cg-settings-link"' in html


def test_no_floating_button_when_the_site_has_its_own(make_settings: Callable[..., Settings]) -> None:
    html = renderer(make_settings(settings_button="none")).render(UNSET, "en", "/")
    assert 'class="cg-root cg-at-none"' in html
    assert "cg-settings-link" not in html
    assert 'id="cg-banner"' in html  # the choice itself is still offered


def test_unknown_placement_is_refused_with_the_choices(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match=r"settings_button.*'top'.*bottom-left, bottom-right, none"):
        make_settings(settings_button="top")


def test_policy_link_only_with_a_policy_url(make_settings: Callable[..., Settings]) -> None:
    with_url = renderer(make_settings(policy_url="/privacy"))
    assert '<a href="/privacy">' in with_url.render(UNSET, "ko", "/")
    assert '<a href="/privacy">' in with_url.settings_form(UNSET, "ko", "/")
    without = renderer(make_settings(policy_url=""))
    for html in (without.render(UNSET, "ko", "/"), without.settings_form(UNSET, "en", "/")):
        assert "/privacy" not in html
        assert '<p id="cg-text" class="cg-text">' in html or '<p id="cg-prefs-text" class="cg-text">' in html


def test_choices_sit_outside_the_scrolling_text(make_settings: Callable[..., Settings]) -> None:
    """The actions follow .cg-body rather than sit in it, so CSS can keep them in view."""
    r = renderer(make_settings())
    for html in (r.render(UNSET, "ko", "/"), r.settings_form(UNSET, "ko", "/")):
        body = html.index('<div class="cg-body">')
        actions = html.index('<div class="cg-actions">')
        assert body < actions
        assert html.count("<div", body, actions) == html.count("</div>", body, actions)
