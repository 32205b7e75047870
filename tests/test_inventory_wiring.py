"""The cookie inventory, declaration, children's rule, my-data and audit exports, wired into the real
ConsentGateway on the embedded engine: what a site gets without building anything itself."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from consent_gateway import ConsentGateway, Settings, cli
from consent_gateway.audit import read_receipts
from consent_gateway.children import NOTICE, mark_child
from consent_gateway.inventory import read_inventory
from consent_gateway.store import Store, migrate

from .conftest import CHDB_URL, PSEUDONYM_KEY, SECRET
from .support.driver import client_for
from .support.flush import flush
from .support.site import PAGE, SITE_COOKIES, set_cookie_map, sign_cookie, site_app

ORIGIN = {"origin": "http://testserver"}
EVERYTHING = sign_cookie(SECRET, consent_id="cid-wired-everything-01")


async def _login(request: Request) -> Response:
    # Django's CSRF cookie (catalogued, not registered) and Google Analytics' (catalogued marketing).
    response = PlainTextResponse("login")
    response.set_cookie("csrftoken", "t0k3n", max_age=31449600, samesite="lax")
    response.set_cookie("_ga", "GA1.1.42", max_age=63072000)
    return response


def _page_with_cookies(mark: Callable[[Request, Response], None]) -> Callable[[Request], Any]:
    async def page(request: Request) -> Response:
        response = HTMLResponse(PAGE)
        for name, _ in SITE_COOKIES:
            response.set_cookie(name, f"v-{name}")
        mark(request, response)
        return response

    return page


def _header(value: str) -> Callable[[Request, Response], None]:
    def mark(request: Request, response: Response) -> None:
        response.headers["X-Consent-Child"] = value

    return mark


def _call(request: Request, response: Response) -> None:
    mark_child(request.scope)


def _gateway(settings: Settings) -> ConsentGateway:
    app = site_app()
    app.router.routes.extend(
        [
            Route("/login", _login),
            Route("/kid", _page_with_cookies(_header("1"))),
            Route("/kid-by-call", _page_with_cookies(_call)),
            Route("/kid-guardian", _page_with_cookies(_header('1; guardian="marketing"'))),
        ]
    )
    return ConsentGateway(app, settings)


def _config(tmp_path: Path, database: str) -> Path:
    config = tmp_path / "consent.toml"
    config.write_text(
        f'site_id = "test-site"\nclickhouse_url = "{CHDB_URL}"\ndatabase = "{database}"\n'
        f'secret_keys = ["{SECRET}"]\npseudonym_key = "{PSEUDONYM_KEY}"\n'
        f'data_dir = "{tmp_path / "data"}"\n\n'
        '[cookies]\npalette_session = "necessary"\nui_lang = "preferences"\n_pa_id = "analytics"\n'
        '_pa_js = "analytics"\n"_mk_*" = "marketing"\n',
        encoding="utf-8",
    )
    return config


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def test_live_traffic_fills_the_inventory_and_the_cli_reads_it_in_three_formats(
    make_settings: Callable[..., Settings],
    store: Store,
    database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings()
    gateway = _gateway(settings)
    with client_for(gateway) as client:
        # No choice yet: a script already set _hjid (catalogued) and zz_widget_state (nobody knows it).
        first = client.get("/", headers={"cookie": "_hjid=abc; zz_widget_state=1"})
        assert set(set_cookie_map(first)) == {"palette_session"}
        assert "_ga" not in set_cookie_map(client.get("/login"))
        client.cookies.clear()
        second = client.get("/students", headers={"cookie": f"cg_consent={EVERYTHING}; _hjid=abc"})
        assert "_mk_pixel" in set_cookie_map(second)
        client.get("/unknown", headers={"cookie": f"cg_consent={EVERYTHING}"})
    # The app's shutdown wrote the last counts.
    by = {c.name: c for c in read_inventory(store, settings.site_id).cookies}
    assert {"palette_session", "_mk_pixel", "csrftoken", "_ga", "_hjid", "zz_widget_state", "mystery_cookie"} <= set(by)
    pixel = by["_mk_pixel"]
    assert (pixel.set_count, pixel.blocked, pixel.source, pixel.set_by) == (2, 1, "registry", "server")
    assert (by["_ga"].source, by["_ga"].blocked, by["_ga"].lifetime_seconds) == ("catalogue", 1, 63072000)
    assert (by["_hjid"].set_by, by["_hjid"].source, by["_hjid"].before_consent) == ("script", "catalogue", 1)
    assert by["zz_widget_state"].source == "unclassified" and by["mystery_cookie"].source == "unclassified"
    dump = repr(store.query_rows(f"SELECT * FROM {store.table('cookie_inventory')}"))
    assert "t0k3n" not in dump and "GA1.1.42" not in dump and "v-_mk_pixel" not in dump

    config = str(_config(tmp_path, database))
    table = _run(capsys, "cookies", "--config", config)
    assert "_mk_pixel" in table and "csrftoken" in table and "zz_widget_state" in table
    listed = json.loads(_run(capsys, "cookies", "--config", config, "--format", "json", "--unclassified"))
    assert {c["name"] for c in listed["cookies"]} == {"zz_widget_state", "mystery_cookie"}
    lines = _run(capsys, "cookies", "--config", config, "--format", "toml")
    # Paste-ready lines for what the registry lacks: the catalogue's category where it knows the name.
    assert "[cookies]" in lines and '"csrftoken" = "necessary"' in lines and '"zz_widget_state" = ' in lines
    assert "_mk_pixel" not in lines


def test_the_declaration_is_served_in_both_languages_and_as_json(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    gateway = _gateway(settings)
    with client_for(gateway) as client:
        client.get("/", headers={"cookie": f"cg_consent={EVERYTHING}; zz_widget_state=1"})
        client.get("/login", headers={"cookie": f"cg_consent={EVERYTHING}"})
        gateway.runtime.flush_inventory()  # the inventory's minute has not passed: write it now
        as_json = client.get("/_consent/cookies", headers={"accept": "application/json"})
        korean = client.get("/_consent/cookies?lang=ko")
        english = client.get("/_consent/cookies", headers={"accept-language": "en-US,en;q=0.9"})
    assert as_json.status_code == 200 and as_json.headers["content-type"].startswith("application/json")
    categories = {c["name"]: cat["key"] for cat in as_json.json()["categories"] for c in cat["cookies"]}
    assert categories["palette_session"] == "necessary" and categories["cg_consent"] == "necessary"
    assert categories["csrftoken"] == "necessary" and categories["_ga"] == "analytics"
    assert {"_mk_*", "_mk_pixel"} & set(categories)
    # A name only ever sent by browsers, that nobody knows, is not repeated on a public page.
    assert "zz_widget_state" not in json.dumps(as_json.json())
    assert korean.status_code == 200 and '<html lang="ko">' in korean.text and "csrftoken" in korean.text
    assert english.status_code == 200 and '<html lang="en">' in english.text and "_ga" in english.text
    assert "zz_widget_state" not in korean.text + english.text


@pytest.mark.parametrize("path", ["/kid", "/kid-by-call"])
def test_a_marked_child_gets_no_marketing_cookies_events_or_choices(
    make_settings: Callable[..., Settings], path: str
) -> None:
    settings = make_settings()
    gateway = _gateway(settings)
    with client_for(gateway) as client:
        # A visitor who accepted everything, then marked by the app as under 14.
        marked = client.get(path, headers={"cookie": f"cg_consent={EVERYTHING}"})
        cookies = set_cookie_map(marked)
        assert "x-consent-child" not in marked.headers
        assert "_mk_pixel" not in cookies and "_pa_id" in cookies and "cg_child" in cookies
        child = cookies["cg_child"].split(";", 1)[0]
        jar = f"cg_consent={EVERYTHING}; {child}"
        later = client.get("/students", headers={"cookie": jar})
        assert "_mk_pixel" not in set_cookie_map(later) and "_pa_id" in set_cookie_map(later)
        assert client.get("/consent", headers={"cookie": jar}).json()["categories"] == [
            "analytics",
            "necessary",
            "preferences",
        ]
        events = [{"name": "signup"}, {"name": "pageview"}]
        answer = client.post("/_consent/collect", json=events, headers={"cookie": jar, **ORIGIN}).json()
        assert (answer["dropped"], answer["kept"]) == (1, 1)
        adult = client.post("/_consent/collect", json=events, headers={"cookie": f"cg_consent={EVERYTHING}", **ORIGIN})
        assert adult.json()["dropped"] == 0
        # The settings page and the banner's state say why marketing is unavailable.
        page = client.get("/_consent/?locale=ko", headers={"cookie": jar}).text
        assert NOTICE["ko"] in page and 'value="marketing" aria-describedby="cg-desc-marketing" disabled' in page
        client.cookies.clear()
        assert NOTICE["ko"] not in client.get("/_consent/?locale=ko").text
        state = client.get("/_consent/state", headers={"cookie": jar}).json()
        assert state["child_notice"] == NOTICE
        assert {c["key"]: c["refused_for_child"] for c in state["categories_info"]}["marketing"] is True
        # A child's "accept all" does not grant marketing.
        chosen = client.post("/_consent/", json={"action": "accept_all"}, headers={"cookie": jar, **ORIGIN}).json()
        assert "marketing" not in chosen["categories"] and chosen["method"] == "accept_all"


def test_the_first_layer_shown_to_a_marked_child_carries_the_notice(make_settings: Callable[..., Settings]) -> None:
    gateway = _gateway(make_settings())
    with client_for(gateway) as client:
        page = client.get("/kid", headers={"accept-language": "en"})
    assert NOTICE["ko"] in page.text  # the page is Korean (<html lang="ko">), so is its banner
    assert "cg-links" not in page.text.split('id="cg-banner"')[0]


def test_a_guardians_consent_lets_a_child_grant_marketing_and_is_receipted(
    make_settings: Callable[..., Settings], store: Store
) -> None:
    gateway = _gateway(make_settings())
    with client_for(gateway) as client:
        marked = client.get("/kid-guardian")
        child = set_cookie_map(marked)["cg_child"].split(";", 1)[0]
        chosen = client.post("/_consent/", json={"action": "accept_all"}, headers={"cookie": child, **ORIGIN})
        assert chosen.status_code == 200
        body = chosen.json()
        assert "marketing" in body["categories"] and body["method"] == "guardian"
        assert body["receipt"]["method"] == "guardian"
        consent = set_cookie_map(chosen)["cg_consent"].split(";", 1)[0]
        after = client.get("/students", headers={"cookie": f"{consent}; {child}"})
        assert "_mk_pixel" in set_cookie_map(after)
        adult = client.post("/_consent/", json={"action": "accept_all"}, headers={"cookie": "", **ORIGIN}).json()
        flush(client, gateway)
    rows = store.query_rows(
        f"SELECT consent_id, method, child, guardian_categories FROM {store.table('consent_receipts')} ORDER BY ts"
    )
    assert [tuple(r[1:]) for r in rows] == [("guardian", 1, ["marketing"]), ("accept_all", 0, [])]
    assert rows[1][0] == adult["receipt"]["consent_id"] and body["receipt"]["guardian_categories"] == ["marketing"]
    # The audit export carries it too: the regulator sees which consents a legal representative gave.
    today = dt.datetime.now(dt.UTC).date()
    exported = read_receipts(store, "test-site", today - dt.timedelta(days=1), today + dt.timedelta(days=1))
    found = [(r["method"], r["child"], r["guardian_categories"]) for r in exported]
    assert found == [("guardian", 1, ["marketing"]), ("accept_all", 0, [])]


def test_receipts_journaled_before_the_child_columns_are_still_stored(store: Store, settings: Settings) -> None:
    from consent_gateway.pipeline.inserter import RECEIPT_NAMES, current_receipt
    from consent_gateway.pseudonymize import SaltStore
    from consent_gateway.records import ReceiptRecord
    from consent_gateway.rows import RowBuilder

    rows = RowBuilder(settings, SaltStore(settings.keys_dir))
    migrate(store)
    receipt = ReceiptRecord(1.7e9, "test-site", "cid-old", "1.0", ("necessary",), "custom", "h", "ko", "10.0.0.1", "")
    line = rows.receipt_line(receipt)
    old = json.dumps(json.loads(line)[:-2], ensure_ascii=False, separators=(",", ":")).encode()
    assert current_receipt(line) is line
    store.insert_lines("consent_receipts", [current_receipt(old)], RECEIPT_NAMES)
    assert store.query_rows(
        f"SELECT consent_id, child, guardian_categories FROM {store.table('consent_receipts')}"
    ) == [("cid-old", 0, [])]


def test_the_settings_layer_links_the_declaration_and_my_data(make_settings: Callable[..., Settings]) -> None:
    gateway = _gateway(make_settings())
    with client_for(gateway) as client:
        english = client.get("/_consent/?locale=en").text
        korean = client.get("/_consent/?locale=ko").text
        state = client.get("/_consent/state").json()
    assert 'href="/_consent/cookies?lang=en"' in english and 'href="/_consent/my-data"' in english
    assert "사용하는 쿠키 목록" in korean and "내 정보 조회" in korean
    assert state["links"]["en"] == {"cookies": "Cookies this site uses", "my_data": "Your data"}
    assert state["child_notice"] is None


def test_my_data_for_a_consented_and_a_pseudonymised_visitor_and_the_audit_exports(
    make_settings: Callable[..., Settings],
    database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings()
    gateway = _gateway(settings)
    agent = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"}
    with client_for(gateway) as client:
        chosen = client.post("/_consent/", json={"action": "accept_all"}, headers={**agent, **ORIGIN})
        consent_id = chosen.json()["receipt"]["consent_id"]
        jar = {"cookie": set_cookie_map(chosen)["cg_consent"].split(";", 1)[0]}
        client.cookies.clear()
        for _ in range(3):
            client.post("/_consent/collect", json={"name": "pageview"}, headers={**agent, **jar, **ORIGIN})
        # A second browser that made no choice: its analytics are pseudonymised.
        other = {"user-agent": agent["user-agent"].replace("126.0", "125.0")}
        for _ in range(2):
            client.post("/_consent/collect", json={"name": "pageview"}, headers={**other, **ORIGIN})
        flush(client, gateway)
        mine = client.get("/_consent/my-data?format=json", headers={**agent, **jar})
        csv = client.get("/_consent/my-data?format=csv&part=receipts", headers={**agent, **jar})
        anonymous = client.get("/_consent/my-data", headers={**other, "accept": "application/json"})
        html = client.get("/_consent/my-data", headers={**agent, **jar, "accept-language": "ko"})
    assert mine.status_code == 200 and mine.headers["cache-control"] == "no-store"
    data = mine.json()
    # Three page views and the link the choice wrote (it joins the visit's earlier hits to this id).
    assert data["consent_id"] == consent_id and data["events_total"] == 4
    assert sorted(e["kind"] for e in data["events"]) == ["event", "event", "event", "link"]
    assert [r["method"] for r in data["receipts"]] == ["accept_all"]
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv") and "accept_all" in csv.text
    counted = anonymous.json()
    assert counted["consent_id"] is None and counted["events"] == []
    assert sum(d["rows"] for d in counted["pseudonymised"]["by_day"]) == 2
    assert html.status_code == 200 and consent_id not in html.text.split("<h2")[0]

    config = str(_config(tmp_path, database))
    # A range around today: the receipts were written moments ago, whichever side of midnight.
    today = dt.datetime.now(dt.UTC).date()
    start, end = (today - dt.timedelta(days=1)).isoformat(), (today + dt.timedelta(days=1)).isoformat()
    exported = json.loads(
        _run(capsys, "audit", "receipts", "--config", config, "--from", start, "--to", end, "--format", "json")
    )
    assert [(r["consent_id"], r["method"], r["child"]) for r in exported] == [(consent_id, "accept_all", 0)]
    as_csv = _run(capsys, "audit", "receipts", "--config", config, "--from", start, "--to", end)
    assert consent_id in as_csv and as_csv.splitlines()[0].startswith("receipt_id")
    record = json.loads(_run(capsys, "audit", "pseudonymisation", "--config", config, "--format", "json"))
    salts = record["salts"]
    assert [s["pseudonymised_rows"] for s in salts if s["salt_exists"]] == [2], salts


def test_a_flood_of_invented_cookie_names_stays_within_the_inventory_bounds(
    make_settings: Callable[..., Settings],
) -> None:
    gateway = _gateway(make_settings())
    inventory = gateway.runtime.inventory
    # No periodic write during the test: one would empty the counts (a busy machine can take a minute).
    gateway.runtime.inventory_flush_interval = 3600.0
    with client_for(gateway) as client:
        for batch in range(30):
            names = "; ".join(f"zz_{batch}_{n}_{'x' * 40}=1" for n in range(100))
            assert client.get("/consent", headers={"cookie": names}).status_code == 200
        metrics = client.get("/_consent/metrics").text
        # 3,000 names were sent; the inventory holds at most its 2,000 and counts names past that.
        assert inventory.overflow > 0 and inventory.unclassified_count() == 2000
        gauge = next(line for line in metrics.splitlines() if line.startswith("cg_cookie_unclassified_names "))
        assert float(gauge.split()[1]) == 2000
