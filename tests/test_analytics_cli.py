"""``consent-gateway keys``, ``stats`` and ``analytics``; the demo mount; the marketing views."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from consent_gateway import Settings, create_analytics_app
from consent_gateway.analytics import AnalyticsMount, TokenStore
from consent_gateway.cli import main
from consent_gateway.store import Store, migrate
from consent_gateway.store.schema import marketing_views

from . import analytics_data as data
from .conftest import CHDB_URL
from .support import ThreadServer


@pytest.fixture
def config(tmp_path: Path, database: str, store: Store) -> Path:
    """A settings file on the test engine and database, with the data set loaded."""
    path = tmp_path / "cg.toml"
    path.write_text(
        textwrap.dedent(f"""
        site_id = "test-site"
        clickhouse_url = "{CHDB_URL}"
        database = "{database}"
        data_dir = "{tmp_path / "data"}"
        """),
        encoding="utf-8",
    )
    migrate(store)
    return path


@pytest.fixture
def base(store: Store, config: Path) -> dt.date:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)
    data.insert(store, "events", data.build_rows(day))
    data.insert(store, "consent_receipts", data.build_receipts(day))
    return day


def test_keys_create_list_revoke(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "team-a", "--expires", "30", "--config", str(config)]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("cga_") and len(token) > 40
    assert main(["keys", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert "team-a" in listing and "active" in listing and token not in listing
    settings = Settings.load(config)
    assert token not in settings.tokens_path.read_text()
    assert TokenStore(settings.tokens_path).verify(token) is not None
    # A second active token of the same name is refused, naming the fix.
    assert main(["keys", "create", "team-a", "--config", str(config)]) == 2
    assert "revoke it first" in capsys.readouterr().err
    assert main(["keys", "revoke", "team-a", "--config", str(config)]) == 0
    assert TokenStore(settings.tokens_path).verify(token) is None
    main(["keys", "list", "--config", str(config)])
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "secret"]) == 0
    assert len(capsys.readouterr().out.strip()) >= 32


def test_keys_share_prints_a_read_only_link_once(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "https://stats.example/_analytics"
    assert (
        main(
            ["keys", "share", "--site", "shop", "--expires", "7", "--name", "q4", "--url", url, "--config", str(config)]
        )
        == 0
    )
    link = capsys.readouterr().out.strip()
    assert link.startswith(f"{url}/?site=shop#share=")
    token = link.split("#share=", 1)[1]
    settings = Settings.load(config)
    record = TokenStore(settings.tokens_path).verify(token)
    assert record is not None and record.kind == "share" and record.sites == ("shop",) and record.expires
    assert main(["keys", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert token not in listing and any(line.startswith("q4") and "share" in line for line in listing.splitlines())
    assert main(["keys", "revoke", "q4", "--config", str(config)]) == 0
    assert TokenStore(settings.tokens_path).verify(token) is None


def test_keys_create_site_names_the_sites_a_token_reads(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "both", "--site", "shop", "--site", "blog", "--config", str(config)]) == 0
    token = capsys.readouterr().out.strip()
    assert main(["keys", "create", "own", "--config", str(config)]) == 0
    capsys.readouterr()
    settings = Settings.load(config)
    record = TokenStore(settings.tokens_path).verify(token)
    assert record is not None and record.readable_sites(settings.site_id) == ("shop", "blog")
    assert main(["keys", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert any(line.startswith("both") and "sites shop,blog" in line for line in listing)
    assert any(line.startswith("own") and f"sites {settings.site_id}" in line for line in listing)


def test_stats_reads_the_data_directly(config: Path, base: dt.date, capsys: pytest.CaptureFixture[str]) -> None:
    rng = ["--from", base.isoformat(), "--to", (base + dt.timedelta(days=2)).isoformat()]
    assert main(["stats", "aggregate", "--config", str(config), *rng]) == 0
    table = capsys.readouterr().out
    header, _, values = table.splitlines()[:3]
    assert header.split() == [
        "visitors",
        "visits",
        "pageviews",
        "events",
        "views_per_visit",
        "bounce_rate",
        "visit_duration",
        "conversions",
        "conversion_rate",
    ]
    assert values.split() == ["32", "45", "83", "14", "1.84", "0.4222", "48", "7", "0.2188"]
    assert "estimates: visitors" in table
    assert main(["stats", "breakdown", "--dimension", "browser", "--format", "csv", "--config", str(config), *rng]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "value,visitors,pageviews,events"
    # RareBrowser (2 people) is the only small group: neither listed nor folded into an "other" row.
    assert sorted(lines[1:]) == ["Chrome,6,37,12", "Firefox,6,24,2", "Safari,18,18,0"]
    assert (
        main(["stats", "funnel", "--steps", "page:/,page:/pricing", "--format", "json", "--config", str(config), *rng])
        == 0
    )
    body = json.loads(capsys.readouterr().out)
    assert [r["visitors"] for r in body["results"]] == [32, 12]
    assert (
        main(["stats", "timeseries", "--interval", "day", "--filter", "device=tablet", "--config", str(config), *rng])
        == 0
    )
    assert capsys.readouterr().out.splitlines()[2].split()[:3] == [base.isoformat(), "6", "6"]
    # Bad values are named, as in the API.
    assert main(["stats", "breakdown", "--dimension", "visitor", "--config", str(config)]) == 2
    assert "'dimension'" in capsys.readouterr().err
    assert main(["stats", "aggregate", "--filter", "nonsense", "--config", str(config)]) == 2
    assert "DIMENSION=VALUE" in capsys.readouterr().err


def test_stats_over_http(config: Path, base: dt.date, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.load(config)
    token, _ = TokenStore(settings.tokens_path).create("cli")
    server = ThreadServer(create_analytics_app(settings, store=store), lifespan="off").start()
    try:
        url = server.url
        rng = ["--from", base.isoformat(), "--to", (base + dt.timedelta(days=2)).isoformat()]
        assert main(["stats", "breakdown", "--dimension", "device", "--url", url, "--token", token, *rng]) == 0
        out = capsys.readouterr().out
        tablet = next(line for line in out.splitlines() if line.startswith("tablet"))
        assert tablet.split() == ["tablet", "18", "18", "0"]
        assert main(["stats", "aggregate", "--url", url, "--token", "cga_wrong", *rng]) == 2
        assert "401" in capsys.readouterr().err
        assert main(["stats", "aggregate", "--url", url, "--token", token, "--limit", "3"]) == 2
        assert "'limit'" in capsys.readouterr().err
    finally:
        server.stop()


def test_stats_says_when_the_data_is_locked(tmp_path: Path) -> None:
    """Two child processes: one holds an embedded engine's data, the other asks it for stats."""
    data_dir = tmp_path / "locked"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_GATEWAY_")}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from consent_gateway.store import open_store
            store = open_store("chdb://{data_dir / "clickhouse"}", "default")
            store.query_rows("SELECT 1")
            print("ready", flush=True)
            time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = subprocess.run(
            [sys.executable, "-m", "consent_gateway.cli", "stats", "aggregate", "--data", str(data_dir)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    # An unknown holder: both ways to ask a server, no engine error text.
    assert "opens in one process only" in result.stderr
    assert "--url http://HOST:PORT/_analytics --token" in result.stderr and "8001" in result.stderr
    assert "DB::Exception" not in result.stderr and "Code:" not in result.stderr


def test_demo_mount_routes_only_its_prefix(make_settings: Callable[..., Settings], store: Store) -> None:
    settings = make_settings()
    migrate(store)
    token, _ = TokenStore(settings.tokens_path).create("mount")
    seen: list[str] = []

    async def site(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # the wrapped app (the gateway) gets the lifespan
            while True:
                message = await receive()
                seen.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"site"})

    app = AnalyticsMount(site, create_analytics_app(settings, store=store), "/_analytics")
    with TestClient(app) as client:
        assert client.get("/_analytics", follow_redirects=False).headers["location"] == "/_analytics/"
        assert "<title>" in client.get("/_analytics/").text
        assert client.get("/_analytics/api/v1/aggregate").status_code == 401
        ok = client.get("/_analytics/api/v1/aggregate", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["results"][0]["pageviews"] == 0
        assert client.get("/_analyticsx").text == "site"
        assert client.get("/pricing").text == "site"
    assert seen == ["lifespan.startup", "/_analyticsx", "/pricing", "lifespan.shutdown"]


def test_marketing_views(store: Store) -> None:
    migrate(store)
    tables = {
        r[0]
        for r in store.query_rows("SELECT name FROM system.tables WHERE database = {db:String}", {"db": store.database})
    }
    # The embedded engine has no roles: migration 4 creates nothing there.
    assert "marketing_events" not in tables and "events_daily" in tables
    # The same view statements a server gets are valid and expose no visitor keys, IPs or click ids.
    for statement in marketing_views(store):
        store.command(statement)
    columns = {
        r[0]
        for r in store.query_rows(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'marketing_events'",
            {"db": store.database},
        )
    }
    assert "utm_campaign" in columns and "ad_click" in columns
    assert not columns & {"visitor", "ip_prefix", "click_id", "granted", "props", "event_id"}
    data.insert(store, "events", data.build_rows(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)))
    campaigns = dict(
        store.query_rows(
            f"SELECT utm_campaign, count() FROM {store.table('marketing_events')} WHERE kind = 'visit' "
            "AND name = 'pageview' GROUP BY utm_campaign"
        )
    )
    assert campaigns["spring"] == 8  # C1..C8 granted marketing; the other "spring" rows are blanked


def test_stats_while_the_demo_runs_names_the_demos_url_and_that_url_answers(tmp_path: Path) -> None:
    """The engine locked by a running demo: no raw engine error, the exact --url to use, and a token
    made from another folder against the demo's store works there; "-" cells are explained."""
    import httpx

    from .test_serve_uvicorn import COMMAND, _environment, _serve, _stop

    data_dir = tmp_path / "data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, *args], capture_output=True, text=True, timeout=120, env=_environment(), cwd=elsewhere
        )

    with _serve(["demo", "--data", "data"], cwd=tmp_path) as demo:
        base = demo.base
        assert httpx.get(f"{base}/", timeout=10).status_code == 200  # one visitor: fewer than k

        locked = cli("stats", "aggregate", "--data", str(data_dir))
        assert locked.returncode == 2, locked.stdout + locked.stderr
        assert f"data: {data_dir}" in locked.stderr
        assert "DB::Exception" not in locked.stderr and "Code: 76" not in locked.stderr
        assert "Cannot lock" not in locked.stderr and "Traceback" not in locked.stderr
        suggested = f"--url {base}/_analytics"
        assert suggested in locked.stderr and "the demo" in locked.stderr

        made = cli("keys", "create", "report", "--data", str(data_dir))
        assert made.returncode == 0 and f"data: {data_dir}" in made.stderr
        token = made.stdout.strip()
        asked = cli("stats", "aggregate", "--url", f"{base}/_analytics", "--token", token)
        assert asked.returncode == 0, asked.stderr
        assert "visitors" in asked.stdout.splitlines()[0]
        assert " - " in f" {asked.stdout.splitlines()[2]} "  # suppressed cells ...
        assert '"-": suppressed, because fewer than k=5 visitors' in asked.stdout  # ... and why
        code, output = _stop(demo)
    assert code in (0, -15), output
