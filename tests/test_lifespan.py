"""Lifespan: the gateway starts and stops its pipeline with the app, and a failed start fails loudly."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from consent_gateway import ConsentGateway, Settings, StoreError

from .support import free_port


async def _hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse("hello")


def test_unreachable_clickhouse_fails_startup_instead_of_hanging(make_settings: Callable[..., Settings]) -> None:
    # A free port: nothing listens there.
    settings = make_settings(clickhouse_url=f"http://127.0.0.1:{free_port()}", auto_migrate=True)
    gateway = ConsentGateway(Starlette(routes=[Route("/", _hello)]), settings)
    with pytest.raises(StoreError) as info, TestClient(gateway):
        pass
    assert "ClickHouse" in str(info.value)
    assert not gateway.runtime.started


async def _no_lifespan_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise RuntimeError("this app only speaks http")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"plain"})


def test_app_without_lifespan_still_gets_a_started_and_stopped_gateway(settings: Settings) -> None:
    gateway = ConsentGateway(_no_lifespan_app, settings)
    with TestClient(gateway) as client:
        assert gateway.runtime.started
        assert client.get("/").text == "plain"
        assert client.get("/_consent/healthz").status_code == 200
    assert not gateway.runtime.started


def test_app_lifespan_runs_inside_the_gateway_lifespan(settings: Settings) -> None:
    seen: list[bool] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        seen.append(gateway.runtime.started)
        yield
        seen.append(gateway.runtime.started)

    gateway = ConsentGateway(Starlette(routes=[Route("/", _hello)], lifespan=lifespan), settings)
    with TestClient(gateway) as client:
        assert client.get("/").text == "hello"
    # The app starts after the gateway and stops before it, so it can rely on the pipeline.
    assert seen == [True, True]
    assert not gateway.runtime.started


def test_gateway_starts_during_a_clickhouse_outage_and_delivers_once_it_is_back(
    tmp_path: Any, make_settings: Callable[..., Settings], database: str
) -> None:
    from consent_gateway.store import migrate, open_store
    from tests.clickhouse_http_server import FixtureServer

    server = FixtureServer(tmp_path / "clickhouse-server")
    server.start()
    try:
        migrate(open_store(server.url, database))
        server.kill()  # the outage begins before the gateway starts
        settings = make_settings(clickhouse_url=server.url, insert_retry_initial=0.05, insert_retry_max=0.2)
        gateway = ConsentGateway(Starlette(routes=[Route("/", _hello)]), settings)
        with TestClient(gateway, base_url="http://testserver") as client:
            assert client.get("/").text == "hello"
            ready = client.get("/_consent/readyz")
            assert ready.status_code == 503 and ready.json()["clickhouse"] is False
            events = [{"name": "pageview", "url": f"/outage/{i}", "props": {"m": f"o{i}"}} for i in range(30)]
            answer = client.post("/_consent/collect", json=events, headers={"origin": "http://testserver"})
            assert answer.status_code == 202 and answer.json()["accepted"] == 30
            server.start()
            stored = 0
            for _ in range(600):
                rows = server.client().query(
                    f"SELECT count() FROM `{database}`.events WHERE path LIKE '/outage/%'"
                ).result_rows
                stored = int(rows[0][0])
                if stored >= 30:
                    break
                time.sleep(0.1)
            assert stored == 30
            assert client.get("/_consent/readyz").status_code == 200
    finally:
        server.kill()


def test_a_single_event_on_a_quiet_site_is_inserted_at_the_flush_interval(settings: Settings, store: Any) -> None:
    """One event, no more traffic, no shutdown: it must not wait for a full batch."""
    gateway = ConsentGateway(Starlette(routes=[Route("/", _hello)]), settings)
    with TestClient(gateway, base_url="http://testserver") as client:
        answer = client.post(
            "/_consent/collect", json={"name": "pageview", "url": "/quiet"}, headers={"origin": "http://testserver"}
        )
        assert answer.status_code == 202
        count = 0
        for _ in range(300):
            count = int(store.query_rows(f"SELECT count() FROM {store.table('events')} WHERE path = '/quiet'")[0][0])
            if count:
                break
            time.sleep(0.05)
        assert count == 1


def test_two_consent_cookies_the_newest_valid_choice_wins(settings: Settings) -> None:
    """After a cookie_domain change a browser sends both cookies; the later choice is the one in force."""
    from consent_gateway.consent import ConsentRecord

    gateway = ConsentGateway(Starlette(routes=[Route("/", _hello)]), settings)
    codec = gateway.runtime.codec
    older = codec.encode(ConsentRecord("a" * 22, "1.0", ("necessary", "marketing"), "custom", 1_000))
    newer = codec.encode(ConsentRecord("b" * 22, "1.0", ("necessary", "analytics"), "custom", 2_000))
    with TestClient(gateway, base_url="http://testserver") as client:
        for pair in (f"cg_consent={older}; cg_consent={newer}", f"cg_consent={newer}; cg_consent={older}",
                     f"cg_consent=garbage; cg_consent={newer}"):
            state = client.get("/_consent/state", headers={"cookie": pair}).json()
            assert state["status"] == "given"
            assert "analytics" in state["categories"] and "marketing" not in state["categories"]
