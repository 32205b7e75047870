"""Several worker processes: allowed with a ClickHouse server, refused with the embedded engine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from consent_gateway import ConsentGateway, Settings
from consent_gateway.cli import main
from consent_gateway.store import Store
from tests.conftest import CHDB_URL, PSEUDONYM_KEY, SECRET
from tests.gateway_support import client_for, site_app
from tests.support import ServerProcess, free_port

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


# -- two workers against a ClickHouse server ---------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
CONSENT_GATEWAY = str(Path(sys.executable).parent / "consent-gateway")
EVENTS = 240


def wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before printing {text!r}")
    raise AssertionError(f"no {text!r} within {timeout}s")


@pytest.fixture
def clickhouse_server(tmp_path: Path) -> Iterator[str]:
    """The test ClickHouse HTTP server (tests/clickhouse_http_server.py) in its own process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "clickhouse_http_server.py"),
         "--port", str(port), "--data", str(tmp_path / "ch")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        wait_for_line(proc, "ready", 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)


def test_two_workers_against_a_clickhouse_server_store_every_event_once(
    clickhouse_server: str, tmp_path: Path, database: str
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONSENT_GATEWAY_") and k != "WEB_CONCURRENCY"},
        "CONSENT_GATEWAY_CLICKHOUSE_URL": clickhouse_server,
        "CONSENT_GATEWAY_DATABASE": database,
        "CONSENT_GATEWAY_SECRET_KEYS": SECRET,
        "CONSENT_GATEWAY_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "CONSENT_GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "CONSENT_GATEWAY_FLUSH_INTERVAL": "0.2",
    }
    # Production order: migrate once, then start the workers (they do not migrate a server).
    migrated = subprocess.run([CONSENT_GATEWAY, "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    log_path = tmp_path / "gateway.log"
    argv = [CONSENT_GATEWAY, "serve", APP, "--factory", "--workers", "2", "--port", str(port)]
    gateway = ServerProcess(argv, port=port, log_path=log_path, env=env, cwd=tmp_path).start(120)
    try:
        base = gateway.base

        async def send_all() -> list[int]:
            limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each: spread over workers
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
                gate = asyncio.Semaphore(16)

                async def one(seq: int) -> int:
                    async with gate:
                        body = {"name": "worker_probe", "url": "/probe", "props": {"seq": seq}}
                        return (await client.post("/_consent/collect", json=body)).status_code

                return await asyncio.gather(*(one(i) for i in range(EVENTS)))

        statuses = asyncio.run(send_all())
        assert statuses == [202] * EVENTS
    finally:
        gateway.stop(120)  # graceful: each worker flushes its queue
        gateway.kill()
    code = gateway.returncode
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the handled SIGTERM after a clean stop

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    access = [e for e in lines if e.get("logger") == "consent_gateway.access"]
    collect_pids = {e["pid"] for e in access if e["path"] == "/_consent/collect"}
    assert len(collect_pids) == 2, "both worker processes should have taken /collect traffic"
    assert sum(1 for e in lines if e["msg"] == "Application shutdown complete.") == 2
    # Each worker claimed a journal directory of its own under the shared data directory.
    journals = [d.name for d in (tmp_path / "data" / "journal").iterdir() if d.is_dir()]
    assert len(journals) == 2, journals

    from consent_gateway.store import open_store

    store = open_store(clickhouse_server, database)
    rows = store.query_rows(
        f"SELECT JSONExtractInt(props, 'seq') AS seq, count() FROM {store.table('events')} "
        "WHERE name = 'worker_probe' GROUP BY seq ORDER BY seq"
    )
    store.close()
    assert rows == [(seq, 1) for seq in range(EVENTS)]


def test_a_restarted_gateway_keeps_the_events_of_its_first_batch(
    make_settings: Callable[..., Settings], store: Store
) -> None:
    """A restart (same data directory, as after a deploy) must not lose the next events."""
    settings = make_settings()
    for url in ("/before-restart", "/after-restart"):
        gateway = ConsentGateway(site_app(), settings)
        with client_for(gateway) as client:
            client.post("/_consent/", json={"action": "accept_all"})
            assert client.post("/_consent/collect", json={"name": "pageview", "url": url}).json()["kept"] == 1
    rows = store.query_rows(f"SELECT path FROM {store.table('events')} WHERE kind = 'event' ORDER BY path")
    assert rows == [("/after-restart",), ("/before-restart",)]
