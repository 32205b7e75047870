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

    .venv/bin/python benchmarks/page_instructions.py --server   # the event loop of real uvicorn servers
    .venv/bin/python benchmarks/page_instructions.py --bare-with-engine   # what the engine's presence costs
    .venv/bin/python benchmarks/page_instructions.py --steps    # where: Python steps a page, by function

The interpreter here has no symbols for callgrind to name, so ``--steps`` says where the count
goes instead: it traces each bytecode a page runs (no valgrind; a few seconds) and lists the
functions whose steps differ most between the gateway and the bare demo.

With ``--server`` each app runs in a real uvicorn server under callgrind (one output per thread),
and the pages come over a socket one after another: the count is the event loop's whole thread,
uvicorn's parsing and writing included, while the gateway's writer, inserter and engine run.

Without it, this counts the Python work on the request path only. What a page costs the gateway's
writer and ClickHouse threads is measured by ``python -m loadtests.threads``; what it costs in
throughput by ``python -m loadtests.bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
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
    serve = _page_server(which)
    serve(WARM_UP + pages)


def child_steps(which: str, pages: int) -> None:
    """Print, as JSON, the Python steps (bytecodes) a page runs in each function, after a warm-up."""
    serve = _page_server(which)
    serve(WARM_UP)
    counts: dict[str, int] = {}

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            key = f"{code.co_filename}:{code.co_firstlineno}:{code.co_name}"
            counts[key] = counts.get(key, 0) + 1
        return trace

    sys.settrace(trace)
    try:
        serve(pages)
    finally:
        sys.settrace(None)
    root = str(ROOT) + os.sep
    print(json.dumps({key.replace(root, ""): n / pages for key, n in counts.items()}))


def _page_server(which: str) -> Any:
    """A function serving n pages of ``which`` one after another (the first one checked)."""
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
    if which in ("gateway", "bare+engine"):
        # The engine is loaded as the gateway loads it, for what loading it does to the process.
        from consent_gateway.store.client import open_store

        engine = open_store(f"chdb://{Path(os.environ['CG_LOAD_DATA']) / 'engine'}", "default")
        engine.command("SELECT 1")
    choice = json.dumps({"action": "accept_all"}).encode()

    async def receive_choice() -> dict[str, Any]:
        return {"type": "http.request", "body": choice, "more_body": False}

    headers = {"Content-Type": "application/json", "Origin": "http://127.0.0.1:8000"}
    # The choice reads its body under a timeout, which needs a running loop; the pages below do not.
    asyncio.run(gateway(scope("POST", "/_consent/", headers), receive_choice, send))
    cookie = next(
        value.split(b";")[0].split(b"=", 1)[1].decode()
        for key, value in sent[0]["headers"]
        if key == b"set-cookie" and value.startswith(b"cg_consent=")
    )
    app = gateway if which == "gateway" else apps.bare()
    which = "bare" if which == "bare+engine" else which

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    page = page_headers(cookie)
    visits = gateway.runtime.pipeline.visits
    checked = False

    def serve(pages: int) -> None:
        nonlocal checked
        for _ in range(pages):
            sent.clear()
            _drive(app(scope("GET", "/", page), receive, send))
            visits.clear()
            if not checked and (
                sent[0]["status"] != 200 or (which == "gateway" and b'id="cg-root"' not in sent[1]["body"])
            ):
                raise SystemExit(f"{which}: GET / did not answer a page with the banner root: {sent[0]['status']}")
            checked = True

    return serve


def _total(out: Path) -> int:
    """The instruction total of one callgrind output file."""
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"callgrind wrote no total to {out}")


def count(valgrind: str, which: str, pages: int, work: Path) -> int:
    """Instructions of the main thread, which serves the pages.

    Only that thread counts: the gateway's other threads (the cookie inventory's flusher, say)
    wake on a clock, so what they run depends on how long the run takes under valgrind, and a
    busy machine would add their work to the difference between two runs.
    """
    out = work / f"{which}-{pages}.out"
    env = {**os.environ, "PYTHONHASHSEED": "0", "CG_LOAD_DATA": str(work / "data")}
    proc = subprocess.run(  # noqa: S603
        [valgrind, "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}", sys.executable,
         __file__, "--child", which, str(pages)],
        env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the {which} run under valgrind failed:\n{proc.stderr[-2000:]}")
    return _total(out.with_name(out.name + "-01"))  # thread 1: the main thread


def count_server(valgrind: str, which: str, pages: int, work: Path) -> int:
    """Instructions of the event loop's thread of a real uvicorn server over ``pages`` pages.

    The load tests' server runs under callgrind with one output per thread; counters are zeroed
    after a warm-up and dumped after the pages, which come one after another on one keep-alive
    connection.
    """
    sys.path.insert(0, str(ROOT))
    from loadtests.bench import page_headers
    from loadtests.servers import Server, consent_cookie

    out = work / f"callgrind-{which}"
    out.mkdir(parents=True)
    callgrind = [valgrind, "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out / 'cg.out'}"]
    server = Server(which, work / f"server-{which}", env={"PYTHONHASHSEED": "0"}, command_prefix=callgrind)
    try:
        server.start(timeout=900)  # the embedded engine starts slowly under valgrind
    except RuntimeError as exc:
        tail = server.log_path.read_text(errors="replace")[-2000:]
        raise SystemExit(f"{exc}:\n{tail}") from None
    try:
        headers = page_headers(consent_cookie(server.port) if which == "gateway" else "none")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)

        def serve(n: int) -> None:
            for _ in range(n):
                conn.request("GET", "/", headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise SystemExit(f"{which}: GET / answered {response.status}")

        serve(WARM_UP)
        subprocess.run(["callgrind_control", "--zero", str(server.pid)], capture_output=True, check=True)  # noqa: S603,S607
        serve(pages)
        subprocess.run(["callgrind_control", "--dump", str(server.pid)], capture_output=True, check=True)  # noqa: S603,S607
    finally:
        server.stop(timeout=600)
    # Dumps are cg.out.<n>-<thread>; thread 01 is the main thread, which runs the event loop.
    return _total(out / "cg.out.1-01")


STEPS_PAGES = 50
STEPS_SHOWN = 40


def print_steps(top: int = STEPS_SHOWN) -> None:
    """The functions whose Python steps a page differ most between the gateway and the bare demo."""
    per_app = {}
    with tempfile.TemporaryDirectory(prefix="cg-steps-") as tmp:
        for which in ("bare", "gateway"):
            env = {**os.environ, "PYTHONHASHSEED": "0", "CG_LOAD_DATA": str(Path(tmp) / which)}
            proc = subprocess.run(  # noqa: S603
                [sys.executable, __file__, "--child-steps", which, str(STEPS_PAGES)],
                env=env, capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                raise SystemExit(f"the {which} step count failed:\n{proc.stderr[-2000:]}")
            per_app[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    bare, gateway = per_app["bare"], per_app["gateway"]
    added = {key: gateway.get(key, 0) - bare.get(key, 0) for key in bare.keys() | gateway.keys()}
    print(f"Python steps a page: bare demo {sum(bare.values()):,.0f}; gateway {sum(gateway.values()):,.0f} "
          f"(+{sum(added.values()):,.0f}); where the gateway's differ most:")
    for key, steps in sorted(added.items(), key=lambda item: -abs(item[1]))[:top]:
        print(f"{steps:+9,.0f}  {key}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("APP", "PAGES"), help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", nargs=2, metavar=("APP", "PAGES"), help=argparse.SUPPRESS)
    parser.add_argument("--steps", action="store_true",
                        help="no valgrind: count the Python steps (bytecodes) a page runs in each function, "
                             "bare and through the gateway, and list the functions that differ most")
    parser.add_argument("--bare-with-engine", action="store_true",
                        help="compare the bare demo with the bare demo in a process that has opened the embedded "
                             "engine (what its presence alone costs a page) instead of with the gateway")
    parser.add_argument("--server", action="store_true",
                        help="count the event loop of real uvicorn servers (with uvicorn's own work, the "
                             "gateway's threads running) instead of the app alone")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    if args.child_steps:
        child_steps(args.child_steps[0], int(args.child_steps[1]))
        return 0
    if args.steps:
        print_steps()
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None or (args.server and shutil.which("callgrind_control") is None):
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    if args.server:
        with tempfile.TemporaryDirectory(prefix="cg-instructions-") as tmp:
            per_page = {}
            for which in ("bare", "gateway"):
                print(f"{which}: a uvicorn server under callgrind, {MANY} pages after {WARM_UP} ...", flush=True)
                per_page[which] = count_server(valgrind, which, MANY, Path(tmp)) / MANY
        bare, gateway = per_page["bare"], per_page["gateway"]
        print(f"instructions a page in the event loop's thread: bare demo {bare:,.0f}; gateway {gateway:,.0f} "
              f"(+{gateway - bare:,.0f}); bare / gateway {bare / gateway:.3f}")
        return 0
    with tempfile.TemporaryDirectory(prefix="cg-instructions-") as tmp:
        work = Path(tmp)
        per_page = {}
        other = "bare+engine" if args.bare_with_engine else "gateway"
        for which in ("bare", other):
            print(f"{which}: {FEW} and {MANY} pages under callgrind ...", flush=True)
            per_page[which] = (count(valgrind, which, MANY, work) - count(valgrind, which, FEW, work)) / (MANY - FEW)
    bare, gateway = per_page["bare"], per_page[other]
    if args.bare_with_engine:
        print(f"instructions a bare demo page: {bare:,.0f}; with the embedded engine opened in its process "
              f"{gateway:,.0f} ({gateway - bare:+,.0f})")
        return 0
    print(f"instructions a page: bare demo {bare:,.0f}; gateway {gateway:,.0f} (+{gateway - bare:,.0f}); "
          f"bare / gateway {bare / gateway:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
