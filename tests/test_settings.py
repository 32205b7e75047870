"""Settings from TOML and ``CONSENT_GATEWAY_*`` variables; every error names the key, the value and the fix."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from consent_gateway import Settings, SettingsError
from consent_gateway.settings import DEFAULT_CATEGORIES
from tests.conftest import OLD_SECRET, PSEUDONYM_KEY, SECRET

FULL_TOML = f"""
site_id = "palette"
data_dir = "var"
secret_keys = ["{OLD_SECRET}", "{SECRET}"]
pseudonym_key = "{PSEUDONYM_KEY}"
prefix = "/privacy-gate"
trusted_proxies = ["10.0.0.0/8", "127.0.0.1"]

[cookie]
max_age_days = 180
secure = false

[policy]
version = "1.2"
effective = 2026-01-01
url = "/privacy"
[policy.upcoming]
version = "2.0"
announced = 2026-11-01
effective = 2026-12-15

[cookies]
palette_session = "necessary"
"_ga*" = "analytics"

[events]
signup = "analytics"

[retention]
events_retention_months = 3
receipts_retention_years = 6

[pipeline]
flush_interval = 2.5
batch_size = 2000

[collect]
max_events = 20

[[categories]]
key = "necessary"
required = true
name_ko = "필수"
name_en = "Strictly necessary"

[[categories]]
key = "preferences"
name_ko = "환경설정"
name_en = "Preferences"

[[categories]]
key = "analytics"
name_ko = "통계"
name_en = "Analytics"

[[categories]]
key = "marketing"
name_ko = "마케팅"
name_en = "Marketing"
description_en = "Ads."
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "consent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_full_toml_is_read(tmp_path: Path) -> None:
    s = Settings.load(_write(tmp_path, FULL_TOML), environ={})
    assert s.site_id == "palette"
    assert s.data_dir == (tmp_path / "var").resolve()  # relative to the file, not the cwd
    assert s.clickhouse_dsn == f"chdb://{(tmp_path / 'var' / 'clickhouse').resolve()}"
    assert s.embedded and s.migrate_at_start
    assert s.secret_keys == (OLD_SECRET, SECRET)
    assert s.prefix == "/privacy-gate"
    assert s.cookie_max_age_days == 180 and s.cookie_secure is False
    assert (str(s.policy), s.policy.effective) == ("1.2", dt.date(2026, 1, 1))
    assert s.upcoming_policy is not None and str(s.upcoming_policy) == "2.0"
    assert s.cookie_registry == (("palette_session", "necessary"), ("_ga*", "analytics"))
    assert s.event_registry == (("signup", "analytics"),)
    assert s.receipts_retention_years == 6
    assert s.flush_interval == 2.5 and s.batch_size == 2000
    assert s.collect_max_events == 20
    assert s.category_keys == ("necessary", "preferences", "analytics", "marketing")
    assert s.category("marketing").description("en") == "Ads."
    assert s.required_categories == frozenset({"necessary"})
    assert s.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")


def test_defaults_follow_the_seed_policy() -> None:
    s = Settings()
    assert s.category_keys == ("necessary", "preferences", "analytics", "marketing")
    assert s.categories == DEFAULT_CATEGORIES
    assert s.category("preferences").name_ko == "환경설정·맞춤 서비스"
    assert s.category("marketing").name("en") == "Marketing and advertising"
    assert s.prefix == "/_consent" and s.cookie_name == "cg_consent"
    assert s.cookie_max_age_days == 365 and s.cookie_secure is True
    assert s.events_retention_months == 3 and s.receipts_retention_years == 5
    assert s.unknown_cookie_category == "preferences"
    assert s.clickhouse_dsn.startswith("chdb://") and s.clickhouse_dsn.endswith("/data/clickhouse")


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    environ = {
        "CONSENT_GATEWAY_SITE_ID": "from-env",
        "CONSENT_GATEWAY_SECRET_KEYS": f"{SECRET}, {OLD_SECRET}",
        "CONSENT_GATEWAY_COOKIE_SECURE": "true",
        "CONSENT_GATEWAY_FLUSH_INTERVAL": "0.5",
        "CONSENT_GATEWAY_COLLECT_MAX_EVENTS": "7",
        "UNRELATED": "ignored",
    }
    s = Settings.load(_write(tmp_path, FULL_TOML), environ=environ)
    assert s.site_id == "from-env"
    assert s.secret_keys == (SECRET, OLD_SECRET)
    assert s.cookie_secure is True
    assert s.flush_interval == 0.5
    assert s.collect_max_events == 7
    assert s.cookie_max_age_days == 180  # untouched values stay from the file


def test_config_path_from_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL_TOML)
    s = Settings.load(environ={"CONSENT_GATEWAY_CONFIG": str(path)})
    assert s.site_id == "palette"


def test_overrides_win_over_everything(tmp_path: Path) -> None:
    s = Settings.load(_write(tmp_path, FULL_TOML), environ={"CONSENT_GATEWAY_SITE_ID": "env"}, site_id="kw")
    assert s.site_id == "kw"


def test_settings_are_immutable() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.site_id = "x"  # type: ignore[misc]
    assert s.replace(site_id="y").site_id == "y" and s.site_id == "default"


def test_repr_hides_secrets_and_database_passwords(tmp_path: Path) -> None:
    s = Settings.load(
        _write(tmp_path, FULL_TOML),
        environ={"CONSENT_GATEWAY_CLICKHOUSE_URL": "https://writer:s3cr3t-pw@ch.example.com:8443"},
    )
    text = repr(s)
    assert "Settings(" in text and "palette" in text
    for secret in (SECRET, OLD_SECRET, PSEUDONYM_KEY, "s3cr3t-pw"):
        assert secret not in text
    assert secret not in str(s)


# (toml text or environment, expected key, expected value shown, a word of the fix)
BAD_FILES = [
    ('site_id = "no spaces allowed"', "site_id", "no spaces allowed", "letters, digits"),
    ('database = "drop-table"', "database", "drop-table", "ClickHouse identifier"),
    ('prefix = "_consent/"', "prefix", "_consent/", 'start with "/"'),
    ('clickhouse_url = "mysql://db"', "clickhouse_url", "mysql://db", "chdb:///path"),
    ('secret_keys = ["short"]', "secret_keys[0]", "<hidden>", "keys secret"),
    ("[cookie]\nmax_age_days = 500", "cookie_max_age_days", "500", "400"),
    ('[cookie]\nmax_age_days = "a year"', "cookie.max_age_days", "a year", "whole number"),
    ('[cookie]\nsecure = "maybe"', "cookie.secure", "maybe", "true or false"),
    ('[cookies]\n_ga = "tracking"', "cookies._ga", "tracking", "use one of the categories"),
    ('[events]\nsignup = "ads"', "events.signup", "ads", "use one of the categories"),
    ('unknown_cookie_category = "misc"', "unknown_cookie_category", "misc", "use one of the categories"),
    ('[policy]\nversion = "v1"\neffective = 2026-01-01', "policy.version", "v1", "MAJOR.MINOR"),
    ('[policy]\nversion = "1.0"\neffective = "next week"', "policy.version.effective", "next week", "2026-01-31"),
    (
        '[policy]\nversion = "1.0"\neffective = 2026-01-01\n'
        '[policy.upcoming]\nversion = "2.0"\nannounced = 2026-11-01\neffective = 2026-11-10',
        "policy.upcoming.effective",
        "2026-11-10",
        "30 days",
    ),
    (
        '[policy]\nversion = "1.0"\neffective = 2026-01-01\n'
        '[policy.upcoming]\nversion = "1.1"\nannounced = 2026-11-01\neffective = 2026-11-03',
        "policy.upcoming.effective",
        "2026-11-03",
        "7 days",
    ),
    (
        '[policy]\nversion = "2.0"\neffective = 2026-01-01\n'
        '[policy.upcoming]\nversion = "1.5"\nannounced = 2026-11-01\neffective = 2026-12-03',
        "policy.upcoming.version",
        "1.5",
        "newer than 2.0",
    ),
    ("[retention]\nevents_retention_months = 0", "events_retention_months", "0", "1 to 120"),
    ('trusted_proxies = ["not-an-ip"]', "trusted_proxies", "not-an-ip", "IP networks"),
    ('allowed_origins = ["https://shop.example/path"]', "allowed_origins", "https://shop.example/path", "no path"),
    ("[pipeline]\nflush_interval = 0", "flush_interval", "0", "0.01 to 60"),
    ("[collect]\nmax_body = -1", "collect_max_body", "-1", "above zero"),
    ('default_locale = "fr"', "default_locale", "fr", '"ko" or "en"'),
    ('gpc_refuses = ["ads"]', "gpc_refuses", "ads", "categories"),
    ('colour = "blue"', "colour", "blue", "unknown setting"),
    ("[cookie]\nflavour = 1", "cookie.flavour", "1", "unknown setting"),
    ('[policy.matrix]\nvisit = ["keep", "shred"]', "policy.matrix.visit", "shred", "pseudonymise"),
    (
        '[[categories]]\nkey = "analytics"\nname_ko = "통계"\nname_en = "Analytics"',
        "categories",
        "analytics",
        "required = true",
    ),
    (
        '[[categories]]\nkey = "Bad Key"\nname_ko = "x"\nname_en = "x"\nrequired = true',
        "categories.key",
        "Bad Key",
        "lower-case",
    ),
    ("site_id = [unclosed", "config", "consent.toml", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "key", "value", "fix"), BAD_FILES, ids=[b[1] + "-" + b[2][:12] for b in BAD_FILES])
def test_each_bad_value_names_key_value_and_fix(tmp_path: Path, text: str, key: str, value: str, fix: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load(_write(tmp_path, text), environ={})
    message = str(caught.value)
    assert caught.value.key == key, message
    assert f"{key!r}" in message
    assert value in message
    assert fix in message


@pytest.mark.parametrize(
    ("name", "raw", "fix"),
    [
        ("CONSENT_GATEWAY_BATCH_SIZE", "lots", "whole number"),
        ("CONSENT_GATEWAY_COOKIE_SECURE", "perhaps", "true or false"),
        ("CONSENT_GATEWAY_FLUSH_INTERVAL", "soon", "use a number"),
        ("CONSENT_GATEWAY_NO_SUCH_THING", "1", "unknown variable"),
    ],
)
def test_bad_environment_variables_name_the_variable(name: str, raw: str, fix: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load(environ={name: raw})
    assert caught.value.key == name
    assert raw in str(caught.value) and fix in str(caught.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load(tmp_path / "nope.toml", environ={})
    assert "nope.toml" in str(caught.value) and "does not exist" in str(caught.value)


def test_secret_key_errors_never_echo_the_key() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(secret_keys=(SECRET, "short-but-secret"))
    assert "short-but-secret" not in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        Settings(secret_keys=(SECRET,), pseudonym_key=SECRET)
    assert SECRET not in str(caught.value) and "a key of its own" in str(caught.value)


def test_gateway_refuses_to_start_without_keys(tmp_path: Path) -> None:
    from consent_gateway import ConsentGateway

    with pytest.raises(SettingsError) as caught:
        ConsentGateway(lambda *a: None, Settings(data_dir=tmp_path))  # type: ignore[arg-type]
    assert caught.value.key == "secret_keys" and "keys secret" in str(caught.value)
    # Every missing key is named in that one error, with the commands that make keys.
    message = str(caught.value)
    assert "secret_keys" in message and "pseudonym_key" in message
    assert "consent-gateway init" in message and "--local-keys" in message
    with pytest.raises(SettingsError) as caught:
        ConsentGateway(lambda *a: None, Settings(data_dir=tmp_path, secret_keys=(SECRET,)))  # type: ignore[arg-type]
    assert caught.value.key == "pseudonym_key"


# -- groups, summary, suggestions, site id, missing keys --------------------------------------------


def test_each_group_mirrors_its_toml_table(tmp_path: Path) -> None:
    s = Settings.load(_write(tmp_path, FULL_TOML), environ={})
    assert s.cookie.max_age_days == 180 and s.cookie.secure is False
    assert s.cookie.registry == (("palette_session", "necessary"), ("_ga*", "analytics"))
    assert s.pipeline.flush_interval == 2.5 and s.pipeline.batch_size == 2000
    assert s.collect.max_events == 20
    assert s.retention.receipts_years == 6
    assert str(s.consent.policy) == "1.2" and str(s.consent.upcoming_policy) == "2.0"
    assert s.keys.secret_keys == (OLD_SECRET, SECRET)
    assert s.http.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")


def test_groups_are_frozen_keyword_only_and_check_themselves() -> None:
    from consent_gateway.settings import CookieSettings, JournalSettings, PipelineSettings

    with pytest.raises(TypeError):
        PipelineSettings(100)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PipelineSettings().queue_max = 1  # type: ignore[misc]
    with pytest.raises(SettingsError) as caught:
        PipelineSettings(flush_interval=120)
    assert caught.value.key == "flush_interval" and "0.01 to 60" in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        JournalSettings(segment_bytes=8192, max_bytes=4096)
    assert caught.value.key == "journal_max_bytes" and "8192" in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        CookieSettings(name="bad name")
    assert caught.value.key == "cookie_name"


def test_repr_is_grouped_short_and_masks_the_url_password(tmp_path: Path) -> None:
    s = Settings.load(
        _write(tmp_path, FULL_TOML),
        environ={"CONSENT_GATEWAY_CLICKHOUSE_URL": "https://writer:s3cr3t-pw@ch.example.com:8443"},
    )
    text = repr(s)
    assert "url='https://writer:***@ch.example.com:8443'" in text
    assert "secret_keys=<2 hidden>" in text and "pseudonym_key=<hidden>" in text
    assert "cookie=CookieSettings(name='cg_consent', max_age_days=180" in text
    # the long texts (categories, banner) are named, not printed
    assert "categories=[necessary*,preferences,analytics,marketing]" in text and "name_ko" not in text
    assert "banner=default-texts" in text and "쿠키 및 추적 동의" not in text


def test_summary_has_one_line_a_group_with_secrets_masked(tmp_path: Path) -> None:
    s = Settings.load(
        _write(tmp_path, FULL_TOML),
        environ={"CONSENT_GATEWAY_CLICKHOUSE_URL": "http://gateway:pa55word@clickhouse:8123"},
    )
    lines = s.summary()
    groups = [line.split(":", 1)[0] for line in lines]
    assert groups == [
        "site", "keys", "clickhouse", "cookie", "consent", "events", "page", "retention",
        "http", "collect", "rate_limit", "pipeline", "journal", "log", "analytics",
    ]  # fmt: skip
    text = "\n".join(lines)
    for secret in (SECRET, OLD_SECRET, PSEUDONYM_KEY, "pa55word"):
        assert secret not in text
    assert "keys: secret_keys=<2 hidden> pseudonym_key=<hidden>" in lines
    assert "url=http://gateway:***@clickhouse:8123" in text
    assert "site: site_id=palette " in text
    assert "cookie: name=cg_consent max_age_days=180 secure=false" in text
    assert "policy=1.2@2026-01-01" in text and "upcoming_policy=2.0@2026-12-15" in text
    assert all("\n" not in line for line in lines)
    assert "keys: secret_keys=<missing> pseudonym_key=<missing>" in Settings().summary()


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ('sit_id = "x"', "sit_id", "did you mean 'site_id'?"),
        ("queue_maxx = 5", "queue_maxx", "did you mean 'queue_max'?"),
        ("[cookie]\nmax_age_day = 30", "cookie.max_age_day", "did you mean 'max_age_days'?"),
        ("[rate_limit]\ncolect_burst = 3", "rate_limit.colect_burst", "did you mean 'collect_burst'?"),
        ("[cookie]\nflavour = 1", "cookie.flavour", "see docs/configuration.md"),
    ],
)
def test_unknown_toml_keys_get_the_closest_name(tmp_path: Path, text: str, key: str, suggestion: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load(_write(tmp_path, text), environ={})
    assert caught.value.key == key
    assert f"unknown setting {key!r}" in str(caught.value) and suggestion in str(caught.value)


def test_unknown_environment_variables_get_the_closest_name() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load(environ={"CONSENT_GATEWAY_PSEUDONYM_KYE": "x"})
    assert caught.value.key == "CONSENT_GATEWAY_PSEUDONYM_KYE"
    assert "did you mean 'CONSENT_GATEWAY_PSEUDONYM_KEY'?" in str(caught.value)


def test_site_id_defaults_to_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "shop.example"
    folder.mkdir()
    config = folder / "consent.toml"
    config.write_text('prefix = "/_consent"\n', encoding="utf-8")
    assert Settings.load(config, environ={}).site_id == "shop.example"
    assert Settings.load(config, environ={"CONSENT_GATEWAY_SITE_ID": "env"}).site_id == "env"
    config.write_text('site_id = "named"\n', encoding="utf-8")
    assert Settings.load(config, environ={}).site_id == "named"
    odd = tmp_path / "My Shop (staging)!"
    odd.mkdir()
    (odd / "consent.toml").write_text("", encoding="utf-8")
    assert Settings.load(odd / "consent.toml", environ={}).site_id == "My-Shop-staging"
    assert Settings.load(environ={}).site_id == "default"  # no file: nothing to name it after


def test_all_missing_keys_are_named_in_one_error() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings().require_keys()
    message = str(caught.value)
    assert Settings().missing_keys() == ("secret_keys", "pseudonym_key")
    assert caught.value.key == "secret_keys, pseudonym_key"
    assert "CONSENT_GATEWAY_SECRET_KEYS and CONSENT_GATEWAY_PSEUDONYM_KEY" in message
    assert "consent-gateway init" in message and "--local-keys" in message
    only = Settings(secret_keys=(SECRET,))
    assert only.missing_keys() == ("pseudonym_key",)
    with pytest.raises(SettingsError) as caught:
        only.require_keys()
    assert caught.value.key == "pseudonym_key" and "SECRET_KEYS" not in str(caught.value)
    complete = only.replace(pseudonym_key=PSEUDONYM_KEY)
    assert complete.missing_keys() == ()
    complete.require_keys()


def test_the_groups_table_in_the_docs_matches_the_code() -> None:
    import re

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text("utf-8")
    section = doc[doc.index("## In Python: the setting groups") : doc.index("## Every setting")]
    documented = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith(("`", "(top")):
            continue
        held = re.sub(r"\([^)]*\)", "", cells[1])
        documented[cells[0].strip("`")] = re.findall(r"`([a-z_]+)`", held)
    s = Settings()
    expected = {"(top level)": ["site_id", "data_dir", "prefix"]}
    for f in dataclasses.fields(s):
        if dataclasses.is_dataclass(getattr(s, f.name)):
            expected[f.name] = [g.name for g in dataclasses.fields(getattr(s, f.name))]
    assert documented == expected
