"""Everything the tests share, in one package.

- ``site``: the small wrapped site and consent cookies (``site_app``, ``sign_cookie``, ...);
- ``driver``: the in-process driver (``Driver`` and its ``Reply``; ``run_asgi`` with ``http_scope`` and
  ``json_body`` for one hand-made call; ``client_for``, Starlette's TestClient, for lifespan);
- ``flush``: waiting for the pipeline (``flush``, ``wait_for_count``, ``wait_until``);
- the live-server helper, shared with the load tests (``loadtests/servers.py``): ``ThreadServer``
  (uvicorn in a thread), ``ServerProcess`` (a command of the test's own, such as ``consent-gateway
  serve``, in a child process), ``Server`` (a load-test app under uvicorn), and ``wait_healthy`` and
  ``free_port`` for tests that start and read a process themselves.

Nothing here fakes ClickHouse: gateways under test write to the embedded engine of
``tests/conftest.py`` and tests read it back through the ``store`` fixture.
"""

from __future__ import annotations

from loadtests.servers import (
    HEALTH_PATH,
    Server,
    ServerProcess,
    ThreadServer,
    free_port,
    wait_healthy,
    writer_running,
)

from .driver import Driver, Reply, client_for, http_scope, json_body, run_asgi
from .flush import flush, wait_for_count, wait_until
from .site import PAGE, SITE_COOKIES, SSE_CHUNKS, set_cookie_map, sign_cookie, site_app

__all__ = [
    "HEALTH_PATH",
    "PAGE",
    "SITE_COOKIES",
    "SSE_CHUNKS",
    "Driver",
    "Reply",
    "Server",
    "ServerProcess",
    "ThreadServer",
    "client_for",
    "flush",
    "free_port",
    "http_scope",
    "json_body",
    "run_asgi",
    "set_cookie_map",
    "sign_cookie",
    "site_app",
    "wait_for_count",
    "wait_healthy",
    "wait_until",
    "writer_running",
]
