"""The flat setting names: each one lives in exactly one group, and the flat names still work.

``OLD_NAMES`` are the 60 attributes of the ungrouped ``Settings``; modules that still read them
rely on the compatibility layer until they switch to the groups (``settings.pipeline.queue_max``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from consent_gateway import BannerTexts, PolicyVersion, Settings, SettingsError
from consent_gateway.settings import _SCALARS, FLAT_SETTINGS, PipelineSettings
from tests.conftest import PSEUDONYM_KEY, SECRET

OLD_NAMES = """
site_id data_dir clickhouse_url database prefix secret_keys pseudonym_key cookie_name cookie_max_age_days
cookie_secure cookie_domain categories cookie_registry unknown_cookie_category event_registry
unknown_event_category gpc_refuses policy upcoming_policy policy_url policy_matrix banner inject_banner
google_consent_mode default_locale events_retention_months receipts_retention_years trusted_proxies
allowed_origins log_visit_assets batch_size flush_interval queue_max shutdown_timeout collect_max_body
collect_max_events verify_cache_size auto_migrate cluster log_level log_format k_anonymity
analytics_tokens_file journal_enabled journal_dir journal_max_bytes journal_segment_bytes commit_window
visit_shed_fraction collect_ack_timeout insert_retry_initial insert_retry_max clickhouse_async_insert
salt_check_interval rate_limit_collect_per_minute rate_limit_collect_burst rate_limit_consent_per_minute
rate_limit_consent_burst drop_bots max_event_names
""".split()
# Settings added since the groups: they have flat names too, but no ungrouped attribute ever read them.
NEW_NAMES = [
    "visit_category",
    "marketing_category",
    "cookie_catalogue",
    "cookie_descriptions",
    "behavioural_categories",
    "settings_button",
    "cookie_host_prefix",
    "cookie_accept_unbound",
    "event_props",
    "max_header_bytes",
    "collect_body_timeout",
    "rate_limit_page_per_minute",
    "rate_limit_page_burst",
]


def _resolve(settings: Settings, path: str) -> object:
    value: object = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def test_every_old_name_has_exactly_one_new_path() -> None:
    names = [s.name for s in FLAT_SETTINGS]
    assert sorted(names) == sorted(OLD_NAMES + NEW_NAMES)
    assert len(set(names)) == len(names)
    paths = [s.path for s in FLAT_SETTINGS]
    assert len(set(paths)) == len(paths)


def test_each_old_name_reads_the_same_value_as_its_new_path() -> None:
    s = Settings(
        secret_keys=(SECRET,),
        pseudonym_key=PSEUDONYM_KEY,
        queue_max=7,
        cookie_name="cg_x",
        journal_dir=Path("/tmp/j"),
        policy=PolicyVersion(2, 1, dt.date(2026, 3, 1)),
        drop_bots=True,
    )
    for spec in FLAT_SETTINGS:
        assert getattr(s, spec.name) == _resolve(s, spec.path), spec.name
    assert s.pipeline.queue_max == s.queue_max == 7
    assert s.cookie.name == "cg_x" and s.journal.dir == Path("/tmp/j")
    assert s.consent.policy.major == s.policy.major == 2
    assert s.consent.drop_bots is True
    assert isinstance(s.banner, BannerTexts) and s.banner is s.page.banner


def test_old_names_are_read_only() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.queue_max = 3  # type: ignore[misc]


def test_flat_and_group_arguments_combine_and_flat_names_win() -> None:
    base = Settings(pipeline=PipelineSettings(batch_size=10, queue_max=20), queue_max=30)
    assert (base.pipeline.batch_size, base.pipeline.queue_max) == (10, 30)
    changed = base.replace(flush_interval=2.0)
    assert changed.pipeline == PipelineSettings(batch_size=10, queue_max=30, flush_interval=2.0)
    assert base.flush_interval == 1.0  # the original is untouched
    assert dataclasses.replace(base, site_id="other").pipeline == base.pipeline


def test_flat_arguments_are_checked_by_their_group() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings().replace(queue_max=0)
    assert caught.value.key == "queue_max" and "above zero" in str(caught.value)


def test_a_misspelt_flat_argument_gets_a_suggestion() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(queue_maxx=5)
    assert caught.value.key == "queue_maxx"
    assert "did you mean 'queue_max'?" in str(caught.value)


def test_text_coercion_follows_the_field_types() -> None:
    assert _SCALARS["queue_max"] is int
    assert _SCALARS["flush_interval"] is float
    assert _SCALARS["auto_migrate"] is bool  # bool | None
    assert _SCALARS["journal_dir"] is Path  # Path | None
    assert _SCALARS["secret_keys"] is tuple and _SCALARS["trusted_proxies"] is tuple
    table_only = (
        "categories",
        "cookie_registry",
        "cookie_descriptions",
        "event_registry",
        "event_props",
        "policy",
        "policy_matrix",
    )
    for name in (*table_only, "banner"):
        assert name not in _SCALARS
    # All but the table-only names, the banner texts and upcoming_policy are read from text.
    assert len(_SCALARS) == len(FLAT_SETTINGS) - len(table_only) - 2


def test_the_type_checker_view_of_the_old_names_matches_the_groups() -> None:
    """The annotations in Settings' compatibility block name each old name once, with its group field's type."""
    import ast
    import inspect

    from consent_gateway import settings as module

    tree = ast.parse(inspect.getsource(module))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    block = next(n for n in cls.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    declared = {ast.unparse(n.target): ast.unparse(n.annotation) for n in block.body if isinstance(n, ast.AnnAssign)}
    expected = {}
    for spec in FLAT_SETTINGS:
        if "." in spec.path:
            group, attr = spec.path.split(".")
            group_field = {f.name: f for f in dataclasses.fields(getattr(Settings(), group))}[attr]
            expected[spec.name] = group_field.type
    assert declared == expected
