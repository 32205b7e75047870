"""Start and stop uvicorn servers of the load-test apps, and talk to them with the standard library."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One uvicorn process serving ``loadtests.apps:<app>`` (or a ``module:factory``) on 127.0.0.1, one worker.

    Both variants run with the same uvicorn options (no access log), so the only difference
    measured is the gateway itself.
    """

    def __init__(
        self, app: str, data_dir: Path, *, port: int | None = None, env: dict[str, str] | None = None,
        command_prefix: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = env or {}
        # A program the server runs under (valgrind for benchmarks/page_instructions.py --server).
        self.command_prefix = list(command_prefix)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"uvicorn-{app}-{self.port}.log"
        self.exit_seconds = 0.0

    def __repr__(self) -> str:
        return f"Server({self.app!r}, port={self.port}, pid={self.pid})"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, timeout: float = 60.0) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CG_LOAD_DATA": str(self.data_dir), "PYTHONPATH": str(ROOT), **self.env}
        target = self.app if ":" in self.app else f"loadtests.apps:{self.app}"
        cmd = [
            *self.command_prefix, sys.executable, "-m", "uvicorn", target, "--factory",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--no-access-log", "--log-level", "warning", "--lifespan", "on",
            "--timeout-graceful-shutdown", "30", "--app-dir", str(ROOT),
        ]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)  # noqa: S603
        log.close()
        deadline = time.monotonic() + timeout
        probe = "/_consent/healthz" if self.app != "bare" else "/privacy"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self!r} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status, _, _ = request(self.port, "GET", probe, timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self!r} did not answer {probe} within {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 90.0) -> float:
        """SIGTERM (uvicorn's graceful shutdown: the gateway flushes its pipeline); seconds it took."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError(f"{self!r} did not stop within {timeout}s and was killed; see {self.log_path}") from None
        self.exit_seconds = time.monotonic() - started
        return self.exit_seconds

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

    def __exit__(self, *exc: object) -> None:
        self.stop()


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


def add_loop_cpu_option(parser: argparse.ArgumentParser) -> None:
    """``--loop-cpu`` for the load-test commands; read it back with ``loop_cpu_option``."""
    parser.add_argument("--loop-cpu", type=int, default=default_loop_cpu(),
                        help="CPU each server's event loop is kept on for the page measures, -1 for none "
                             "(default: the highest CPU; a VM's CPUs may differ in speed)")


def loop_cpu_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int | None:
    """The CPU ``--loop-cpu`` asked for (None for -1), or a usage error if this process may not use it."""
    if args.loop_cpu is None or args.loop_cpu < 0:
        return None
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if args.loop_cpu not in allowed:
        parser.error(f"--loop-cpu {args.loop_cpu}: this process may use CPUs {allowed or 'none (no affinity here)'}")
    return int(args.loop_cpu)


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
    status, _, body = request(port, "GET", "/_consent/healthz", timeout=10)
    if status != 200:
        raise RuntimeError(f"/_consent/healthz answered {status}: {body[:200]!r}")
    return dict(json.loads(body))
