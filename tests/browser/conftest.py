"""Browser fixtures: Debian's chromium through Playwright, the demo site behind the gateway on uvicorn.

The server runs in a thread of the test process, so it shares the process's embedded ClickHouse
(chdb allows one data path per process). Each test gets its own server, database and browser
contexts; the browser itself is started once per session.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from consent_gateway import ConsentGateway, Settings
from consent_gateway.demo.site import create_demo_app
from consent_gateway.settings import PolicyVersion
from tests.support import ThreadServer

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
AXE_DIR = Path(os.environ.get("CONSENT_GATEWAY_AXE_DIR", Path.home() / ".cache" / "consent-gateway-axe"))
LAB_NONCE = "bGFiLW5vbmNlLTAxMjM0NTY3"
# A strict policy: scripts only with the nonce, styles only from the site, nothing inline.
LAB_CSP = (
    f"default-src 'self'; script-src 'nonce-{LAB_NONCE}'; style-src 'self'; img-src 'self'; "
    "frame-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)
LAB_PAGE = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Lab</title>
<script src="/_consent/static/tracker.js" nonce="{LAB_NONCE}" defer></script>
</head>
<body>
<main><h1>Lab</h1>
<script type="text/plain" data-consent="analytics" src="/static/analytics-demo.js"></script>
<iframe id="ad" title="Marketing frame" data-consent="marketing" data-src="/lab/frame"></iframe>
</main>
</body>
</html>
"""


async def lab_page(request: Request) -> HTMLResponse:
    """A page with a src-gated script, a gated iframe, the tracker and a strict nonce CSP."""
    return HTMLResponse(LAB_PAGE, headers={"Content-Security-Policy": LAB_CSP, "Cache-Control": "no-store"})


async def lab_frame(request: Request) -> PlainTextResponse:
    return PlainTextResponse("marketing frame")


def demo_with_lab() -> Starlette:
    """The demo site plus /lab and /lab/frame (pages the demo does not have: iframe, src, CSP)."""
    app = create_demo_app()
    app.router.routes[0:0] = [Route("/lab", lab_page), Route("/lab/frame", lab_frame)]
    return app


# The browser tests' name for the one live-server helper (uvicorn in a thread, lifespan on).
LiveServer = ThreadServer


@pytest.fixture
def serve(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveServer]]:
    """Start the demo site (plus /lab) behind the gateway; keyword arguments override settings."""
    servers: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        # The demo has a /privacy page, so its banner links to it (as in demo.toml; the default is none).
        settings = make_settings(**{"policy_url": "/privacy", **overrides})
        server = LiveServer(ConsentGateway(demo_with_lab(), settings)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def site(serve: Callable[..., LiveServer]) -> LiveServer:
    """The demo site behind the gateway with the test settings."""
    return serve()


def upcoming_policy() -> PolicyVersion:
    """A MINOR version announced today that takes effect in two weeks."""
    today = dt.datetime.now(dt.UTC).date()
    return PolicyVersion(1, 1, today + dt.timedelta(days=14), today)


def unavailable(reason: str) -> None:
    """Skip a browser test whose tool is missing, except in CI: .ci/run installs every tool, so a
    missing one there is a broken set-up that must fail the build, not a green run without browsers."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it (.ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless; the tests are skipped where it is not installed.

    Package scope, not session: Playwright's sync API runs an event loop on the main thread while
    it is open, and every later test that runs its own loop (TestClient, asyncio.run) would fail.
    """
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is not installed (sudo apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def new_context(browser: Any) -> Iterator[Callable[..., Any]]:
    """Fresh browser contexts (own cookie jar) for one test; all closed at its end."""
    contexts: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("viewport", {"width": 1280, "height": 800})
        context = browser.new_context(**options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def axe_script() -> Path:
    """axe-core's axe.min.js, installed from the npm registry into a cache outside the repository."""
    target = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
    if target.exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed, so axe-core cannot be fetched for the accessibility audit")
    AXE_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--prefix", str(AXE_DIR), "axe-core@4", "--no-audit", "--no-fund", "--silent"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0 or not target.exists():
        unavailable(f"npm could not install axe-core@4 into {AXE_DIR}: {done.stderr.strip()[-300:]}")
    return target


def screenshot(page: Any, name: str) -> Path:
    """Write a full-page screenshot under test-output/screenshots/ for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), animations="disabled")
    return path
