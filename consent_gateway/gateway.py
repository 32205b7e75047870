"""ConsentGateway: the gateway routes and the consent middleware around any ASGI app."""

from __future__ import annotations

from .asgi import ASGIApp
from .middleware import ConsentMiddleware
from .routes import ConsentRoutes
from .runtime import GatewayRuntime
from .settings import Settings


class ConsentGateway(ConsentMiddleware):
    """Wrap ``app``: requests under ``settings.prefix`` go to the gateway's routes, all others
    through the consent middleware to the app. The ClickHouse pipeline and the cookie inventory's
    writer open and close in lifespan.

    It is the middleware with the routes in front, in one call: consent, Set-Cookie enforcement,
    the cookie inventory's counts, the banner and the visit record are one pass over a request.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.settings = settings
        runtime = GatewayRuntime(settings)
        self.routes = ConsentRoutes(runtime)
        super().__init__(app, runtime=runtime, routes=self.routes)
        self._owns_runtime = True  # its lifespan starts and stops the runtime

    def __repr__(self) -> str:
        return f"ConsentGateway(site={self.settings.site_id!r}, prefix={self._prefix!r})"
