"""The well-known cookie catalogue: the shipped data file's validity and the lookup rules."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from consent_gateway.catalogue import CACHED_NAME_MAX, CATEGORY_KEYS, LOOKUP_CACHE_SIZE, Catalogue, Entry
from consent_gateway.errors import SettingsError
from consent_gateway.settings import DEFAULT_CATEGORIES

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "consent_gateway" / "cookie_catalogue.toml"
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def entry(name: str, category: str = "analytics", provider: str = "Vendor") -> Entry:
    return Entry(name, provider, category, "목적", "purpose", "1 year")


# -- the shipped data -------------------------------------------------------------------------


def test_shipped_catalogue_loads_and_every_entry_is_complete() -> None:
    catalogue = Catalogue.load()
    entries = list(catalogue)
    assert len(catalogue) == len(entries) >= 60
    assert set(CATEGORY_KEYS) == {c.key for c in DEFAULT_CATEGORIES}
    for e in entries:
        assert e.category in CATEGORY_KEYS, e
        assert HANGUL.search(e.purpose_ko), f"{e.name}: purpose_ko is not Korean"
        assert not HANGUL.search(e.purpose_en), f"{e.name}: purpose_en is not English"
        assert e.provider.strip() and e.lifetime.strip()
        assert catalogue.lookup(e.name.replace("*", "x").replace("?", "y")) is not None
    # Every category except none is represented, so the banner can list examples for each.
    assert {e.category for e in entries} == set(CATEGORY_KEYS)


def test_shipped_catalogue_names_its_source_and_licence() -> None:
    head = DATA.read_text("utf-8").split("[[cookie]]", 1)[0]
    assert "Source:" in head and "Licence:" in head
    assert "vendor's or framework's own" in head


@pytest.mark.parametrize(
    ("name", "category"),
    [
        # Framework sessions and CSRF: a visitor who refuses everything stays logged in.
        ("sessionid", "necessary"),
        ("csrftoken", "necessary"),
        ("messages", "necessary"),
        ("session", "necessary"),
        ("XSRF-TOKEN", "necessary"),
        ("laravel_session", "necessary"),
        ("_session_id", "necessary"),
        ("connect.sid", "necessary"),
        ("PHPSESSID", "necessary"),
        ("JSESSIONID", "necessary"),
        ("ASP.NET_SessionId", "necessary"),
        (".AspNetCore.Antiforgery.9fXoN5jHCXs", "necessary"),
        (".AspNetCore.Session", "necessary"),
        ("AWSALB", "necessary"),
        ("AWSALBCORS", "necessary"),
        ("ARRAffinity", "necessary"),
        ("__cf_bm", "necessary"),
        # Analytics.
        ("_ga", "analytics"),
        ("_ga_Q2W3E4R5T6", "analytics"),
        ("_gid", "analytics"),
        ("_gat", "analytics"),
        ("_gat_UA-12345-1", "analytics"),
        ("_clck", "analytics"),
        ("_clsk", "analytics"),
        ("_hjSessionUser_2077791", "analytics"),
        ("_hjSession_2077791", "analytics"),
        ("_hjAbsoluteSessionInProgress", "analytics"),
        ("mp_0123456789abcdef_mixpanel", "analytics"),
        ("AMP_0123456789", "analytics"),
        ("ajs_anonymous_id", "analytics"),
        ("ajs_group_id", "analytics"),
        ("ph_phc_abc123_posthog", "analytics"),
        ("wcs_bt", "analytics"),
        ("NWB", "analytics"),
        # Advertising.
        ("_gcl_au", "marketing"),
        ("_gcl_aw", "marketing"),
        ("IDE", "marketing"),
        ("_fbp", "marketing"),
        ("_fbc", "marketing"),
        ("_naver_usersync", "marketing"),
        ("_T_ANO", "marketing"),
        # Channel.io's support chat, named by the seed policy.
        ("ch-veil-id", "preferences"),
        ("ch-session-125719", "preferences"),
    ],
)
def test_well_known_names_get_their_category(name: str, category: str) -> None:
    assert Catalogue.load().category_of(name) == category


@pytest.mark.parametrize("name", ["cg_consent", "ui_lang", "sessionid2", "_gax", "Session", "xAspNetCorey", ""])
def test_unknown_names_are_not_guessed(name: str) -> None:
    assert Catalogue.load().lookup(name) is None


def test_load_is_parsed_once() -> None:
    assert Catalogue.load() is Catalogue.load()


def test_package_data_ships_the_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    globs = project["tool"]["setuptools"]["package-data"]["consent_gateway"]
    assert any(fnmatch.fnmatch("cookie_catalogue.toml", g) for g in globs)


# -- lookup rules -----------------------------------------------------------------------------


def test_exact_name_beats_any_pattern() -> None:
    catalogue = Catalogue([entry("ab*", "marketing"), entry("abc", "necessary")])
    assert catalogue.lookup("abc") == entry("abc", "necessary")
    assert catalogue.category_of("abd") == "marketing"


def test_most_literal_characters_win_whatever_the_file_order() -> None:
    catalogue = Catalogue([entry("_x*", "analytics"), entry("_xSession_*", "preferences"), entry("_xS*", "marketing")])
    assert catalogue.category_of("_xSession_1") == "preferences"
    assert catalogue.category_of("_xSomething") == "marketing"
    assert catalogue.category_of("_xid") == "analytics"


def test_equal_patterns_prefer_the_earlier_entry() -> None:
    catalogue = Catalogue([entry("a*z", "marketing"), entry("ab*", "analytics")])
    assert catalogue.category_of("abz") == "marketing"


def test_question_mark_is_one_character_and_dots_are_literal() -> None:
    catalogue = Catalogue([entry("id?", "analytics"), entry(".Net.*", "necessary")])
    assert catalogue.category_of("id7") == "analytics"
    assert catalogue.lookup("id") is None and catalogue.lookup("id77") is None
    assert catalogue.category_of(".Net.x") == "necessary"
    assert catalogue.lookup("xNetyx") is None


def test_names_are_case_sensitive() -> None:
    catalogue = Catalogue([entry("PHPSESSID", "necessary")])
    assert catalogue.lookup("phpsessid") is None


def test_lookup_cache_is_bounded() -> None:
    catalogue = Catalogue([entry("ab*", "analytics")])
    for i in range(LOOKUP_CACHE_SIZE + 50):
        assert catalogue.category_of(f"ab{i}") == "analytics"
    long_name = "ab" * CACHED_NAME_MAX
    assert catalogue.category_of(long_name) == "analytics"
    info = catalogue.lookup_cache_info()
    assert info.currsize == LOOKUP_CACHE_SIZE  # type: ignore[attr-defined]
    assert info.misses == LOOKUP_CACHE_SIZE + 50  # type: ignore[attr-defined]  # the long name bypassed it


def test_entry_purpose_by_locale() -> None:
    e = Catalogue.load().lookup("_ga")
    assert e is not None
    assert e.purpose("ko") == e.purpose_ko and e.purpose("en") == e.purpose_en
    assert not e.is_pattern and Catalogue.load().lookup("_ga_X").is_pattern  # type: ignore[union-attr]


# -- invalid data: a clear error naming the entry, the value and the fix ----------------------

GOOD = """
[[cookie]]
name = "sid"
provider = "App"
category = "necessary"
purpose_ko = "세션"
purpose_en = "Session"
lifetime = "session"
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD.replace('"necessary"', '"ads"'),
            r"cookie 1\.category.*'ads'.*necessary, preferences, analytics, marketing",
        ),
        (GOOD.replace('lifetime = "session"\n', ""), r"cookie 1\.lifetime.*give lifetime"),
        (GOOD.replace('provider = "App"', 'provider = ""'), r"cookie 1\.provider.*non-empty string"),
        (GOOD + 'colour = "red"\n', r"cookie 1\.colour.*allowed keys"),
        (GOOD + GOOD, r"cookie 2\.name.*'sid'.*once"),
        (GOOD.replace('"sid"', '"s id"'), r"cookie 1\.name.*'s id'.*cookie-name characters"),
        (GOOD.replace('"sid"', '"*"'), r"cookie 1\.name.*'\*'.*two literal characters"),
        (GOOD.replace('"sid"', '"s[ab]"'), r"cookie 1\.name.*cookie-name characters"),
        ("title = 1\n" + GOOD, r"title.*only \[\[cookie\]\]"),
        ("", r"cookie.*one or more \[\[cookie\]\]"),
        ("[[cookie]\n", r"fix the TOML syntax"),
    ],
)
def test_invalid_catalogue_is_refused_with_what_to_do(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Catalogue.from_toml(text, source="site.toml")


def test_load_from_a_path_and_a_missing_path(tmp_path: Path) -> None:
    own = tmp_path / "cookies.toml"
    own.write_text(GOOD, "utf-8")
    catalogue = Catalogue.load(own)
    assert catalogue.category_of("sid") == "necessary"
    assert repr(catalogue) == f"Catalogue(1 entries from {own})"
    with pytest.raises(SettingsError, match=r"catalogue.*missing\.toml.*cannot read it"):
        Catalogue.load(tmp_path / "missing.toml")
