"""ConsentGateway: the gateway routes and the consent middleware around any ASGI app."""

from __future__ import annotations

from .asgi import ASGIApp, Receive, Scope, Send
from .middleware import ConsentMiddleware, lifespan_with_runtime
from .routes import ConsentRoutes
from .runtime import GatewayRuntime
from .settings import Settings


class ConsentGateway:
    """Wrap ``app``: requests under ``settings.prefix`` go to the gateway's routes, all others
    through ConsentMiddleware to the app. The ClickHouse pipeline and the cookie inventory's writer
    open and close in lifespan."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.settings = settings
        self.runtime = GatewayRuntime(settings)
        self.app = app
        # One pass over a request and its response: consent, Set-Cookie enforcement, the cookie
        # inventory's counts, the banner and the visit record.
        self.middleware = ConsentMiddleware(app, runtime=self.runtime)
        self.routes = ConsentRoutes(self.runtime)
        self._prefix = settings.prefix
        self._prefix_slash = settings.prefix + "/"

    def __repr__(self) -> str:
        return f"ConsentGateway(site={self.settings.site_id!r}, prefix={self._prefix!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path == self._prefix or path.startswith(self._prefix_slash):
                await self.routes(scope, receive, send)
                return
            await self.middleware(scope, receive, send)
            return
        if kind == "lifespan":
            await lifespan_with_runtime(self.app, self.runtime, scope, receive, send)
            return
        if kind == "websocket":  # consent in the scope, Set-Cookie of the handshake filtered
            await self.middleware(scope, receive, send)
            return
        await self.app(scope, receive, send)
