"""The settings the declaration and the children's rule read: cookie descriptions, behavioural categories."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_gateway import Settings, SettingsError
from consent_gateway.settings import Category, CookieDescription


@pytest.fixture(autouse=True)
def _no_gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CONSENT_GATEWAY_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = Settings()
    assert s.consent.behavioural == s.behavioural_categories == ("marketing",)
    assert s.cookie.descriptions == s.cookie_descriptions == ()


def test_behavioural_categories_from_toml_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "consent.toml"
    path.write_text('behavioural_categories = ["marketing", "preferences"]\n', encoding="utf-8")
    assert Settings.load(path).consent.behavioural == ("marketing", "preferences")
    monkeypatch.setenv("CONSENT_GATEWAY_BEHAVIOURAL_CATEGORIES", "analytics,marketing")
    assert Settings.load(path).consent.behavioural == ("analytics", "marketing")


@pytest.mark.parametrize(("value", "fix"), [(("ads",), "use categories from"), (("necessary",), "cannot be refused")])
def test_behavioural_categories_are_checked(value: tuple[str, ...], fix: str) -> None:
    with pytest.raises(SettingsError, match=fix) as caught:
        Settings(behavioural_categories=value)
    assert caught.value.key == "behavioural_categories"


def test_custom_categories_without_marketing_set_their_own() -> None:
    cats = (
        Category(key="essential", name_ko="필수", name_en="Essential", required=True),
        Category(key="ads", name_ko="광고", name_en="Ads"),
    )
    with pytest.raises(SettingsError, match="behavioural_categories"):
        Settings(
            categories=cats,
            visit_category="ads",
            marketing_category="ads",
            gpc_refuses=("ads",),
            unknown_cookie_category="ads",
            unknown_event_category="ads",
            event_registry=(),
        )
    s = Settings(
        categories=cats,
        visit_category="ads",
        marketing_category="ads",
        gpc_refuses=("ads",),
        behavioural_categories=("ads",),
        unknown_cookie_category="ads",
        unknown_event_category="ads",
        event_registry=(),
        policy_matrix=(("visit", "keep", "pseudonymise"),),
    )
    assert s.consent.behavioural == ("ads",)


def test_cookie_descriptions_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "consent.toml"
    path.write_text(
        '[cookie_descriptions."_ga"]\nprovider = "Google"\npurpose_en = "Visitor statistics"\nparty = "third"\n'
        '[cookie_descriptions.sid]\nlifetime_ko = "세션"\n',
        encoding="utf-8",
    )
    got = dict(Settings.load(path).cookie.descriptions)
    assert got["_ga"] == CookieDescription(provider="Google", purpose_en="Visitor statistics", party="third")
    assert got["sid"].lifetime_ko == "세션"
    assert "cookie_descriptions" in repr(Settings.load(path)) or "descriptions" in repr(Settings.load(path))


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('cookie_descriptions = "x"\n', "cookie_descriptions"),
        ('[cookie_descriptions]\nsid = "x"\n', "cookie_descriptions.sid"),
        ("[cookie_descriptions.sid]\npurpose_en = 3\n", "cookie_descriptions.sid.purpose_en"),
        ('[cookie_descriptions.sid]\nprovder = "x"\n', "cookie_descriptions.sid.provder"),
    ],
)
def test_bad_cookie_descriptions_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "consent.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        Settings.load(path)
    assert caught.value.key == key
    if key.endswith("provder"):
        assert "did you mean 'provider'" in caught.value.fix
