"""ConsentGateway: the gateway routes and the consent middleware around any ASGI app."""

from __future__ import annotations

from .asgi import ASGIApp, Receive, Scope, Send
from .inventory_middleware import CookieInventoryMiddleware
from .middleware import ConsentMiddleware, lifespan_with_runtime
from .routes import ConsentRoutes
from .runtime import GatewayRuntime
from .settings import Settings
from .store import open_store


class ConsentGateway:
    """Wrap ``app``: requests under ``settings.prefix`` go to the gateway's routes, all others
    through ConsentMiddleware and the cookie inventory to the app. The ClickHouse pipeline opens
    and closes in lifespan."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.settings = settings
        self.runtime = GatewayRuntime(settings)
        # Inside the consent middleware the inventory sees the consent enforced and every Set-Cookie
        # before it is filtered; its last counts are written when the app's lifespan shuts down.
        self.app = CookieInventoryMiddleware(
            app,
            self.runtime.inventory,
            open_store=lambda: open_store(settings.clickhouse_dsn, settings.database),
            site=settings.site_id,
            events_months=settings.events_retention_months,
            category_of=self.runtime.cookies.category_of,
        )
        self.middleware = ConsentMiddleware(self.app, runtime=self.runtime)
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
