"""The ``consent-gateway`` command: check-config, keys, migrate and erase, run in-process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from consent_gateway import ConsentGateway, Settings, SettingsError
from consent_gateway.cli import main
from consent_gateway.settings import MIN_SECRET_LENGTH
from consent_gateway.store import Store
from tests.conftest import CHDB_URL, PSEUDONYM_KEY, SECRET
from tests.gateway_support import client_for, flush, sign_cookie, site_app


@pytest.fixture(autouse=True)
def _no_gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reads CONSENT_GATEWAY_* variables; none from the shell may leak into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("CONSENT_GATEWAY_"):
            monkeypatch.delenv(name)


def _config(tmp_path: Path, database: str, extra: str = "") -> Path:
    path = tmp_path / "consent.toml"
    path.write_text(
        f'site_id = "test-site"\nclickhouse_url = "{CHDB_URL}"\ndatabase = "{database}"\n'
        f'secret_keys = ["{SECRET}"]\npseudonym_key = "{PSEUDONYM_KEY}"\n{extra}',
        encoding="utf-8",
    )
    return path


def test_check_config_accepts_a_good_file(tmp_path: Path, database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(_config(tmp_path, database))]) == 0
    out = capsys.readouterr().out
    assert "configuration is valid" in out
    assert SECRET not in out and PSEUDONYM_KEY not in out


def test_check_config_warns_about_missing_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nokeys.toml"
    path.write_text('site_id = "x"\n', encoding="utf-8")
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    # Both missing keys in one message, with the two ways to get them.
    assert "secret_keys and pseudonym_key" in warning
    assert "consent-gateway init" in warning and "--local-keys" in warning


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[cookie]\nmax_age_days = "a year"\n',
            "setting 'cookie.max_age_days' = 'a year' is invalid: use a whole number",
        ),
        ('[cookies]\n_ga = "tracking"\n', "setting 'cookies._ga' = 'tracking' is invalid: use one of the categories"),
        ('prefix = "consent"\n', "setting 'prefix' = 'consent' is invalid: start with \"/\""),
    ],
)
def test_check_config_prints_the_settings_error_and_fails(
    tmp_path: Path, database: str, capsys: pytest.CaptureFixture[str], extra: str, message: str
) -> None:
    path = _config(tmp_path, database, extra)
    with pytest.raises(SettingsError) as caught:
        Settings.load(path, environ={})
    assert main(["check-config", str(path)]) != 0
    err = capsys.readouterr().err
    assert message in err
    assert str(caught.value) in err  # the very message the library raises


def test_check_config_reads_the_environment(
    tmp_path: Path, database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_GATEWAY_BATCH_SIZE", "many")
    assert main(["check-config", str(_config(tmp_path, database))]) != 0
    assert "CONSENT_GATEWAY_BATCH_SIZE" in capsys.readouterr().err


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "absent.toml")]) != 0
    assert "does not exist" in capsys.readouterr().err


def test_keys_secret_prints_a_fresh_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "secret"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["keys", "secret"]) == 0
    second = capsys.readouterr().out.strip()
    assert len(first) >= MIN_SECRET_LENGTH and first != second
    Settings(secret_keys=(first,), pseudonym_key=second)  # good enough for the settings


def test_migrate_is_idempotent(tmp_path: Path, database: str, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, database)
    assert main(["migrate", "--config", str(path)]) == 0
    assert "applied [1, 2" in capsys.readouterr().out
    assert main(["migrate", "--config", str(path)]) == 0
    assert "nothing (up to date)" in capsys.readouterr().out
    tables = {
        t for (t,) in store.query_rows("SELECT name FROM system.tables WHERE database = {d:String}", {"d": database})
    }
    assert {"events", "consent_receipts", "schema_migrations"} <= tables


def test_erase_removes_one_consent_ids_rows(
    tmp_path: Path,
    database: str,
    make_settings: Callable[..., Settings],
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = ConsentGateway(site_app(), make_settings())
    with client_for(gateway) as one, client_for(gateway) as two:
        one.cookies.set("cg_consent", sign_cookie(SECRET, consent_id="cid-erase-me-0123456"))
        two.cookies.set("cg_consent", sign_cookie(SECRET, consent_id="cid-keep-me-01234567"))
        for _ in range(3):
            one.get("/")
            two.get("/")
        flush(one, gateway)
    assert main(["erase", "cid-erase-me-0123456", "--config", str(_config(tmp_path, database))]) == 0
    out = capsys.readouterr().out
    assert "erased 3 identifiable rows" in out
    assert "cid-erase-me-0123456" not in out  # the id is only hinted at in output
    rows = gateway.runtime.rows
    for cid, expected in (("cid-erase-me-0123456", 0), ("cid-keep-me-01234567", 3)):
        count = store.query_rows(
            f"SELECT count() FROM {store.table('events')} WHERE identified = 1 AND visitor = {{v:UInt64}}",
            {"v": rows.visitor_of(cid)},
        )[0][0]
        assert count == expected


def test_serve_rejects_a_bad_target(capsys: pytest.CaptureFixture[str], tmp_path: Path, database: str) -> None:
    config = str(_config(tmp_path, database))
    assert main(["serve", "no_colon_here", "--config", config]) != 0
    assert "module:attribute" in capsys.readouterr().err
    assert main(["serve", "surely_not_a_module_xyz:app", "--config", config]) != 0
    assert "could not be imported" in capsys.readouterr().err


def test_check_config_never_prints_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        f'clickhouse_url = "https://writer:pw-0123456789@ch.example.com:8443"\nsecret_keys = ["{SECRET}"]\n'
        f'pseudonym_key = "{PSEUDONYM_KEY}"\n',
        encoding="utf-8",
    )
    assert main(["check-config", str(path)]) == 0
    captured = capsys.readouterr()
    for secret in ("pw-0123456789", SECRET, PSEUDONYM_KEY):
        assert secret not in captured.out + captured.err


def test_check_config_prints_one_line_a_group_with_secrets_masked(
    tmp_path: Path, database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(_config(tmp_path, database, '[cookies]\nsessionid = "necessary"\n'))]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "Settings(" not in out and len(out) < 2500  # a summary, not the repr
    groups = {line.split(":", 1)[0].strip() for line in lines if line.startswith("  ")}
    assert {"site", "keys", "clickhouse", "cookie", "consent", "http", "pipeline", "analytics", "log"} <= groups
    keys_line = next(line for line in lines if line.strip().startswith("keys:"))
    assert "hidden" in keys_line and SECRET not in out and PSEUDONYM_KEY not in out
    assert "test-site" in out and "sessionid:necessary" in out


def test_serve_names_every_missing_key_in_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nokeys.toml"
    path.write_text('site_id = "x"\n', encoding="utf-8")
    assert main(["serve", "tests.gateway_support:site_app", "--factory", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1
    assert "secret_keys and pseudonym_key" in err
    assert "CONSENT_GATEWAY_SECRET_KEYS" in err and "CONSENT_GATEWAY_PSEUDONYM_KEY" in err
    assert "consent-gateway init" in err and "--local-keys" in err and str(tmp_path / "nokeys.keys.env") in err


def test_init_writes_settings_a_private_key_file_and_the_lines_that_wrap_an_app(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import stat

    from consent_gateway.cli import load_settings

    site = tmp_path / "shop"
    config = site / "consent.toml"
    args = ["init", "--config", str(config), "--policy-url", "https://shop.example.kr/privacy", "--cookie", "x_pref"]
    assert main([*args, "--app", "shop.main:app"]) == 0
    out = capsys.readouterr().out
    keys_file = site / "consent.keys.env"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    text = config.read_text(encoding="utf-8")
    keys_text = keys_file.read_text(encoding="utf-8")
    assert "SECRET_KEYS" not in text and "CONSENT_GATEWAY_SECRET_KEYS=" in keys_text
    assert 'url = "https://shop.example.kr/privacy"' in text
    assert '# "x_pref" = "?"' in text  # an unknown cookie is left for the site to categorise
    assert f"data: {site / 'data'}" in out
    assert f".venv/bin/consent-gateway serve shop.main:app --config {config}" in out

    # The three printed lines, run as printed: a gateway with the file's site and the key file's keys.
    wrap = [line.strip() for line in out.splitlines() if line.startswith("    ") and "consent-gateway" not in line]
    assert len(wrap) == 3
    monkeypatch.chdir(tmp_path)  # the lines hold absolute paths
    namespace: dict[str, object] = {"app": site_app()}
    exec("\n".join(wrap), namespace)  # the exact lines a user pastes
    gateway = namespace["app"]
    assert isinstance(gateway, ConsentGateway)
    assert gateway.settings.site_id == "shop.example.kr"
    assert gateway.settings.secret_keys and gateway.settings.pseudonym_key in keys_text
    assert gateway.settings.data_dir == site / "data"

    # Writing again needs --force, and keeps the keys (new keys would void every given cookie).
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert keys_file.read_text(encoding="utf-8") == keys_text
    assert load_settings(config).pseudonym_key == gateway.settings.pseudonym_key


def test_init_without_a_policy_url_leaves_it_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "blog" / "consent.toml"
    assert main(["init", "--config", str(config)]) == 0  # stdin is not a terminal here: nothing is asked
    text = config.read_text(encoding="utf-8")
    assert '# url = "' in text and "\nurl =" not in text
    assert 'site_id = "blog"' in text  # the folder's name, not "default"
    assert main(["init", "--config", str(tmp_path / "bad.toml"), "--site-id", "no spaces please"]) == 2
    assert "site_id" in capsys.readouterr().err and not (tmp_path / "bad.toml").exists()


def test_already_gated_apps_are_recognised(make_settings: Callable[..., Settings]) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    from consent_gateway.cli import already_gated
    from consent_gateway.logs import RequestLogMiddleware
    from consent_gateway.middleware import ConsentMiddleware

    settings = make_settings()
    assert not already_gated(site_app())
    assert already_gated(ConsentGateway(site_app(), settings))
    assert already_gated(RequestLogMiddleware(ConsentGateway(site_app(), settings)))
    assert already_gated(Starlette(middleware=[Middleware(ConsentMiddleware, settings=settings)]))


def test_keys_from_another_folder_name_the_same_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative --data is resolved once and said; another folder pointed at it finds the same tokens."""
    site = tmp_path / "site"
    site.mkdir()
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(site)
    assert main(["keys", "create", "reporting", "--data", "data"]) == 0
    made = capsys.readouterr()
    assert f"data: {site / 'data'}" in made.err
    assert made.out.strip() and made.out.strip() not in made.err  # the token only on stdout
    monkeypatch.chdir(other)
    assert main(["keys", "list", "--data", str(site / "data")]) == 0
    listed = capsys.readouterr()
    assert f"data: {site / 'data'}" in listed.err and "reporting" in listed.out
    assert main(["keys", "list"]) == 0  # the default ./data of this folder is another, empty store
    empty = capsys.readouterr()
    assert f"data: {other / 'data'}" in empty.err and "no tokens" in empty.out


def test_every_option_of_every_command_has_help() -> None:
    import argparse

    from consent_gateway.cli import build_parser

    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "consent-gateway")
    assert missing == []


def test_init_fills_the_cookie_registry_from_the_cookie_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Names the shipped catalogue knows (exactly or by a pattern) are written with their category and a
    comment naming provider and purpose; unknown ones are left commented out for the site to decide."""
    config = tmp_path / "consent.toml"
    args = ["init", "--config", str(config), "--cookie", "sessionid,_ga_4XJ2", "--cookie", "house_made"]
    assert main(args) == 0
    capsys.readouterr()
    text = config.read_text(encoding="utf-8")
    django = '"sessionid" = "necessary"   # Django: Links the browser to its server-side session, including the login.'
    assert django in text
    assert '"_ga_4XJ2" = "analytics"   # Google Analytics 4: Keeps the session state of one GA4 property.' in text
    assert '# "house_made" = "?"' in text
    settings = Settings.from_toml(config)
    assert dict(settings.cookie_registry) == {"sessionid": "necessary", "_ga_4XJ2": "analytics"}


def test_a_bad_key_file_line_is_named_but_never_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "consent.toml"
    config.write_text('site_id = "x"\n', encoding="utf-8")
    (tmp_path / "consent.keys.env").write_text(f"{SECRET}\n", encoding="utf-8")  # a key pasted alone
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'consent.keys.env'}:1" in err and SECRET not in err
    assert "CONSENT_GATEWAY_SECRET_KEYS" in err
