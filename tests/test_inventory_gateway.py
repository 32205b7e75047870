"""The inventory fed from real traffic: a wrapped app behind the real gateway, then the CLI on what it wrote."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from consent_gateway import ConsentGateway, Settings, inventory_cli, runtime
from consent_gateway.inventory import read_inventory
from consent_gateway.store import Store

from .conftest import CHDB_URL, PSEUDONYM_KEY, SECRET
from .gateway_support import client_for, set_cookie_map, sign_cookie, site_app
from .test_inventory import catalogue


async def _django_like(request: Request) -> PlainTextResponse:
    response = PlainTextResponse("login")
    response.set_cookie("csrftoken", "t0k3n", max_age=31449600, samesite="lax")
    response.set_cookie("_ga", "GA1.1.42", max_age=63072000)
    return response


def _gateway(settings: Settings, monkeypatch: Any) -> ConsentGateway:
    app = site_app()
    app.router.routes.append(Route("/login", _django_like))
    # The gateway enforces and counts with the test catalogue.
    monkeypatch.setattr(runtime, "installed_catalogue", lambda: catalogue)
    return ConsentGateway(app, settings)


def test_traffic_through_the_gateway_fills_the_inventory(
    make_settings: Callable[..., Settings], store: Store, database: str, tmp_path: Path, monkeypatch: Any
) -> None:
    settings = make_settings()
    gateway = _gateway(settings, monkeypatch)
    with client_for(gateway) as client:
        # A first visitor, no choice yet: only necessary cookies pass; a script already set _hjid.
        first = client.get("/", headers={"cookie": "_hjid=abc; _pa_js=1"})
        assert set(set_cookie_map(first)) == {"palette_session"}
        login = client.get("/login")
        # Whether the gateway already knows csrftoken as necessary depends on its registry; the
        # inventory counts what the gateway did.
        csrf_blocked = 0 if "csrftoken" in set_cookie_map(login) else 1
        assert "_ga" not in set_cookie_map(login)
        client.cookies.clear()
        # A visitor who accepted everything.
        everything = sign_cookie(SECRET, consent_id="cid-everything-000001")
        second = client.get("/students", headers={"cookie": f"cg_consent={everything}; _hjid=abc"})
        assert "_mk_pixel" in set_cookie_map(second)
        client.get("/unknown", headers={"cookie": f"cg_consent={everything}"})
    # Shutting the app down wrote the counts.
    report = read_inventory(store, settings.site_id)
    by = {c.name: c for c in report.cookies}
    assert {
        "palette_session",
        "ui_lang",
        "_pa_id",
        "_mk_pixel",
        "_mk_campaign",
        "mystery_cookie",
        "csrftoken",
        "_ga",
        "_hjid",
        "_pa_js",
        "cg_consent",
    } <= set(by)
    pixel = by["_mk_pixel"]
    assert (pixel.set_count, pixel.blocked, pixel.source, pixel.set_by) == (2, 1, "registry", "server")
    assert {p for p, _ in pixel.top_paths} == {"/", "/students"}
    assert by["palette_session"].http_only and by["palette_session"].blocked == 0
    assert (by["csrftoken"].source, by["csrftoken"].same_site) == ("catalogue", "Lax")
    assert by["csrftoken"].blocked == csrf_blocked
    assert by["_ga"].blocked == 1 and by["_ga"].lifetime_seconds == 63072000
    hj = by["_hjid"]
    assert (hj.set_by, hj.source, hj.request_count, hj.before_consent) == ("script", "unclassified", 2, 1)
    assert by["_pa_js"].before_consent == 1  # analytics, sent back before any consent
    assert by["cg_consent"].source == "gateway"
    # Nothing of a value reached the table.
    dump = repr(store.query_rows(f"SELECT * FROM {store.table('cookie_inventory')}"))
    assert "t0k3n" not in dump and "GA1.1.42" not in dump and "v-_mk_pixel" not in dump and "abc" not in dump

    # And the CLI reads it back: the toml lines name what the registry lacks.
    config = tmp_path / "consent.toml"
    config.write_text(
        f'site_id = "test-site"\nclickhouse_url = "{CHDB_URL}"\ndatabase = "{database}"\n'
        f'secret_keys = ["{SECRET}"]\npseudonym_key = "{PSEUDONYM_KEY}"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(inventory_cli, "installed_catalogue", lambda: catalogue)
    parser = argparse.ArgumentParser()
    inventory_cli.add_cookies_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    args = parser.parse_args(["cookies", "--config", str(config), "--format", "json", "--unclassified"])
    assert args.func(args, out) == 0
    # This config has no [cookies] registry, so the site's own names are unknown to it too.
    assert {"_hjid", "mystery_cookie", "_mk_pixel"} <= {c["name"] for c in json.loads(out.getvalue())["cookies"]}
    assert gateway.runtime.inventory.drain() == []  # shutting down wrote everything counted


def test_the_middleware_on_its_own_keeps_an_inventory_too(make_settings: Callable[..., Settings], store: Store) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    from consent_gateway import ConsentMiddleware

    settings = make_settings()
    app = Starlette(
        routes=[Route("/login", _django_like)], middleware=[Middleware(ConsentMiddleware, settings=settings)]
    )
    with client_for(app) as client:  # type: ignore[arg-type]
        answer = client.get("/login", headers={"cookie": "zz_widget=1"})
        assert "_ga" not in set_cookie_map(answer)
    # Its lifespan wrote the counts when the app shut down.
    by = {c.name: c for c in read_inventory(store, settings.site_id).cookies}
    assert by["_ga"].blocked == 1 and by["zz_widget"].request_count == 1
