"""Waiting for the pipeline: until the writer has flushed, until a count in ClickHouse is reached."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from consent_gateway.store import Store

from .driver import Driver


def flush(
    via: TestClient | Driver, gateway: Any = None, timeout: float = 30.0, what: str = "the writer did not flush"
) -> None:
    """Wait until everything the gateway has accepted so far is in ClickHouse; fail with ``what`` if not.

    ``via`` is what runs the gateway: a TestClient inside ``with`` (give the gateway too), or a
    ``Driver`` (its app is the gateway unless another is given).
    """
    if isinstance(via, Driver):
        app = via.app if gateway is None else gateway
        assert via.run(app.runtime.pipeline.flush(timeout)), what
        return
    assert via.portal is not None, "use the TestClient inside `with`"
    assert via.portal.call(gateway.runtime.pipeline.flush, timeout), what


def wait_for_count(store: Store, sql: str, expected: int, params: dict[str, Any] | None = None) -> int:
    """Poll ``sql`` (a count) until it equals ``expected`` or 200 polls have passed; returns the last count."""
    count = -1
    for _ in range(200):
        count = int(store.query_rows(sql, params)[0][0])
        if count == expected:
            return count
        time.sleep(0.05)
    return count


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds have passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
