"""Several worker processes: allowed with a ClickHouse server, refused with the embedded engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_gateway.cli import main
from tests.conftest import CHDB_URL, PSEUDONYM_KEY, SECRET

APP = "consent_gateway.demo:create_demo_app"


@pytest.fixture
def gateway_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Keys in the environment, as a container gets them; no other CONSENT_GATEWAY_* variable."""
    monkeypatch.setenv("CONSENT_GATEWAY_SECRET_KEYS", SECRET)
    monkeypatch.setenv("CONSENT_GATEWAY_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.delenv("CONSENT_GATEWAY_CONFIG", raising=False)
    monkeypatch.delenv("CONSENT_GATEWAY_CLICKHOUSE_URL", raising=False)
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    return tmp_path


def test_embedded_engine_refuses_two_workers(gateway_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", APP, "--factory", "--workers", "2", "--data", str(gateway_env / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert "'--workers' = 2" in err
    assert "embedded ClickHouse" in err and "chdb://" in err
    assert "--workers 1" in err and "CONSENT_GATEWAY_CLICKHOUSE_URL" in err
    # Refused before anything was started: no engine directory was created.
    assert not (gateway_env / "data" / "clickhouse").exists()


def test_embedded_engine_refuses_web_concurrency(
    gateway_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("CONSENT_GATEWAY_CLICKHOUSE_URL", CHDB_URL)
    code = main(["serve", APP, "--factory"])
    err = capsys.readouterr().err
    assert code == 2
    assert "'--workers' = 3" in err and CHDB_URL in err


def test_zero_workers_is_refused(gateway_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", APP, "--factory", "--workers", "0", "--data", str(gateway_env / "data")])
    assert code == 2
    assert "use 1 or more worker processes" in capsys.readouterr().err
