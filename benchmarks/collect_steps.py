"""Python steps a ``/collect`` request runs, by function: where its event-loop time goes, counted.

    .venv/bin/python benchmarks/collect_steps.py                 # one event a request
    .venv/bin/python benchmarks/collect_steps.py --events 50     # the bench's batches
    .venv/bin/python benchmarks/collect_steps.py --lines         # by line instead of by function

The gateway around the demo site takes the bench's ``/collect`` request (the same headers, body
and consent cookie) straight through ASGI on a standard asyncio loop, without a server. The wait
for the group commit is answered at once (the pipeline's ``submit_events`` is replaced), so what
is counted is the request's own work on the event loop: the route's checks, the body, the consent,
the decisions and the answer. Each bytecode is traced (``sys.settrace`` with opcode events) over
``--requests`` requests after a warm-up, and the functions (or lines) with the most steps are
listed. A step is one bytecode: a count that noise cannot move, not a time; the standard loop's
timer code is counted here, which uvloop runs in C in a real server. Nothing is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import linecache
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 300


def _scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()] + [(b"host", b"127.0.0.1:8000")],
    }  # fmt: skip


async def _count(events: int, requests: int, by_line: bool) -> Counter[tuple[str, int, str]]:
    """Steps by (file, line or first line, function) over ``requests`` requests, after a warm-up."""
    sys.path.insert(0, str(ROOT))
    from loadtests import apps
    from loadtests.servers import collect_headers, event_body

    gateway = apps.gateway()
    gateway.runtime.started = True  # no pipeline: the commit's answer comes at once (below)

    async def committed(_events: Any) -> bool:
        return True

    gateway.runtime.pipeline.submit_events = committed
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def body_of(data: bytes) -> Any:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": data, "more_body": False}

        return receive

    choice = json.dumps({"action": "accept_all"}).encode()
    origin = {"Content-Type": "application/json", "Origin": "http://127.0.0.1:8000"}
    await gateway(_scope("POST", "/_consent/", origin), body_of(choice), send)
    cookie = next(
        value.split(b";")[0].split(b"=", 1)[1].decode()
        for key, value in sent[0]["headers"]
        if key == b"set-cookie" and value.startswith(b"cg_consent=")
    )
    scope = _scope("POST", "/_consent/collect", collect_headers(8000, cookie))
    receive = body_of(event_body("steps", events))
    for _ in range(WARM_UP):
        sent.clear()
        await gateway(dict(scope), receive, send)
    if sent[0]["status"] != 202:
        raise SystemExit(f"/collect answered {sent[0]['status']}: {sent[1].get('body', b'')[:200]!r}")
    counts: Counter[tuple[str, int, str]] = Counter()

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[(code.co_filename, frame.f_lineno if by_line else code.co_firstlineno, code.co_name)] += 1
        return trace

    sys.settrace(trace)
    try:
        for _ in range(requests):
            await gateway(dict(scope), receive, send)
    finally:
        sys.settrace(None)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1, help="events a request (default 1; the bench's batches: 50)")
    parser.add_argument("--requests", type=int, default=200, help="requests traced after the warm-up (default 200)")
    parser.add_argument("--top", type=int, default=25, help="functions (or lines) listed (default 25)")
    parser.add_argument("--lines", action="store_true", help="list lines instead of functions")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cg-collect-steps-") as tmp:
        os.environ.setdefault("CG_LOAD_DATA", tmp)
        counts = asyncio.run(_count(args.events, args.requests, args.lines))
    here = os.path.abspath(__file__)
    mine = {key: n for key, n in counts.items() if os.path.abspath(key[0]) != here}
    total = sum(mine.values()) / args.requests
    gateway = sum(n for key, n in mine.items() if f"{os.sep}consent_gateway{os.sep}" in key[0]) / args.requests
    print(
        f"Python steps a /collect request of {args.events} event(s): {total:,.0f}, "
        f"of them in consent_gateway {gateway:,.0f}; the most:"
    )
    root = str(ROOT) + os.sep
    for (path, line, name), n in Counter(mine).most_common(args.top):
        where = f"{path.replace(root, '')}:{line}:{name}"
        if args.lines:
            where += f"  {linecache.getline(path, line).strip()[:80]}"
        print(f"{n / args.requests:9,.1f}  {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
