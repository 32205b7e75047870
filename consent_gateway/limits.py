"""Answers for requests refused before anything else reads them: headers over the size cap (431)
and a client over its page-view allowance (429).

Both are checked at the very top of the gateway's handling, so a refused request costs one pass
over its header list and never reaches a cache, the wrapped app or the pipeline.
"""

from __future__ import annotations

from itertools import chain

from .asgi import Scope, Send
from .ratelimit import RateLimited


def header_bytes(scope: Scope) -> int:
    """The size of the request's header block as the gateway holds it: names and values, plus the
    four bytes of ": " and CRLF a header line costs on the wire."""
    headers = scope.get("headers", ())
    if type(headers) is not list:
        headers = list(headers)
    # Counted in C (every request passes here): the lengths of all names and values, 4 a line.
    return sum(map(len, chain.from_iterable(headers))) + 4 * len(headers)


async def send_headers_too_large(scope: Scope, send: Send, size: int, limit: int) -> None:
    """431 for a request whose headers are ``size`` bytes, over ``limit`` (``max_header_bytes``)."""
    message = (
        f"the request headers are {size} bytes, over the limit of {limit} (max_header_bytes); "
        "send fewer or smaller cookies and headers"
    )
    await _send_text(scope, send, 431, message, [])


async def send_rate_limited(scope: Scope, send: Send, exc: RateLimited) -> None:
    """429 with Retry-After for a client over its allowance."""
    await _send_text(scope, send, 429, str(exc), [(b"retry-after", str(exc.retry_after).encode("ascii"))])


async def _send_text(scope: Scope, send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = message.encode("utf-8") + b"\n"
    if scope["type"] == "websocket":
        # Closing before accepting makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})
