"""The one live-server helper of the tests and the load tests: real uvicorn on 127.0.0.1, polled until healthy.

- ``Server``: a load-test app (``loadtests.apps:<name>``, or any ``module:factory``) in a uvicorn
  child process, stopped with SIGTERM so the gateway flushes; the load tests and the bench use it.
- ``ThreadServer``: any ASGI app under uvicorn in a thread of this process (browser tests, the
  analytics API), so the test can reach the app's objects.
- ``wait_healthy``: poll a URL until it answers 200, failing early if the server's process died;
  for tests that start a command of their own (``consent-gateway serve``, the image's command).

With them the HTTP the load tests speak to a live gateway: ``request``, ``consent_cookie``,
``health``, ``wait_drained`` (its queue empty), ``flush_barrier`` (everything queued written) and what
a returning visitor sends (``page_headers``, ``collect_headers``, ``event_body``); ``add_load_options``
is the ``--no-wrk`` and ``--loop-cpu`` of the load-test commands. Only the standard library talks
HTTP here, so the load tests need no client package.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HEALTH_PATH = "/_consent/healthz"
# Starts of a server whose port was taken between free_port() and its bind (see Server.start).
BIND_ATTEMPTS = 3
# The factories of loadtests.apps that serve no gateway: the bare demo and two middleware anchors.
BASELINES = ("bare", "passthrough", "session")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    url: str,
    proc: subprocess.Popen[Any] | None = None,
    timeout: float = 60.0,
    *,
    ready: Callable[[bytes], bool] | None = None,
) -> None:
    """Poll ``url`` until it answers 200 (and ``ready(body)`` holds, if given).

    Fails at once if ``proc`` exited, and after ``timeout`` seconds otherwise; the error names the
    URL, the last answer and what to look at.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"wait_healthy needs an http://host:port/path URL, got {url!r}")
    target = parts.path or "/"
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before {url} answered; see its output")
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
        try:
            conn.request("GET", target)
            response = conn.getresponse()
            body = response.read()
            if response.status == 200 and (ready is None or ready(body)):
                return
            last = f"{response.status} {body[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not healthy within {timeout}s (last: {last}); see the server's output")


def writer_running(body: bytes) -> bool:
    """A ``ready`` check for ``wait_healthy``: the gateway's healthz says its writer runs."""
    return bool(json.loads(body).get("writer") is True)


class ThreadServer:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a thread of this process.

    ``lifespan`` is uvicorn's option: "on" starts the gateway's writer with the server, "off" for
    apps the test has already started. Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(self, app: Any, *, lifespan: str = "on") -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, lifespan=lifespan, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url})"

    def start(self, timeout: float = 60.0) -> ThreadServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._sock.close()
                raise RuntimeError(f"uvicorn did not start on {self.url} within {timeout}s; see the log above")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ThreadServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess:
    """A server command in a child process on 127.0.0.1:``port``: polled until healthy, stopped with SIGTERM.

    stdout and stderr go to ``log_path`` (``output()`` reads them back). The probe is ``probe``
    answering 200 and, if given, ``ready(body)`` holding. As a context manager it starts, and at the
    end stops the server if it still runs (killing it if that fails).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        probe: str = HEALTH_PATH,
        ready: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.probe = probe
        self.ready = ready
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_seconds = 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self.port}, pid={self.pid}, log={str(self.log_path)!r})"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        try:
            wait_healthy(self.base + self.probe, self.proc, timeout, ready=self.ready)
        except RuntimeError as exc:
            self.kill()
            # The log's end goes into the error: a test's data directory is gone by the time anyone reads it.
            tail = self.output()[-3000:].rstrip()
            raise RuntimeError(f"{self!r}: {exc} ({self.log_path}); it printed:\n{tail or '(nothing)'}") from None
        return self

    def stop(self, timeout: float = 90.0) -> float:
        """SIGTERM (uvicorn's graceful shutdown: the gateway flushes its pipeline); seconds it took."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self!r} did not stop within {timeout}s and was killed; see {self.log_path}") from None
        self.exit_seconds = time.monotonic() - started
        return self.exit_seconds

    def kill(self) -> None:
        """SIGKILL if it still runs, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()


class Server(ServerProcess):
    """One uvicorn process serving ``loadtests.apps:<app>`` (or a ``module:factory``) on 127.0.0.1, one worker.

    Both variants run with the same uvicorn options (no access log), so the only difference
    measured is the gateway itself.
    """

    def __init__(
        self,
        app: str,
        data_dir: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        command_prefix: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.data_dir = data_dir
        self._chosen_port = port is None  # a port this object picked, which it may pick again
        port = port or free_port()
        target = app if ":" in app else f"loadtests.apps:{app}"
        argv = [
            # A program the server runs under (valgrind for benchmarks/page_instructions.py --server).
            *command_prefix, sys.executable, "-m", "uvicorn", target, "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--no-access-log", "--log-level", "warning", "--lifespan", "on",
            "--timeout-graceful-shutdown", "30", "--app-dir", str(ROOT),
        ]  # fmt: skip
        super().__init__(
            argv,
            port=port,
            log_path=data_dir / f"uvicorn-{app}-{port}.log",
            env={**os.environ, "CG_LOAD_DATA": str(data_dir), "PYTHONPATH": str(ROOT), **(env or {})},
            cwd=ROOT,
            probe=HEALTH_PATH if self.gateway else "/privacy",
        )

    def __repr__(self) -> str:
        return f"Server({self.app!r}, port={self.port}, pid={self.pid})"

    @property
    def gateway(self) -> bool:
        """Whether it serves a gateway (a health route, consent cookies, a queue to drain)."""
        return self.app not in BASELINES

    def start(self, timeout: float = 60.0) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, BIND_ATTEMPTS + 1):
            try:
                super().start(timeout)
                return self
            except RuntimeError as exc:
                # free_port() only found the port free: until the server binds it, any client socket
                # of this machine may take it as its own end. Another free port is taken then.
                taken = "address already in use" in str(exc)
                if not (taken and self._chosen_port) or attempt == BIND_ATTEMPTS:
                    raise
                self._move_to(free_port())
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _move_to(self, port: int) -> None:
        at = self.argv.index("--port") + 1
        self.argv[at] = str(port)
        self.port = port

    def pin_event_loop(self, cpu: int | None) -> None:
        """Keep the server's event loop (its main thread) on ``cpu``, and only that thread.

        On Linux the affinity of a process id is that of its main thread alone. Threads the loop
        starts afterwards inherit the pin; those started before (the gateway's writer and inserter,
        the embedded engine's pools) keep their own affinity. ``None`` leaves the scheduler alone.
        """
        if cpu is None or self.proc is None:
            return
        os.sched_setaffinity(self.proc.pid, {cpu})

    def __enter__(self) -> Server:
        return self.start()


def default_loop_cpu() -> int | None:
    """The CPU the load tests keep each server's event loop on: the highest this process may use.

    A virtual machine's CPUs need not run at the same speed (on the 2-core development VM the same
    Python loop took 0.46 to 0.64 s on one and 0.70 to 0.78 s on the other), so a server whose loop
    landed on the other CPU in one round than in the next measured a different machine. Keeping
    every server's loop on the same CPU compares like with like. None with a single CPU or where
    affinity is not supported.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[-1] if len(cpus) > 1 else None


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """``--no-wrk`` and ``--loop-cpu`` for the load-test commands; check them with ``load_options``."""
    parser.add_argument("--no-wrk", dest="wrk", action="store_false",
                        help="the Python generator for throughput even if wrk exists")
    parser.add_argument("--loop-cpu", type=int, default=default_loop_cpu(),
                        help="CPU each server's event loop is kept on for the page measures, -1 for none "
                             "(default: the highest CPU; a VM's CPUs may differ in speed)")


def load_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``args.loop_cpu`` as the CPU asked for (None for -1), or a usage error if this process may not use it."""
    if args.loop_cpu is None or args.loop_cpu < 0:
        args.loop_cpu = None
        return
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if args.loop_cpu not in allowed:
        parser.error(f"--loop-cpu {args.loop_cpu}: this process may use CPUs {allowed or 'none (no affinity here)'}")


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, list[str]], bytes]:
    """One HTTP request; (status, headers by lower-case name, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        out: dict[str, list[str]] = {}
        for key, value in resp.getheaders():
            out.setdefault(key.lower(), []).append(value)
        return resp.status, out, data
    finally:
        conn.close()


def consent_cookie(port: int, action: str = "accept_all", categories: list[str] | None = None) -> str:
    """A signed consent cookie value from the gateway itself (a same-origin JSON choice)."""
    payload: dict[str, Any] = {"action": action}
    if categories is not None:
        payload["categories"] = categories
    status, headers, body = request(
        port, "POST", "/_consent/", json.dumps(payload).encode(),
        {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{port}", "Host": f"127.0.0.1:{port}"},
    )
    if status != 200:
        raise RuntimeError(f"POST /_consent/ answered {status}: {body[:200]!r}")
    for value in headers.get("set-cookie", []):
        name, _, rest = value.partition("=")
        if name == "cg_consent":
            return rest.split(";", 1)[0]
    raise RuntimeError(f"POST /_consent/ set no cg_consent cookie: {headers.get('set-cookie')}")


def health(port: int) -> dict[str, Any]:
    status, _, body = request(port, "GET", HEALTH_PATH, timeout=10)
    if status != 200:
        raise RuntimeError(f"{HEALTH_PATH} answered {status}: {body[:200]!r}")
    return dict(json.loads(body))


def wait_drained(port: int, timeout: float = 120.0) -> float:
    """Seconds until the gateway's queue is empty, as its /healthz reports the queue length."""
    started = time.monotonic()
    while time.monotonic() < started + timeout and health(port).get("queued", 0):
        time.sleep(0.05)
    return time.monotonic() - started


def flush_barrier(port: int, cookie: str, timeout: float = 120.0) -> None:
    """``GET /_consent/receipts`` with a consent cookie waits until everything queued before it is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = time.monotonic()
        status, _, body = request(port, "GET", "/_consent/receipts", headers={"Cookie": f"cg_consent={cookie}"},
                                  timeout=60)
        if status != 200:
            raise RuntimeError(f"/_consent/receipts answered {status}: {body[:200]!r}")
        if time.monotonic() - started < 9.0:  # the route's own flush wait is 10 s: this one completed
            return


# -- what the load tests send --------------------------------------------------------------------

BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
EVENT_NAME = "portfolio_view"  # analytics category: kept with consent, pseudonymised without


def page_headers(cookie: str) -> dict[str, str]:
    """A returning visitor: consent given, the site's own analytics and marketing ids already set."""
    return {
        "User-Agent": BROWSER_UA,
        "Accept": "text/html,application/xhtml+xml",
        "Accept-Language": "ko-KR,ko;q=0.9,en;q=0.8",
        "Cookie": f"cg_consent={cookie}; _pa_id=0f1e2d3c4b5a69788796a5b4c3d2e1f0; _mk_px=00112233445566778899aabb",
    }


def collect_headers(port: int, cookie: str) -> dict[str, str]:
    """A same-origin ``/collect`` beacon of that visitor."""
    return {
        "Content-Type": "application/json",
        "Origin": f"http://127.0.0.1:{port}",
        "User-Agent": BROWSER_UA,
        "Cookie": f"cg_consent={cookie}",
    }


def event_body(run: str, batch: int) -> bytes:
    """One event (``batch`` 1) or a list of ``batch`` events, tagged with ``props.run``."""
    event = {
        "name": EVENT_NAME,
        "url": "/portfolio?utm_source=newsletter&utm_campaign=spring",
        "referrer": "https://search.example/",
        "props": {"run": run, "work": "sunset-hills"},
    }
    return json.dumps(event if batch == 1 else [event] * batch).encode()
