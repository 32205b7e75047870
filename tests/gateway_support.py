"""The name the end-to-end tests have always imported their helpers from; they live in ``tests/support``."""

from __future__ import annotations

from .support.driver import client_for, http_scope, json_body, run_asgi  # noqa: F401
from .support.flush import flush, wait_for_count  # noqa: F401
from .support.site import PAGE, SITE_COOKIES, SSE_CHUNKS, _SignerAt, set_cookie_map, sign_cookie, site_app  # noqa: F401
