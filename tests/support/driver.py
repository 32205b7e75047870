"""The in-process driver: the gateway called without a socket.

- ``Driver`` runs requests against one app on one event loop (the gateway's runtime lives on it),
  with hand-built scopes, so thousands of hostile requests run in seconds; every byte the gateway
  reads comes from the scope and the receive channel built here.
- ``run_asgi`` is one call of ``Driver`` with a scope made by hand (``http_scope``): every message
  the app sent, in order, then the runtime stopped.
- ``client_for`` is Starlette's TestClient (lifespan in ``with``, so the writer starts and stops).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.testclient import TestClient

from consent_gateway import ConsentGateway

Header = tuple[bytes, bytes]


@dataclass(slots=True)
class Reply:
    """One response: status, raw headers in order, body."""

    status: int
    headers: list[Header] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> list[bytes]:
        key = name.lower().encode("latin-1")
        return [v for k, v in self.headers if k.lower() == key]

    def first(self, name: str) -> str | None:
        found = self.header(name)
        return found[0].decode("latin-1") if found else None


class Driver:
    """Runs requests against one app on one event loop (the gateway's runtime lives on it)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        """Stop the gateway's runtime (if the app has one) on the driver's loop, then close the loop."""
        if self.loop.is_closed():
            return
        runtime = getattr(self.app, "runtime", None)
        if runtime is not None:
            self.loop.run_until_complete(runtime.stop())
        self.loop.close()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[Header] = (),
        body: bytes = b"",
        query: bytes = b"",
        client: tuple[str, int] | None = ("198.51.100.23", 50123),
        chunk: int = 65536,
        content_length: bool = True,
    ) -> Reply:
        return self.run(
            self.arequest(
                method,
                path,
                headers=headers,
                body=body,
                query=query,
                client=client,
                chunk=chunk,
                content_length=content_length,
            )
        )

    async def arequest(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[Header] = (),
        body: bytes = b"",
        query: bytes = b"",
        client: tuple[str, int] | None = ("198.51.100.23", 50123),
        chunk: int = 65536,
        content_length: bool = True,
    ) -> Reply:
        hdrs = [(k.lower(), v) for k, v in headers]
        if not any(k == b"host" for k, _ in hdrs):
            hdrs.insert(0, (b"host", b"site.example"))
        if body and content_length and not any(k == b"content-length" for k, _ in hdrs):
            hdrs.append((b"content-length", str(len(body)).encode()))
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode("utf-8", "surrogateescape"),
            "query_string": query,
            "root_path": "",
            "headers": hdrs,
            "client": client,
            "server": ("site.example", 80),
        }
        pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
        reply = Reply(0)
        for message in await self.acall(scope, pieces):
            if message["type"] == "http.response.start":
                reply.status = message["status"]
                reply.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                reply.body += message.get("body", b"")
        return reply

    async def acall(self, scope: dict[str, Any], pieces: Sequence[bytes] = (b"",)) -> list[dict[str, Any]]:
        """Call the app once with ``scope`` and the body in ``pieces``; every message it sent, in order."""
        sent: list[dict[str, Any]] = []
        given = 0

        async def receive() -> dict[str, Any]:
            nonlocal given
            if given < len(pieces):
                given += 1
                return {"type": "http.request", "body": pieces[given - 1], "more_body": given < len(pieces)}
            await asyncio.sleep(3600)  # the client stays connected until the response is done
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(dict(message))

        await self.app(scope, receive, send)
        return sent


def run_asgi(app: Any, scope: dict[str, Any], body: bytes = b"") -> list[dict[str, Any]]:
    """Call an ASGI app with a hand-made scope; the messages it sent, in order (the runtime is stopped after)."""
    driver = Driver(app)
    try:
        return list(driver.run(driver.acall(scope, [body])))
    finally:
        driver.close()


def http_scope(
    path: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[bytes, bytes]] = (),
    client: tuple[str, int] = ("203.0.113.7", 40000),
    query: bytes = b"",
) -> dict[str, Any]:
    """An HTTP scope as a server would build it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": client,
        "server": ("testserver", 80),
    }


def json_body(messages: list[dict[str, Any]]) -> Any:
    return json.loads(b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"))


def client_for(gateway: ConsentGateway, **kwargs: Any) -> TestClient:
    """A TestClient on the gateway; use it in ``with`` so lifespan starts and stops the writer."""
    return TestClient(gateway, base_url="http://testserver", follow_redirects=False, **kwargs)
