"""The writer thread: batches, erasure of queued rows, and a shutdown flush that loses nothing."""

from __future__ import annotations

from collections.abc import Callable

from consent_gateway import ConsentGateway, Settings
from consent_gateway.store import Store
from tests.conftest import SECRET
from tests.gateway_support import client_for, flush, sign_cookie, site_app

BATCH = 500
REQUESTS = 40  # 20,000 events


def test_shutdown_flushes_every_acknowledged_record(make_settings: Callable[..., Settings], store: Store) -> None:
    # A 30 s interval and a batch far above what is sent: nothing is due before shutdown, so the
    # rows can only reach ClickHouse through the shutdown flush.
    settings = make_settings(
        flush_interval=30, batch_size=100_000, collect_max_events=BATCH, collect_max_body=512_000, shutdown_timeout=60
    )
    gateway = ConsentGateway(site_app(), settings)
    kept = pseudonymised = dropped = 0
    body = [{"name": "pageview", "url": f"/p/{i}", "props": {"i": i}} for i in range(BATCH - 50)]
    body += [{"name": "signup", "url": "/?utm_source=x"} for _ in range(50)]
    with client_for(gateway) as consented, client_for(gateway) as anonymous:
        consented.cookies.set("cg_consent", sign_cookie(SECRET, categories=["necessary", "analytics"]))
        for i in range(REQUESTS):
            response = (consented if i % 2 else anonymous).post("/_consent/collect", json=body)
            assert response.status_code == 202
            counts = response.json()
            kept += counts["kept"]
            pseudonymised += counts["pseudonymised"]
            dropped += counts["dropped"]
        consented.get("/")
        anonymous.post("/_consent/", json={"action": "reject_all"})
        assert gateway.runtime.pipeline.running
    assert not gateway.runtime.pipeline.running
    acknowledged = kept + pseudonymised
    assert acknowledged + dropped == BATCH * REQUESTS == 20_000
    table = store.table("events")
    assert store.query_rows(f"SELECT count() FROM {table} WHERE kind = 'event'")[0][0] == acknowledged
    assert store.query_rows(f"SELECT count() FROM {table} WHERE kind = 'event' AND identified = 1")[0][0] == kept
    assert store.query_rows(f"SELECT count() FROM {table} WHERE kind = 'visit'")[0][0] == 1
    assert store.query_rows(f"SELECT count() FROM {table} WHERE name = 'signup'")[0][0] == 0
    assert store.query_rows(f"SELECT uniqExact(path) FROM {table} WHERE kind = 'event'")[0][0] == BATCH - 50
    assert store.query_rows(f"SELECT count() FROM {store.table('consent_receipts')}")[0][0] == 1


def test_batches_are_written_while_running(make_settings: Callable[..., Settings], store: Store) -> None:
    gateway = ConsentGateway(site_app(), make_settings(flush_interval=30, batch_size=100))
    with client_for(gateway) as client:
        for _ in range(5):
            client.post("/_consent/collect", json=[{"name": "pageview"}] * 50)
        flush(client, gateway)
        assert store.query_rows(f"SELECT count() FROM {store.table('events')}")[0][0] == 250
        stats = gateway.runtime.pipeline.stats
        assert stats is not None and stats.inserted_events == 250
        assert stats.batches >= 2  # 250 rows in batches of at most ~100, never one insert per row
        assert stats.batches < 250


def test_withdraw_removes_rows_still_waiting_in_the_queue(make_settings: Callable[..., Settings], store: Store) -> None:
    gateway = ConsentGateway(site_app(), make_settings(flush_interval=30, batch_size=100_000))
    cookie = sign_cookie(SECRET, consent_id="cid-queued-0123456789", categories=["necessary", "analytics"])
    with client_for(gateway) as client, client_for(gateway) as other:
        client.cookies.set("cg_consent", cookie)
        other.cookies.set("cg_consent", sign_cookie(SECRET, consent_id="cid-other-0123456789"))
        assert client.post("/_consent/collect", json=[{"name": "pageview"}] * 30).json()["kept"] == 30
        assert other.post("/_consent/collect", json=[{"name": "pageview"}] * 7).json()["kept"] == 7
        assert client.post("/_consent/withdraw", json={}).json()["erased"] is True
        # A second tab still sends the old cookie: its records lose the identity in the writer.
        stale = client_for(gateway)
        stale.cookies.set("cg_consent", cookie)
        assert stale.post("/_consent/collect", json=[{"name": "pageview"}] * 4).status_code == 202
    visitor = gateway.runtime.rows.visitor_of("cid-queued-0123456789")
    table = store.table("events")
    assert (
        store.query_rows(
            f"SELECT count() FROM {table} WHERE identified = 1 AND visitor = {{v:UInt64}}", {"v": visitor}
        )[0][0]
        == 0
    )
    assert store.query_rows(f"SELECT count() FROM {table} WHERE identified = 1")[0][0] == 7
    assert store.query_rows(f"SELECT count() FROM {table} WHERE identified = 0")[0][0] == 4


def test_healthz_reports_the_writer(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings(flush_interval=30))
    with client_for(gateway) as client:
        client.post("/_consent/collect", json=[{"name": "pageview"}] * 3)
        health = client.get("/_consent/healthz").json()
    assert health["status"] == "ok" and health["writer"] is True
    assert isinstance(health["queued"], int)
    assert gateway.runtime.pipeline.running is False  # lifespan shutdown stopped the thread


def test_app_without_lifespan_support_still_gets_a_writer(make_settings: Callable[..., Settings], store: Store) -> None:
    async def bare(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            raise RuntimeError("this app speaks HTTP only")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    gateway = ConsentGateway(bare, make_settings(flush_interval=30))
    with client_for(gateway) as client:
        assert gateway.runtime.pipeline.running
        assert client.get("/hello").text == "ok"
    assert not gateway.runtime.pipeline.running
    assert store.query_rows(f"SELECT path FROM {store.table('events')}") == [("/hello",)]
