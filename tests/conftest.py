"""Shared fixtures: one embedded ClickHouse per test process, a fresh database per test.

chdb opens one data path per process and locks it, so every test in this process uses the same
``chdb://`` URL and isolates itself with its own database name.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from consent_gateway import Settings
from consent_gateway.store import Store, open_store

from .clickhouse_http_server import FixtureServer

# CI runs the same number of generated cases, from a fixed seed, so a red build always points at a
# change; local runs keep drawing new cases and so keep finding new ones.
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

_ENGINE_DIR = Path(tempfile.mkdtemp(prefix="cg-test-chdb-"))
CHDB_URL = f"chdb://{_ENGINE_DIR}"
_counter = itertools.count()

SECRET = "test-secret-key-0123456789abcdefghijkl"
OLD_SECRET = "old-secret-key-0123456789abcdefghijklm"
PSEUDONYM_KEY = "test-pseudonym-key-0123456789abcdefgh"

REGISTRY = (
    ("palette_session", "necessary"),
    ("ui_lang", "preferences"),
    ("_pa_id", "analytics"),
    ("_pa_js", "analytics"),
    ("_mk_*", "marketing"),
)


@pytest.fixture
def database() -> str:
    """A database name no other test uses."""
    return f"t{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"


@pytest.fixture
def make_settings(tmp_path: Path, database: str) -> Callable[..., Settings]:
    """Settings for one test: embedded engine, own database, own key directory, fast flushes."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "site_id": "test-site",
            "data_dir": tmp_path / "data",
            "clickhouse_url": CHDB_URL,
            "database": database,
            "secret_keys": (SECRET,),
            "pseudonym_key": PSEUDONYM_KEY,
            "cookie_secure": False,
            "cookie_registry": REGISTRY,
            "event_registry": (("pageview", "analytics"), ("signup", "marketing"), ("portfolio_view", "analytics")),
            "flush_interval": 0.05,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    """A query client on the test's database (the same engine the gateway writes to)."""
    client = open_store(CHDB_URL, database)
    yield client


@pytest.fixture
def clickhouse(tmp_path: Path) -> Iterator[FixtureServer]:
    """The ClickHouse HTTP test server (chdb behind the HTTP interface) in its own process."""
    server = FixtureServer(tmp_path / "clickhouse-server")
    server.start()
    yield server
    server.kill()
