"""The real command on a real socket: ``consent-gateway demo`` and ``serve`` under uvicorn, then SIGTERM.

Each server runs in its own process with its own data directory, so it opens its own embedded
ClickHouse (the test process keeps its single chdb path).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PSEUDONYM_KEY, SECRET
from tests.support import ServerProcess, free_port, writer_running

COMMAND = [sys.executable, "-m", "consent_gateway.cli"]


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_GATEWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _assert_clean_exit(code: int, output: str) -> None:
    # uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is a clean stop too.
    assert code in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output, output
    assert "Traceback" not in output and "did not finish" not in output, output


def _query(data_dir: Path, sql: str) -> str:
    """Run one query on a stopped server's embedded ClickHouse, in a process of its own."""
    script = (
        "import sys\n"
        "from consent_gateway.store import open_store\n"
        "store = open_store(sys.argv[1], 'consent_gateway')\n"
        "print(repr(store.query_rows(sys.argv[2])))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"chdb://{data_dir / 'clickhouse'}", sql],
        capture_output=True,
        text=True,
        timeout=120,
        env=_environment(),
        check=True,
    )
    return done.stdout.strip()


def _serve(args: list[str], cwd: Path) -> ServerProcess:
    """``consent-gateway ARGS --port PORT`` in ``cwd``, healthy once its writer runs (use in ``with``)."""
    port = free_port()
    argv = [*COMMAND, *args, "--port", str(port)]
    log = cwd / f"server-{port}.log"
    return ServerProcess(argv, port=port, log_path=log, env=_environment(), cwd=cwd, ready=writer_running)


def _stop(server: ServerProcess) -> tuple[int, str]:
    """SIGTERM, then the exit code and everything the server printed."""
    server.stop(60)
    assert server.returncode is not None
    return server.returncode, server.output()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[ServerProcess]:
    """``consent-gateway demo`` on a free port, its data under ``tmp_path/data`` (the last argument)."""
    port = free_port()
    argv = [*COMMAND, "demo", "--host", "127.0.0.1", "--port", str(port), "--data", str(tmp_path / "data")]
    server = ServerProcess(
        argv, port=port, log_path=tmp_path / "demo.log", env=_environment(), cwd=tmp_path, ready=writer_running
    )
    with server:
        yield server


def test_demo_serves_filters_records_and_stops_cleanly(demo: ServerProcess) -> None:
    base = demo.base
    with httpx.Client(base_url=base, follow_redirects=False, timeout=10) as client:
        first = client.get("/")
        assert first.status_code == 200
        assert 'id="cg-banner"' in first.text
        assert "/_consent/static/banner.js" in first.text
        assert first.headers["vary"].lower().count("cookie") == 1
        first_names = {h.split("=", 1)[0] for h in first.headers.get_list("set-cookie")}
        assert "_pa_id" not in first_names and not any(n.startswith("_mk_") for n in first_names)

        chosen = client.post(
            "/_consent/",
            data={"action": "accept_all", "return_to": "/students"},
            headers={"Origin": base},
        )
        assert chosen.status_code == 303 and chosen.headers["location"] == "/students"
        assert "cg_consent" in client.cookies

        after = client.get("/students")
        assert after.status_code == 200 and 'id="cg-banner"' not in after.text
        names = {h.split("=", 1)[0] for h in after.headers.get_list("set-cookie")}
        assert "_pa_id" in names and any(n.startswith("_mk_") for n in names)

        refused = client.post("/_consent/", json={"action": "accept_all"}, headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403

        receipts = client.get("/_consent/receipts").json()["receipts"]
        assert [r["method"] for r in receipts] == ["accept_all"]

    code, output = _stop(demo)
    _assert_clean_exit(code, output)
    assert f"{base}/" in output and f"{base}/_consent/" in output  # the URLs printed at start
    data = Path(demo.argv[-1])
    assert (data / "keys").is_dir()  # keys made on first run, under --data
    # What the server wrote before it stopped: both page visits, the receipt, no raw address.
    visits = _query(
        data, "SELECT path, identified, ip_prefix FROM consent_gateway.events WHERE kind = 'visit' ORDER BY ts"
    )
    assert visits == "[('/', 0, '127.0.0.0/24'), ('/students', 1, '127.0.0.0/24')]"
    # the choice granted analytics: one link row, identified, for the page it was made on
    links = _query(data, "SELECT path, identified FROM consent_gateway.events WHERE kind = 'link'")
    assert links == "[('/students', 1)]"
    assert _query(data, "SELECT method FROM consent_gateway.consent_receipts") == "[('accept_all',)]"


SITE_MODULE = """
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route


async def home(request):
    response = HTMLResponse("<html><head></head><body>" + request.scope["consent"].status + "</body></html>")
    response.set_cookie("_pa_id", "x")
    response.set_cookie("palette_session", "s")
    return response


app = Starlette(routes=[Route("/", home)])
"""


def test_serve_wraps_any_asgi_app(tmp_path: Path) -> None:
    (tmp_path / "mysite.py").write_text(SITE_MODULE, encoding="utf-8")
    config = tmp_path / "consent.toml"
    config.write_text(
        f'site_id = "mysite"\ndata_dir = "data"\nsecret_keys = ["{SECRET}"]\npseudonym_key = "{PSEUDONYM_KEY}"\n'
        '[cookie]\nsecure = false\n[cookies]\npalette_session = "necessary"\n_pa_id = "analytics"\n',
        encoding="utf-8",
    )
    with _serve(["serve", "mysite:app", "--config", str(config)], cwd=tmp_path) as server:
        base = server.base
        response = httpx.get(f"{base}/", timeout=10)
        assert "unset" in response.text and 'id="cg-root"' in response.text
        assert [h.split("=", 1)[0] for h in response.headers.get_list("set-cookie")] == ["palette_session"]
        code, output = _stop(server)
    _assert_clean_exit(code, output)
    assert (tmp_path / "data" / "clickhouse").is_dir()  # data_dir relative to the config file


def test_init_then_the_printed_serve_command_starts_on_the_first_try(tmp_path: Path) -> None:
    """`init` in a fresh folder, then its printed serve line as printed: up, wrapped, and trusting no proxy."""
    site = tmp_path / "mysite-project"
    site.mkdir()
    (site / "mysite.py").write_text(SITE_MODULE, encoding="utf-8")
    made = subprocess.run(
        [*COMMAND, "init", "--app", "mysite:app", "--cookie", "palette_session,_pa_id"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_environment(),
        cwd=site,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    serve_line = next(line.strip() for line in made.stdout.splitlines() if "consent-gateway serve " in line)
    argv = serve_line.split()
    assert argv[:3] == [".venv/bin/consent-gateway", "serve", "mysite:app"]
    # no key variables: the key file beside consent.toml supplies them
    with _serve([*argv[1:]], cwd=site) as server:
        base = server.base
        response = httpx.get(f"{base}/", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
        assert response.status_code == 200
        assert "unset" in response.text and response.text.count('id="cg-root"') == 1
        code, output = _stop(server)
    _assert_clean_exit(code, output)
    assert f"data: {site / 'data'}" in output
    assert "proxy trust: none" in output
    # uvicorn's own proxy handling is off: the forwarded address from loopback was not believed.
    stored = _query(site / "data", "SELECT DISTINCT ip_prefix FROM consent_gateway.events")
    assert stored == "[('127.0.0.0/24',)]"


GATED_MODULE = """
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from consent_gateway import ConsentGateway, Settings


async def home(request):
    response = HTMLResponse("<html><head></head><body>" + request.scope["consent"].status + "</body></html>")
    response.headers["X-Request-ID"] = "app-made-id-0042"
    return response


app = ConsentGateway(
    Starlette(routes=[Route("/", home)]),
    Settings(
        site_id="gated",
        data_dir=Path(__file__).parent / "data",
        secret_keys=("SECRET_VALUE",),
        pseudonym_key="PSEUDONYM_VALUE",
        cookie_secure=False,
    ),
)
"""


def test_serve_keeps_an_app_that_already_runs_the_gateway(tmp_path: Path) -> None:
    """No second wrapping (one banner), a log line that says so, and the app's own X-Request-ID."""
    module = GATED_MODULE.replace("SECRET_VALUE", SECRET).replace("PSEUDONYM_VALUE", PSEUDONYM_KEY)
    (tmp_path / "gatedsite.py").write_text(module, encoding="utf-8")
    # no keys given to serve itself
    with _serve(["serve", "gatedsite:app"], cwd=tmp_path) as server:
        base = server.base
        response = httpx.get(f"{base}/", headers={"X-Request-ID": "proxy-id-00000001"}, timeout=10)
        assert response.status_code == 200
        assert response.text.count('id="cg-root"') == 1
        assert response.headers.get_list("x-request-id") == ["app-made-id-0042"]
        code, output = _stop(server)
    _assert_clean_exit(code, output)
    assert "already runs the consent gateway" in output and "not wrapped a second time" in output
    assert f"data: {tmp_path / 'data'}" in output
