"""Fixtures of the hostile-input suite: a gateway around a tiny app, driven in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consent_gateway import ConsentGateway, Settings

from .asgi import Driver, Header


class ScriptedApp:
    """A wrapped site whose response headers and body a test sets before each request."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: list[Header] = [(b"content-type", b"text/html; charset=utf-8")]
        self.body = b'<!doctype html><html lang="ko"><head></head><body><p>hi</p></body></html>'

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": self.status, "headers": list(self.headers)})
        await send({"type": "http.response.body", "body": self.body})


@pytest.fixture
def make_gateway(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., tuple[Driver, ScriptedApp]]]:
    """Build (driver, site) for one gateway; everything built is stopped at the end of the test."""
    drivers: list[Driver] = []

    def build(**overrides: Any) -> tuple[Driver, ScriptedApp]:
        site = ScriptedApp()
        # Thousands of requests come from one address here; tests of the limits turn them on.
        overrides.setdefault("rate_limit_collect_per_minute", 0)
        overrides.setdefault("rate_limit_consent_per_minute", 0)
        overrides.setdefault("rate_limit_page_per_minute", 0)
        driver = Driver(ConsentGateway(site, make_settings(**overrides)))
        drivers.append(driver)
        return driver, site

    yield build
    for driver in drivers:
        driver.close()
