"""Visibility: Prometheus metrics on /_consent/metrics, readiness, and the salt clean-up job."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from consent_gateway import ConsentGateway, Settings

from .support import flush

ORIGIN = {"origin": "http://testserver"}


async def _page(request: object) -> HTMLResponse:
    return HTMLResponse("<!doctype html><html><body>page</body></html>")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_queued_journaled_and_inserted_records(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(Starlette(routes=[Route("/", _page)]), make_settings())
    with TestClient(gateway) as client:
        for _ in range(3):
            assert client.get("/").status_code == 200
        events = [{"name": "pageview", "url": f"/e/{i}"} for i in range(7)]
        assert client.post("/_consent/collect", json=events, headers=ORIGIN).status_code == 202
        assert client.portal is not None
        flush(client, gateway, 30.0)
        response = client.get("/_consent/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    s = _samples(response.text)
    assert s[("cg_pipeline_queued_records_total", (("kind", "event"),))] == 7
    assert s[("cg_pipeline_queued_records_total", (("kind", "visit"),))] == 3
    assert s[("cg_pipeline_journaled_rows_total", ())] == 10
    assert s[("cg_pipeline_inserted_rows_total", (("table", "events"),))] == 10
    assert s[("cg_pipeline_insert_batch_rows_sum", ())] == 10
    assert s[("cg_pipeline_insert_seconds_count", ())] >= 1
    assert s[("cg_journal_commit_seconds_count", ())] >= 1
    assert s[("cg_pipeline_pending_rows", ())] == 0
    assert s[("cg_clickhouse_up", ())] == 1
    assert not any(name == "cg_pipeline_shed_records_total" and value for (name, _), value in s.items())


def test_readiness_is_ok_on_the_embedded_engine_and_liveness_stays_separate(
    make_settings: Callable[..., Settings],
) -> None:
    gateway = ConsentGateway(Starlette(), make_settings())
    with TestClient(gateway) as client:
        ready = client.get("/_consent/readyz")
        live = client.get("/_consent/healthz")
    assert ready.status_code == 200 and ready.json()["clickhouse"] is True
    assert live.status_code == 200


def test_salts_older_than_48_hours_are_destroyed_while_the_gateway_runs(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(salt_check_interval=0.05)
    gateway = ConsentGateway(Starlette(), settings)
    with TestClient(gateway) as client:
        assert client.get("/_consent/healthz").status_code == 200
        salts = settings.keys_dir / "salts.json"
        today = dt.datetime.now(dt.UTC).date()
        old = (today - dt.timedelta(days=3)).isoformat()
        # A salt that outlived its 48 hours appears after start (e.g. written by another worker).
        current = json.loads(salts.read_text()) if salts.exists() else {}
        salts.write_text(json.dumps({**current, old: "00" * 32, today.isoformat(): "11" * 32}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and old in json.loads(salts.read_text()):
            time.sleep(0.05)
        left = json.loads(salts.read_text())
    assert old not in left, "the background job destroyed the expired salt"
    assert today.isoformat() in left, "today's salt is kept"
