"""Nothing acknowledged is lost: ClickHouse outages, a SIGKILLed gateway, SIGTERM.

ClickHouse here is ``tests/clickhouse_http_server.py`` (a test fixture serving ClickHouse's HTTP
interface over its own embedded engine, in its own process), so the gateway talks to it through
clickhouse-connect's HTTP client with LZ4 compression, and the tests kill and restart it.
Events carry a marker in ``props`` so each acknowledged one can be found again.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.testclient import TestClient

from consent_gateway import ConsentGateway, Settings

from .clickhouse_http_server import FixtureServer
from .conftest import PSEUDONYM_KEY, SECRET
from .support import ServerProcess, flush, free_port

ORIGIN = {"origin": "http://testserver"}


def _markers(server: FixtureServer, database: str) -> dict[str, int]:
    client = server.client()
    rows = client.query(
        f"SELECT JSONExtractString(props, 'm') AS m, count() FROM `{database}`.events WHERE kind = 'event' GROUP BY m"
    ).result_rows
    client.close()
    return {str(m): int(c) for m, c in rows}


def _wait_for_markers(
    server: FixtureServer, database: str, expected: set[str], timeout: float = 60.0
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    found: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            found = _markers(server, database)
        except Exception:
            found = {}
        if expected <= set(found):
            return found
        time.sleep(0.2)
    return found


def test_a_clickhouse_outage_mid_stream_loses_and_duplicates_nothing(
    clickhouse: FixtureServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        clickhouse_url=clickhouse.url,
        auto_migrate=True,
        batch_size=40,
        flush_interval=0.05,
        insert_retry_initial=0.05,
        insert_retry_max=0.5,
    )
    gateway = ConsentGateway(Starlette(), settings)
    acked: list[str] = []
    with TestClient(gateway) as client:
        for i in range(240):
            if i == 80:
                clickhouse.kill()
            if i == 120:
                outage = client.get("/_consent/readyz")
                assert outage.status_code == 503, "readiness reports the outage"
                assert client.get("/_consent/healthz").status_code == 200, "liveness does not"
            if i == 160:
                clickhouse.start()
            batch = [{"name": "pageview", "url": f"/p/{i}", "props": {"m": f"run-{i}-{j}"}} for j in range(3)]
            response = client.post("/_consent/collect", json=batch, headers=ORIGIN)
            assert response.status_code == 202, response.text
            acked.extend(e["props"]["m"] for e in batch)
        assert client.portal is not None
        flush(client, gateway, 60.0, "everything reached ClickHouse")
        assert client.get("/_consent/readyz").status_code == 200
        metrics = client.get("/_consent/metrics").text
    found = _markers(clickhouse, settings.database)
    assert set(found) == set(acked), "every acknowledged event is in ClickHouse"
    assert all(count == 1 for count in found.values()), "and none twice"
    assert sum(found.values()) == len(acked) == 720
    inserts = [i for i in clickhouse.inserts() if i["table"].split(" ")[0].endswith(".`events`")]
    assert inserts and all(i["encoding"] == "lz4" for i in inserts), "batches travel LZ4-compressed"
    assert all(i["settings"].get("insert_deduplication_token") for i in inserts), "each insert names its token"
    assert len(inserts) < len(acked) / 3, "inserts are batched, not one per request"
    failed = [line for line in metrics.splitlines() if line.startswith("cg_pipeline_failed_inserts_total")]
    assert failed and float(failed[0].split()[-1]) > 0, "the outage was seen and counted"


_GATEWAY = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import uvicorn
    from starlette.applications import Starlette
    from consent_gateway import ConsentGateway, Settings

    settings = Settings(
        site_id="test-site",
        data_dir=Path(sys.argv[2]),
        clickhouse_url=sys.argv[3],
        database=sys.argv[4],
        secret_keys=(sys.argv[5],),
        pseudonym_key=sys.argv[6],
        cookie_secure=False,
        auto_migrate=True,
        flush_interval=float(sys.argv[7]),
        batch_size=500,
        shutdown_timeout=20.0,
        insert_retry_initial=0.05,
        insert_retry_max=0.5,
    )
    uvicorn.run(ConsentGateway(Starlette(), settings), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


class GatewayProcess(ServerProcess):
    """The gateway under uvicorn in a child process, so the test can SIGKILL or SIGTERM it."""

    def __init__(self, tmp_path: Path, clickhouse: FixtureServer, database: str, flush_interval: float) -> None:
        script = tmp_path / "gateway_app.py"
        script.write_text(_GATEWAY)
        self.data = tmp_path / "gateway-data"
        port = free_port()
        args = [clickhouse.url, database, SECRET, PSEUDONYM_KEY, str(flush_interval)]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        argv = [sys.executable, str(script), str(port), str(self.data), *args]
        super().__init__(argv, port=port, log_path=tmp_path / "gateway.log", env=env)

    @property
    def url(self) -> str:
        return self.base

    def signal(self, sig: int, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def segments(self) -> list[Path]:
        return sorted((self.data / "journal").glob("*/*.seg"))


def _send_until_stopped(url: str, acked: list[str], stop: threading.Event, per_request: int) -> None:
    with httpx.Client(base_url=url, headers={"origin": url}, timeout=10) as client:
        i = 0
        while not stop.is_set():
            batch = [
                {"name": "pageview", "url": "/s", "props": {"m": f"kill-{per_request}-{i}-{j}"}}
                for j in range(per_request)
            ]
            try:
                response = client.post("/_consent/collect", json=batch)
            except httpx.HTTPError:
                return  # the gateway died with this request unanswered: not acknowledged
            if response.status_code == 202:
                acked.extend(e["props"]["m"] for e in batch)
            i += 1


def test_a_sigkilled_gateway_replays_its_journal_exactly_once(
    clickhouse: FixtureServer, tmp_path: Path, database: str
) -> None:
    # A long flush interval keeps most acknowledged events in the journal only when the kill comes.
    gateway = GatewayProcess(tmp_path, clickhouse, database, flush_interval=30.0)
    gateway.start()
    acked: list[str] = []
    stop = threading.Event()
    senders = [threading.Thread(target=_send_until_stopped, args=(gateway.url, acked, stop, n)) for n in (1, 5, 50)]
    try:
        for t in senders:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 600 and time.monotonic() < deadline:
            time.sleep(0.02)
        gateway.signal(signal.SIGKILL)
        stop.set()
        for t in senders:
            t.join(30)
        assert len(acked) >= 600
        before = _markers(clickhouse, database) if _table_exists(clickhouse, database) else {}
        assert len(before) < len(set(acked)), "the kill came while acknowledged events were only journaled"
        assert gateway.segments(), "the journal holds them"

        gateway.start()
        found = _wait_for_markers(clickhouse, database, set(acked))
        metrics = httpx.get(f"{gateway.url}/_consent/metrics", timeout=5).text
    finally:
        gateway.kill()
    assert set(acked) <= set(found), "every acknowledged event is in ClickHouse after the restart"
    assert all(count == 1 for count in found.values()), "exactly once, also for events that raced the kill"
    replayed = [line for line in metrics.splitlines() if line.startswith("cg_pipeline_replayed_rows_total")]
    assert replayed and float(replayed[0].split()[-1]) > 0


def _table_exists(server: FixtureServer, database: str) -> bool:
    client = server.client()
    try:
        return bool(client.command(f"EXISTS TABLE `{database}`.events"))
    finally:
        client.close()


def test_sigterm_flushes_queue_and_journal_before_exit(
    clickhouse: FixtureServer, tmp_path: Path, database: str
) -> None:
    gateway = GatewayProcess(tmp_path, clickhouse, database, flush_interval=30.0)
    gateway.start()
    acked: list[str] = []
    try:
        with httpx.Client(base_url=gateway.url, headers={"origin": gateway.url}, timeout=10) as client:
            for i in range(40):
                batch = [{"name": "pageview", "url": "/t", "props": {"m": f"term-{i}-{j}"}} for j in range(10)]
                response = client.post("/_consent/collect", json=batch)
                assert response.status_code == 202
                acked.extend(e["props"]["m"] for e in batch)
        assert gateway.segments(), "acknowledged events wait in the journal (the flush interval is 30 s)"
        code = gateway.signal(signal.SIGTERM)
    finally:
        gateway.kill()
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status still says SIGTERM.
    assert code in (0, -signal.SIGTERM)
    found = _markers(clickhouse, database)
    assert set(found) == set(acked), "every acknowledged event was inserted before the process exited"
    assert all(c == 1 for c in found.values())
    assert gateway.segments() == [], "a clean shutdown leaves an empty journal"


def test_withdrawal_during_an_outage_erases_rows_queued_journaled_and_stored(
    clickhouse: FixtureServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        clickhouse_url=clickhouse.url,
        auto_migrate=True,
        flush_interval=0.05,
        insert_retry_initial=0.05,
        insert_retry_max=0.2,
    )
    gateway = ConsentGateway(Starlette(), settings)
    with TestClient(gateway) as client:
        assert client.post("/_consent/", json={"action": "accept_all"}, headers=ORIGIN).status_code == 200
        mine = [{"name": "pageview", "url": "/m", "props": {"m": f"mine-{i}"}} for i in range(20)]
        assert client.post("/_consent/collect", json=mine[:10], headers=ORIGIN).json()["kept"] == 10
        assert client.portal is not None
        flush(client, gateway, 30.0, "the first ten are stored")
        clickhouse.kill()
        assert client.post("/_consent/collect", json=mine[10:], headers=ORIGIN).json()["kept"] == 10
        withdrawn = client.post("/_consent/withdraw", json={}, headers=ORIGIN)
        assert withdrawn.status_code == 200
        assert withdrawn.json()["erased"] is False, "ClickHouse is down: the erasure is owed, not done"
        others = [{"name": "pageview", "url": "/o", "props": {"m": f"other-{i}"}} for i in range(5)]
        assert client.post("/_consent/collect", json=others, headers=ORIGIN).json()["pseudonymised"] == 5
        clickhouse.start()
        flush(client, gateway, 60.0)
    found = _markers(clickhouse, settings.database)
    assert not any(m.startswith("mine-") for m in found), "stored, journaled and queued rows are all gone"
    assert {m for m in found if m.startswith("other-")} == {f"other-{i}" for i in range(5)}
    leftovers = [p for p in (settings.journal_root).rglob("*.seg") if b"mine-" in p.read_bytes()]
    assert leftovers == [], "no journal segment still holds the withdrawn visitor's rows"


def test_shutdown_during_an_outage_keeps_the_journal_and_the_next_start_replays_it(
    clickhouse: FixtureServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        clickhouse_url=clickhouse.url,
        auto_migrate=True,
        flush_interval=0.05,
        insert_retry_initial=0.05,
        insert_retry_max=0.2,
        shutdown_timeout=1.0,
    )
    acked: list[str] = []
    with TestClient(ConsentGateway(Starlette(), settings)) as client:
        clickhouse.kill()
        for i in range(30):
            batch = [{"name": "pageview", "url": "/d", "props": {"m": f"down-{i}-{j}"}} for j in range(4)]
            assert client.post("/_consent/collect", json=batch, headers=ORIGIN).status_code == 202
            acked.extend(e["props"]["m"] for e in batch)
    # The lifespan shutdown gave up after shutdown_timeout: the rows wait in the journal.
    assert [p for p in settings.journal_root.rglob("*.seg") if p.stat().st_size]
    clickhouse.start()
    restarted = ConsentGateway(Starlette(), settings)
    with TestClient(restarted) as client:
        assert client.portal is not None
        flush(client, restarted, 60.0)
        assert restarted.runtime.pipeline.stats is not None
        replayed = restarted.runtime.pipeline.stats.replayed
    found = _markers(clickhouse, settings.database)
    assert set(found) == set(acked) and all(c == 1 for c in found.values())
    assert replayed == len(acked), "they came from the journal, at start"


def test_async_inserts_can_be_switched_on_for_servers(
    clickhouse: FixtureServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(clickhouse_url=clickhouse.url, auto_migrate=True, clickhouse_async_insert=True)
    gateway = ConsentGateway(Starlette(), settings)
    with TestClient(gateway) as client:
        batch = [{"name": "pageview", "url": "/a", "props": {"m": f"async-{i}"}} for i in range(25)]
        assert client.post("/_consent/collect", json=batch, headers=ORIGIN).status_code == 202
        assert client.portal is not None
        flush(client, gateway, 30.0)
    found = _markers(clickhouse, settings.database)
    assert set(found) == {f"async-{i}" for i in range(25)}
    sent = [i["settings"] for i in clickhouse.inserts() if i["table"].split(" ")[0].endswith(".`events`")]
    assert sent and all(s.get("async_insert") == "1" and s.get("wait_for_async_insert") == "1" for s in sent)


def test_encoded_rows_reach_a_server_with_each_body_compression(clickhouse: FixtureServer, tmp_path: Path) -> None:
    """The JSONCompactEachRow lines travel LZ4-framed, gzipped or plain, as the URL's compress asks."""
    import orjson

    from consent_gateway.pipeline.inserter import EVENT_NAMES
    from consent_gateway.store import migrate, open_store

    for n, compress in enumerate(("lz4", "gzip", "false")):
        database = f"compress_{n}"
        store = open_store(f"{clickhouse.url}/?compress={compress}", database)
        migrate(store)
        line = orjson.dumps(
            ["0123456789ab4def8123456789abcdef", 1_795_000_000.25, "site", "event", "signup", "marketing", 0, 7, [],
             "/요금제", 0, 0, "", "", "", "", "", "", "", "203.0.113.0/24", "Chrome", "124", "Linux", "desktop", 0,
             '{"plan":"연간"}']
        )  # fmt: skip
        store.insert_lines("events", [line, line.replace(b"signup", b"trial")], EVENT_NAMES)
        table = store.table("events")
        rows = store.query_rows(f"SELECT name, path, props, toUnixTimestamp64Milli(ts) FROM {table} ORDER BY name")
        assert rows == [("signup", "/요금제", '{"plan":"연간"}', 1_795_000_000_250),
                        ("trial", "/요금제", '{"plan":"연간"}', 1_795_000_000_250)]  # fmt: skip
        store.close()
    sent = [(i["encoding"], i["format"]) for i in clickhouse.inserts() if "events" in i["table"]]
    assert sent == [("lz4", "JSONCompactEachRow"), ("gzip", "JSONCompactEachRow"), ("identity", "JSONCompactEachRow")]
