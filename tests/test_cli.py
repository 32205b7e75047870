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
    assert "secret_keys is empty" in out and "pseudonym_key is empty" in out


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
