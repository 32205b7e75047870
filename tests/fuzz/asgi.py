"""Calling an ASGI app in-process with hand-built scopes, so that thousands of hostile requests
run in seconds. Real sockets are not needed for these properties: every byte the gateway reads
comes from the scope and the receive channel built here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
        sent = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent < len(pieces):
                sent += 1
                return {"type": "http.request", "body": pieces[sent - 1], "more_body": sent < len(pieces)}
            await asyncio.sleep(3600)  # the client stays connected until the response is done
            return {"type": "http.disconnect"}

        reply = Reply(0)

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                reply.status = message["status"]
                reply.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                reply.body += message.get("body", b"")

        await self.app(scope, receive, send)
        return reply
