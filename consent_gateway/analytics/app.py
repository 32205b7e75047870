"""The analytics ASGI app: token-authenticated API under ``/api/v1/`` and the dashboard at ``/``."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..asgi import ASGIApp, Receive, Scope, Send
from ..assets import static_dir
from ..errors import RequestError, StoreError
from ..settings import Settings
from ..store import Store, migrate, open_store
from .cookies import CookieAnswer, CookieQuery, cookie_answer
from .params import ENDPOINT_PARAMS, Query
from .queries import Analytics, Result
from .tokens import SHARE_ENDPOINTS, TokenRecord, TokenStore

if TYPE_CHECKING:
    from ..inventory import Classifier

logger = logging.getLogger("consent_gateway.analytics")

DASHBOARD_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


class AnalyticsService:
    """The store, the token file and the query runner of one analytics app; opened on first use."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.tokens = TokenStore(settings.tokens_path)
        self._store = store
        self._analytics: Analytics | None = None if store is None else Analytics(store, settings)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AnalyticsService(site={self.settings.site_id!r}, tokens={self.tokens!r})"

    def analytics(self) -> Analytics:
        with self._lock:
            if self._analytics is None:
                s = self.settings
                if s.embedded:
                    s.data_dir.mkdir(parents=True, exist_ok=True)
                store = open_store(s.clickhouse_dsn, s.database)
                if s.migrate_at_start:
                    migrate(store, events_months=s.events_retention_months, receipts_years=s.receipts_retention_years)
                self._store = store
                self._analytics = Analytics(store, s)
            return self._analytics

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
            self._store, self._analytics = None, None


def _error(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers={**_SECURITY_HEADERS, **(headers or {})})


def _bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _unauthorised(endpoint: str) -> JSONResponse:
    logger.warning("analytics %s refused: missing, unknown, revoked or expired token", endpoint[:40])
    return _error(
        401,
        "a valid API token is required: send 'Authorization: Bearer <token>' "
        "(`consent-gateway keys create NAME` makes one)",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _check_site(settings: Settings, record: TokenRecord, site: str) -> None:
    """403 unless ``record`` may read ``site``."""
    if not record.may_read(site, settings.site_id):
        raise RequestError(
            f"token {record.name!r} may not read site {site!r}; it reads "
            f"{', '.join(record.readable_sites(settings.site_id))} "
            "(`consent-gateway keys create NAME --site SITE` makes a token for another site)",
            field="site",
            status=403,
        )


def _authorised_query(settings: Settings, record: TokenRecord, endpoint: str, request: Request) -> Query:
    """The query ``record`` asks for at ``endpoint``; ``RequestError`` (403/404/422) when it may not."""
    if not record.may_call(endpoint):
        raise RequestError(
            f"token {record.name!r} is a read-only shared link: it reads the dashboard's figures "
            f"({', '.join(sorted(SHARE_ENDPOINTS))}), not {endpoint[:40]!r}; use an API token",
            status=403,
        )
    if endpoint not in ENDPOINT_PARAMS:
        raise RequestError(f"no endpoint {endpoint[:40]!r}; use one of {', '.join(ENDPOINT_PARAMS)}", status=404)
    query = Query.from_items(endpoint, request.query_params.multi_items(), default_site=settings.site_id)
    _check_site(settings, record, query.site)
    return query


def _authorised_cookie_query(settings: Settings, record: TokenRecord, request: Request) -> CookieQuery:
    """The cookie-inventory query ``record`` asks for; ``RequestError`` (403/400) when it may not.

    The inventory is the site's own configuration facts (its unclassified names, scripts that set
    cookies before consent): for the site's operators, so a shared link (kind "share") is refused.
    """
    if not record.may_call("cookies"):
        raise RequestError(
            f"token {record.name!r} is a read-only shared link: the cookie inventory is for the site's "
            "operators, not shared dashboards; use an API token (`consent-gateway keys create NAME`)",
            status=403,
        )
    query = CookieQuery.from_items(request.query_params.multi_items(), default_site=settings.site_id)
    _check_site(settings, record, query.site)
    return query


def _cookie_response(query: CookieQuery, answer: CookieAnswer) -> Response:
    if query.format == "csv":
        return Response(
            answer.as_csv(),
            media_type="text/csv; charset=utf-8",
            headers={
                **_SECURITY_HEADERS,
                "Content-Disposition": f'attachment; filename="cookies-{query.site}-{query.days}d.csv"',
            },
        )
    return JSONResponse(answer.as_json(), headers=_SECURITY_HEADERS)


def _result_response(endpoint: str, query: Query, result: Result) -> Response:
    if query.format == "csv":
        filename = f"{endpoint}-{query.site}-{query.start.isoformat()}-{query.end.isoformat()}.csv"
        return Response(
            result.as_csv(),
            media_type="text/csv; charset=utf-8",
            headers={**_SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return JSONResponse(result.as_json(), headers=_SECURITY_HEADERS)


class _Handlers:
    """The analytics app's request handlers, over one service."""

    def __init__(self, settings: Settings, service: AnalyticsService, owns_store: bool) -> None:
        self.settings = settings
        self.service = service
        self.owns_store = owns_store
        self.static = static_dir()
        self._classifier: Classifier | None = None

    def site_classifier(self, site: str) -> Classifier | None:
        """Today's registry and catalogue for the configured site; other sites keep the sources
        stored with their rows."""
        if site != self.settings.site_id:
            return None
        if self._classifier is None:
            from ..inventory import Classifier, installed_catalogue

            self._classifier = Classifier.from_settings(self.settings, installed_catalogue())
        return self._classifier

    def authenticate(self, request: Request) -> TokenRecord | None:
        token = _bearer_token(request)
        return None if token is None else self.service.tokens.verify(token)

    async def api(self, request: Request) -> Response:
        endpoint: str = request.path_params["endpoint"]
        record = await asyncio.to_thread(self.authenticate, request)
        if record is None:
            return _unauthorised(endpoint)
        param_names = sorted(set(request.query_params.keys()))
        status = 500  # until the query has run: an unexpected error is logged as such
        try:
            query = _authorised_query(self.settings, record, endpoint, request)
            result = await asyncio.to_thread(lambda: self.service.analytics().run(query))
            status = 200
        except RequestError as exc:
            status = exc.status
            return _error(exc.status, exc.message, exc.field)
        except StoreError as exc:
            status = 503
            logger.error("analytics %s failed: %s", endpoint, exc)
            # The details (server address, user, engine message) go to the log, not to the client.
            return _error(503, "the analytics store is unavailable; retry in a minute (the server log has the cause)")
        finally:
            logger.info(
                "analytics %s token=%s status=%d params=%s",
                endpoint[:40],
                record.name,
                status,
                ",".join(p[:40] for p in param_names),
            )
        return _result_response(endpoint, query, result)

    async def cookies_api(self, request: Request) -> Response:
        """GET /api/v1/cookies: the live cookie inventory of the token's site (JSON or CSV)."""
        record = await asyncio.to_thread(self.authenticate, request)
        if record is None:
            return _unauthorised("cookies")
        param_names = sorted(set(request.query_params.keys()))
        status = 500
        try:
            query = _authorised_cookie_query(self.settings, record, request)
            classifier = self.site_classifier(query.site)
            answer = await asyncio.to_thread(lambda: cookie_answer(self.service.analytics().store, classifier, query))
            status = 200
        except RequestError as exc:
            status = exc.status
            return _error(exc.status, exc.message, exc.field)
        except StoreError as exc:
            status = 503
            logger.error("analytics cookies failed: %s", exc)
            return _error(503, "the analytics store is unavailable; retry in a minute (the server log has the cause)")
        finally:
            names = ",".join(p[:40] for p in param_names)
            logger.info("analytics cookies token=%s status=%d params=%s", record.name, status, names)
        return _cookie_response(query, answer)

    async def dashboard(self, request: Request) -> Response:
        if not request.url.path.endswith("/"):
            return RedirectResponse(request.url.path + "/", status_code=308)
        return FileResponse(
            self.static / "dashboard.html", media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS
        )

    async def static_file(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        if name not in DASHBOARD_FILES:
            return _error(404, f"no static file {name[:64]!r}")
        return FileResponse(self.static / name, media_type=DASHBOARD_FILES[name], headers=_SECURITY_HEADERS)

    async def config(self, request: Request) -> Response:
        # Public facts the dashboard needs before a token is entered; nothing from the data.
        settings = self.settings
        return JSONResponse(
            {
                "site": settings.site_id,
                "k": settings.k_anonymity,
                "categories": list(settings.category_keys),
                "locale": settings.default_locale,
                "today": dt.datetime.now(dt.UTC).date().isoformat(),
            },
            headers=_SECURITY_HEADERS,
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await asyncio.to_thread(self.service.analytics)
        except StoreError as exc:
            # Keep serving: the API answers 503 with the reason until the store can be opened.
            logger.error("analytics store not available at start: %s", exc)
        yield
        if self.owns_store:
            self.service.close()


def create_analytics_app(settings: Settings, *, store: Store | None = None) -> Starlette:
    """The analytics app for ``settings``; serve it on its own port or mount it on purpose."""
    service = AnalyticsService(settings, store)
    handlers = _Handlers(settings, service, owns_store=store is None)
    app = Starlette(
        routes=[
            Route("/", handlers.dashboard),
            Route("/config", handlers.config),
            Route("/healthz", handlers.healthz),
            Route("/static/{name}", handlers.static_file),
            Route("/api/v1/cookies", handlers.cookies_api),
            Route("/api/v1/{endpoint}", handlers.api),
        ],
        lifespan=handlers.lifespan,
    )
    app.state.service = service
    return app


class AnalyticsMount:
    """Serves ``analytics`` under ``prefix`` and everything else (lifespan included) from ``app``.

    The analytics app opens its store on first use, so it needs no lifespan of its own here.
    """

    def __init__(self, app: ASGIApp, analytics: ASGIApp, prefix: str = "/_analytics") -> None:
        self.app = app
        self.analytics = analytics
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == self.prefix or path.startswith(self.prefix + "/"):
                # Starlette routes on path minus root_path, as its own Mount does.
                child = dict(scope)
                child["root_path"] = scope.get("root_path", "") + self.prefix
                if path == self.prefix:
                    await RedirectResponse(self.prefix + "/", status_code=308)(scope, receive, send)
                    return
                await self.analytics(child, receive, send)
                return
        await self.app(scope, receive, send)
