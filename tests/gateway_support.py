"""The name the end-to-end tests have always imported their helpers from; they live in ``tests/support``."""

from __future__ import annotations

from .support.driver import client_for, http_scope, json_body, run_asgi
from .support.flush import flush, wait_for_count
from .support.site import (
    PAGE,
    SITE_COOKIES,
    SSE_CHUNKS,
    _SignerAt,
    set_cookie_map,
    sign_cookie,
    site_app,
)

__all__ = [
    "PAGE",
    "SITE_COOKIES",
    "SSE_CHUNKS",
    "_SignerAt",
    "client_for",
    "flush",
    "http_scope",
    "json_body",
    "run_asgi",
    "set_cookie_map",
    "sign_cookie",
    "site_app",
    "wait_for_count",
]
