"""ASGI factories the load tests serve with uvicorn (``uvicorn --factory loadtests.apps:NAME``).

The data directory comes from ``CG_LOAD_DATA``: each server gets its own, so its embedded
ClickHouse is never shared with another process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from consent_gateway import ConsentGateway, Settings
from consent_gateway.demo import create_demo_app
from consent_gateway.keys import local_keys

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "consent_gateway" / "demo" / "demo.toml"
DATA_ENV = "CG_LOAD_DATA"


# Every simulated visitor comes from 127.0.0.1, so the per-address limits (which exist against one
# client flooding the gateway) would measure the limiter, not the gateway: 0 turns them off here.
_PER_ADDRESS_LIMITS = ("rate_limit_collect_per_minute", "rate_limit_consent_per_minute")


def load_settings(data_dir: Path) -> Settings:
    """The demo's settings on ``data_dir`` with its local keys, as ``consent-gateway demo`` builds them,
    without per-address rate limits."""
    settings = Settings.load(DEMO_CONFIG, data_dir=data_dir.resolve())
    secret_keys, pseudonym_key = local_keys(settings.keys_dir)
    return settings.replace(
        secret_keys=settings.secret_keys or secret_keys,
        pseudonym_key=settings.pseudonym_key or pseudonym_key,
        **{name: 0.0 for name in _PER_ADDRESS_LIMITS if hasattr(settings, name)},
    )


def _data_dir() -> Path:
    value = os.environ.get(DATA_ENV)
    if not value:
        raise RuntimeError(f"set {DATA_ENV} to the data directory of this server (one per process)")
    return Path(value)


def bare() -> Any:
    """The demo site alone: the baseline."""
    return create_demo_app()


# Two anchors for what any middleware costs the same page (the bench's cost breakdown): neither
# stores anything, and both take the same request headers as the gateway.
SESSION_SECRET = "loadtests-session-anchor"  # noqa: S105 - signs the anchor's test cookie, nothing else
SESSION_COOKIE = "cg_consent"  # the name the gateway reads, so the request headers stay the same


class _PassThrough:
    """The least a middleware that sees the response does: its own ``send`` in front of the server's."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def forward(message: dict[str, Any]) -> None:
            await send(message)

        await self.app(scope, receive, forward)


def passthrough() -> Any:
    """The demo site behind a middleware that forwards every message unchanged."""
    return _PassThrough(create_demo_app())


def session() -> Any:
    """The demo site behind Starlette's SessionMiddleware, the nearest anchor for one signed cookie.

    The request carries a session under the name the gateway's consent cookie has: each request
    verifies its signature and decodes it, and each response start passes through the middleware's
    own ``send`` (the demo does not change the session, so no Set-Cookie is written, as the
    gateway writes none for a visitor whose consent stands).
    """
    return session_anchor(create_demo_app())


def session_anchor(app: Any) -> Any:
    """``app`` behind SessionMiddleware with the anchor's secret and cookie name."""
    from starlette.middleware.sessions import SessionMiddleware

    return SessionMiddleware(app, secret_key=SESSION_SECRET, session_cookie=SESSION_COOKIE)


def session_cookie() -> str:
    """A session value that ``session`` accepts, made the way SessionMiddleware makes its own."""
    import base64
    import json

    import itsdangerous

    data = base64.b64encode(json.dumps({"consent": "analytics,marketing"}).encode())
    return itsdangerous.TimestampSigner(SESSION_SECRET).sign(data).decode()


VARIANT_ENV = "CG_LOAD_VARIANT"  # comma-separated: "no-banner", "no-visits" (for the cost breakdown)


def gateway() -> Any:
    """The demo site wrapped in the consent gateway, writing to the embedded ClickHouse.

    ``CG_LOAD_VARIANT`` switches features off through their settings, to measure what each costs:
    ``no-banner`` (``inject_banner = false``), ``no-visits`` (the policy drops visit records).
    """
    settings = load_settings(_data_dir())
    variant = set(filter(None, os.environ.get(VARIANT_ENV, "").split(",")))
    unknown = variant - {"no-banner", "no-visits"}
    if unknown:
        raise RuntimeError(f"{VARIANT_ENV}={sorted(unknown)[0]!r} is unknown; use no-banner and/or no-visits")
    if "no-banner" in variant:
        settings = settings.replace(inject_banner=False)
    if "no-visits" in variant:
        matrix = tuple(("visit", "drop", "drop") if row[0] == "visit" else row for row in settings.policy_matrix)
        settings = settings.replace(policy_matrix=matrix)
    return ConsentGateway(create_demo_app(), settings)


def demo() -> Any:
    """What ``consent-gateway demo`` serves: the gateway, plus the analytics app under /_analytics."""
    settings = load_settings(_data_dir())
    site = ConsentGateway(create_demo_app(), settings)
    try:
        from consent_gateway.analytics import AnalyticsMount, create_analytics_app
    except ImportError:  # a build without the analytics app: the analyst user skips itself
        return site
    return AnalyticsMount(site, create_analytics_app(settings), "/_analytics")


def analytics_token(data_dir: Path, name: str = "loadtest") -> str | None:
    """A fresh analytics API token for the server on ``data_dir``; None without the analytics app."""
    try:
        from consent_gateway.analytics.tokens import TokenStore
    except ImportError:
        return None
    store = TokenStore(load_settings(data_dir).tokens_path)
    for record in store.records():
        if record.name == name and not record.revoked:
            store.revoke(name)
    token, _ = store.create(name)
    return token
