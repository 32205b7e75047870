"""What the banner costs a compressed page and a streamed page: bare app vs gateway, same run.

    .venv/bin/python benchmarks/inject_bench.py [--rounds 6] [--pages 200]

Two pages, each served straight through ASGI in one event loop (no server, no inserts: the gateway's
runtime is marked started and its visit records are dropped):

- ``gzip``: a 60 kB HTML page behind Starlette's GZipMiddleware; the gateway decodes it, puts the
  banner in and encodes it again, flushing per chunk;
- ``stream``: the same page streamed in 16 chunks with no compression.

Rounds alternate bare and wrapped so that the machine's drift (a shared VM moves by tens of
percent from one minute to the next) hits both alike; the ratio printed is wrapped over bare
CPU time per page, per round and as the median of the rounds. Each wrapped response is checked
for exactly one banner before it is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PARAGRAPH = "<p>원생 관리, 출결, 수납 안내와 학부모 공지를 한 곳에서 봅니다. Lorem ipsum dolor sit amet.</p>"
PAGE = (
    '<!doctype html><html lang="ko"><head><meta charset="utf-8"><title>학원</title>'
    '<link rel="stylesheet" href="/site.css"></head><body><main>' + PARAGRAPH * 400 + "</main></body></html>"
).encode()
CHUNKS = 16


def _apps() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from starlette.applications import Starlette
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def page(request: Request) -> Response:
        return Response(PAGE, media_type="text/html")

    async def stream(request: Request) -> Response:
        size = len(PAGE) // CHUNKS + 1

        def parts() -> Iterator[bytes]:
            for at in range(0, len(PAGE), size):
                yield PAGE[at : at + size]

        return StreamingResponse(parts(), media_type="text/html")

    return {
        "gzip": GZipMiddleware(Starlette(routes=[Route("/", page)]), minimum_size=500),
        "stream": Starlette(routes=[Route("/", stream)]),
    }


def _gateway(app: Any, data: Path) -> Any:
    from consent_gateway import ConsentGateway, Settings

    settings = Settings(site_id="bench", data_dir=data, secret_keys=("b" * 32,), pseudonym_key="p" * 32)
    gateway = ConsentGateway(app, settings)
    gateway.runtime.started = True  # no pipeline: records stay in the queue and are dropped
    return gateway


def _scope() -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"accept-encoding", b"gzip, br"), (b"accept-language", b"ko")],
    }  # fmt: skip


def _serve(app: Any, pages: int, gateway: Any | None) -> float:
    """CPU seconds for ``pages`` pages, in one event loop (streaming and GZip need one)."""
    return asyncio.run(_serve_in_loop(app, pages, gateway))


async def _serve_in_loop(app: Any, pages: int, gateway: Any | None) -> float:
    """CPU seconds for ``pages`` pages; the first one is checked."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    requests: list[int] = []

    async def receive() -> dict[str, Any]:
        # The request once; then, as a server would, wait for a disconnect that never comes
        # (StreamingResponse listens for one while it streams).
        if requests:
            await asyncio.Event().wait()
        requests.append(1)
        return {"type": "http.request", "body": b"", "more_body": False}

    started = time.process_time()
    for n in range(pages):
        sent.clear()
        requests.clear()
        await app(_scope(), receive, send)
        if gateway is not None:
            gateway.runtime.pipeline.visits.clear()
        if n == 0:
            _check(sent, wrapped=gateway is not None)
    return time.process_time() - started


def _check(sent: list[dict[str, Any]], wrapped: bool) -> None:
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if (b"content-encoding", b"gzip") in sent[0]["headers"]:
        body = gzip.decompress(body)
    banners = body.count(b'id="cg-root"')
    if banners != (1 if wrapped else 0) or PARAGRAPH.encode() not in body:
        raise SystemExit(f"{'wrapped' if wrapped else 'bare'} page has {banners} banners; expected one when wrapped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="alternated bare/wrapped rounds (default 6)")
    parser.add_argument("--pages", type=int, default=200, help="pages per app and round (default 200)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        apps = _apps()
        for name, app in apps.items():
            gateway = _gateway(app, Path(tmp) / name)
            _serve(app, 20, None)  # warm-up: imports, caches
            _serve(gateway, 20, gateway)
            ratios = []
            for n in range(1, args.rounds + 1):
                bare = _serve(app, args.pages, None)
                wrapped = _serve(gateway, args.pages, gateway)
                ratios.append(wrapped / bare)
                print(
                    f"{name} round {n}: bare {bare / args.pages * 1e6:.0f} µs a page, "
                    f"wrapped {wrapped / args.pages * 1e6:.0f} µs a page, ratio {wrapped / bare:.2f}"
                )
            print(f"{name}: median ratio wrapped/bare {statistics.median(ratios):.2f} over {args.rounds} rounds")


if __name__ == "__main__":
    main()
