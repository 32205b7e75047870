"""Instructions a page costs, bare demo vs gateway, counted by valgrind: a measure that noise cannot move.

    .venv/bin/python benchmarks/page_instructions.py            # needs valgrind (Debian: valgrind)

Wall-clock benchmarks on a shared virtual machine move by tens of percent from one minute to the
next; instruction counts do not. Each app serves the same GET / (a returning visitor with a given
consent) straight through ASGI, without a server, an event loop or inserts: the gateway's runtime
is marked started, its visit records are counted and dropped, and the embedded engine is opened
(one ``SELECT 1``) for what loading it does to the process (see ``consent_gateway/store/client.py``:
loaded carelessly, it makes every C ``sprintf`` slower). The interpreter runs under
``valgrind --tool=callgrind`` twice per app, with 100 and 600 pages after the same warm-up; the
difference over 500 pages is the cost of one page, start-up excluded. ``PYTHONHASHSEED`` is fixed,
so a run repeats to the instruction.

This counts the Python work on the request path only. What a page costs the gateway's writer and
ClickHouse threads is measured by ``python -m loadtests.threads``; what it costs in throughput by
``python -m loadtests.bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 200
FEW, MANY = 100, 600


def _drive(coro: Any) -> None:
    """Run a coroutine that never really waits (every await here returns at once)."""
    try:
        while True:
            coro.send(None)
    except StopIteration:
        return


def child(which: str, pages: int) -> None:
    """Serve ``pages`` pages of ``which`` (bare or gateway) in this process, after a warm-up."""
    sys.path.insert(0, str(ROOT))
    from loadtests import apps
    from loadtests.bench import page_headers

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
        return {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()] + [(b"host", b"127.0.0.1:8000")],
        }

    gateway = apps.gateway()
    gateway.runtime.started = True  # no pipeline: records stay in the queue and are dropped below
    if which == "gateway":
        # The engine is loaded as the gateway loads it, for what loading it does to the process.
        from consent_gateway.store.client import open_store

        engine = open_store(f"chdb://{Path(os.environ['CG_LOAD_DATA']) / 'engine'}", "default")
        engine.command("SELECT 1")
    choice = json.dumps({"action": "accept_all"}).encode()

    async def receive_choice() -> dict[str, Any]:
        return {"type": "http.request", "body": choice, "more_body": False}

    headers = {"Content-Type": "application/json", "Origin": "http://127.0.0.1:8000"}
    _drive(gateway(scope("POST", "/_consent/", headers), receive_choice, send))
    cookie = next(
        value.split(b";")[0].split(b"=", 1)[1].decode()
        for key, value in sent[0]["headers"]
        if key == b"set-cookie" and value.startswith(b"cg_consent=")
    )
    app = gateway if which == "gateway" else apps.bare()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    page = page_headers(cookie)
    visits = gateway.runtime.pipeline.visits
    for n in range(WARM_UP + pages):
        sent.clear()
        _drive(app(scope("GET", "/", page), receive, send))
        visits.clear()
        if n == 0 and (sent[0]["status"] != 200 or (which == "gateway" and b'id="cg-root"' not in sent[1]["body"])):
            raise SystemExit(f"{which}: GET / did not answer a page with the banner root: {sent[0]['status']}")


def count(valgrind: str, which: str, pages: int, work: Path) -> int:
    out = work / f"{which}-{pages}.out"
    env = {**os.environ, "PYTHONHASHSEED": "0", "CG_LOAD_DATA": str(work / "data")}
    proc = subprocess.run(  # noqa: S603
        [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
         "--child", which, str(pages)],
        env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the {which} run under valgrind failed:\n{proc.stderr[-2000:]}")
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"callgrind wrote no total to {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("APP", "PAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cg-instructions-") as tmp:
        work = Path(tmp)
        per_page = {}
        for which in ("bare", "gateway"):
            print(f"{which}: {FEW} and {MANY} pages under callgrind ...", flush=True)
            per_page[which] = (count(valgrind, which, MANY, work) - count(valgrind, which, FEW, work)) / (MANY - FEW)
    bare, gateway = per_page["bare"], per_page["gateway"]
    print(f"instructions a page: bare demo {bare:,.0f}; gateway {gateway:,.0f} (+{gateway - bare:,.0f}); "
          f"bare / gateway {bare / gateway:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
