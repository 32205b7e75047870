"""Limits reached on purpose: visits are shed first, /collect gets 503 with Retry-After, receipts
are never shed, every shed record is counted, and nothing acknowledged is lost on the way.

The queue test stalls the writer's group commit by holding its lock (as a disk that stopped
answering would). The journal test uses the ClickHouse HTTP test fixture,
killed, so inserts fail fast and the journal grows to its limit.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from consent_gateway import ConsentGateway, Settings

from .clickhouse_http_server import FixtureServer
from .support import flush, wait_until

ORIGIN = {"origin": "http://testserver"}


async def _page(request: object) -> HTMLResponse:
    return HTMLResponse("<!doctype html><html><body>page</body></html>")


def _shed(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "cg_pipeline_shed_records_total":
                out[(s.labels["kind"], s.labels["reason"])] = s.value
    return out


def _events(prefix: str, n: int) -> list[dict[str, object]]:
    return [{"name": "pageview", "url": "/e", "props": {"m": f"{prefix}-{i}"}} for i in range(n)]


def test_a_full_queue_sheds_visits_first_then_refuses_events_with_503(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(queue_max=20, visit_shed_fraction=0.5, collect_ack_timeout=0.5)
    gateway = ConsentGateway(Starlette(routes=[Route("/", _page)]), settings)
    with TestClient(gateway) as client:
        pipeline = gateway.runtime.pipeline
        writer = pipeline._writer
        assert writer is not None
        # Stall the group commit (as a disk that stopped answering would): hold the writer's lock.
        writer._backlog.lock.acquire()
        try:
            # The writer takes waiting visits every visit window. Let it take one now and block on
            # the lock with it, so no window can empty the queue in the middle of the count below.
            assert client.get("/").status_code == 200
            assert wait_until(lambda: pipeline.queued == 0), "the writer takes visits at its window"
            for _ in range(14):
                assert client.get("/").status_code == 200, "pages never wait for the pipeline"
            assert pipeline.queued == 10, "visits stop at half the queue (visit_shed_fraction)"
            too_many = client.post("/_consent/collect", json=_events("over", 11), headers=ORIGIN)
            assert too_many.status_code == 503 and too_many.headers["retry-after"] == "5"
            assert pipeline.queued == 10, "a refused request adds nothing"
            # Ten more fit in the queue, but the stalled writer cannot make them durable in time.
            stalled = client.post("/_consent/collect", json=_events("stalled", 10), headers=ORIGIN)
            assert stalled.status_code == 503
            metrics = client.get("/_consent/metrics").text
        finally:
            writer._backlog.lock.release()
        assert client.portal is not None
        assert client.portal.call(pipeline.flush, 30.0)
        assert pipeline.queued == 0
    shed = _shed(metrics)
    assert shed[("visit", "queue")] == 4
    assert shed[("event", "queue")] == 11
    assert "cg_pipeline_ack_timeouts_total 1.0" in metrics


def test_a_full_journal_sheds_visits_then_answers_503_and_keeps_receipts(
    clickhouse: FixtureServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        clickhouse_url=clickhouse.url,
        auto_migrate=True,
        journal_segment_bytes=4096,
        journal_max_bytes=16384,
        visit_shed_fraction=0.5,
        flush_interval=0.05,
        insert_retry_initial=0.05,
        insert_retry_max=0.2,
    )
    gateway = ConsentGateway(Starlette(routes=[Route("/", _page)]), settings)
    acked: list[str] = []
    with TestClient(gateway) as client:
        state = gateway.runtime.pipeline.state
        clickhouse.kill()
        i = 0
        while not state.visits_full and i < 200:
            batch = _events(f"a{i}", 2)
            assert client.post("/_consent/collect", json=batch, headers=ORIGIN).status_code == 202
            acked.extend(str(e["props"]["m"]) for e in batch)  # type: ignore[index]
            i += 1
        assert state.visits_full and not state.journal_full
        for _ in range(5):
            client.get("/")  # shed: the journal is past visit_shed_fraction
        refused = None
        while i < 400:
            batch = _events(f"b{i}", 2)
            response = client.post("/_consent/collect", json=batch, headers=ORIGIN)
            if response.status_code == 503:
                refused = response
                break
            assert response.status_code == 202
            acked.extend(str(e["props"]["m"]) for e in batch)  # type: ignore[index]
            i += 1
        assert refused is not None and refused.headers["retry-after"] == "5"
        assert state.journal_full
        choice = client.post("/_consent/", json={"action": "accept_all"}, headers=ORIGIN)
        assert choice.status_code == 200, "a consent choice (and its receipt) is never refused"
        metrics = client.get("/_consent/metrics").text

        clickhouse.start()
        assert client.portal is not None
        flush(client, gateway, 60.0)
        after = client.post("/_consent/collect", json=_events("after", 1), headers=ORIGIN)
        assert after.status_code == 202, "room again once the journal drained into ClickHouse"
        flush(client, gateway, 60.0)
    shed = _shed(metrics)
    assert shed[("visit", "journal")] == 5
    assert shed[("event", "journal")] == 2
    db = clickhouse.client()
    rows = db.query(
        f"SELECT JSONExtractString(props, 'm') AS m, count() FROM `{settings.database}`.events "
        "WHERE kind = 'event' GROUP BY m"
    ).result_rows
    receipts = db.command(f"SELECT count() FROM `{settings.database}`.consent_receipts")
    db.close()
    found = {str(m): int(c) for m, c in rows}
    assert set(found) == {*acked, "after-0"} and all(c == 1 for c in found.values())
    assert int(receipts) == 1
