"""Finding 1 of the audit: memory keyed on request data is bounded in entries and bytes.

Memory is measured with tracemalloc (bytes still allocated after the flood), never with time.
"""

from __future__ import annotations

import gc
import logging
import tracemalloc

import pytest

from consent_gateway.bounded import BoundedLRU, RateLimitedWarner
from consent_gateway.pseudonymize import MAX_USER_AGENT, reduce_user_agent, user_agent_cache
from consent_gateway.registry import CategoryRegistry

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
MB = 1024 * 1024


def _retained(flood: object) -> int:
    """Bytes still allocated after running ``flood`` (a callable), once garbage is collected."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        flood()  # type: ignore[operator]
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


def test_a_flood_of_distinct_200_kb_user_agents_leaves_memory_flat() -> None:
    # 150 distinct 200 kB agents: the old lru_cache kept every one whole (about 30 MB).
    def flood() -> None:
        for i in range(150):
            ua = f"{CHROME} {i:06d} " + "x" * 200_000
            reduce_user_agent(ua)

    assert _retained(flood) < 4 * MB
    assert user_agent_cache().bytes_used <= user_agent_cache().max_bytes


def test_long_user_agents_are_reduced_from_their_first_characters() -> None:
    long_tail = CHROME + " " + "y" * 100_000
    assert reduce_user_agent(long_tail) == reduce_user_agent(long_tail[:MAX_USER_AGENT])
    assert reduce_user_agent(long_tail).browser == "Chrome"


def test_a_flood_of_distinct_unknown_cookie_names_leaves_memory_flat() -> None:
    registry = CategoryRegistry([("_ga", "analytics")], unknown_category="preferences")

    def flood() -> None:
        for i in range(300):
            assert registry.category_of(f"n{i}_" + "z" * 100_000) == "preferences"

    assert _retained(flood) < 4 * MB
    assert registry.category_of("_ga") == "analytics"


def test_unknown_name_warnings_are_rate_limited_not_budget_exhausted(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    warner = RateLimitedWarner(logging.getLogger("test.warner"), per_minute=3, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.warner"):
        written = sum(warner.warn(f"name{i}", "cookie %r is unknown") for i in range(1000))
        assert written == 3 and warner.suppressed == 997
        now[0] = 61.0  # a minute later the allowance is back: the warning was not silenced for good
        assert warner.warn("after-the-flood", "cookie %r is unknown") is True
    assert any("997 more warnings" in r.getMessage() for r in caplog.records)
    assert all(len(r.getMessage()) < 200 for r in caplog.records)


def test_bounded_lru_caps_entries_and_bytes() -> None:
    cache: BoundedLRU[str, int] = BoundedLRU(max_entries=10, max_bytes=2_000)
    for i in range(100):
        cache.put(f"k{i}", i)
    assert len(cache) == 10 and cache.get("k99") == 99 and cache.get("k0") is None
    cache.put("x" * 10_000, 1)  # larger than the whole byte budget: never stored
    assert cache.get("x" * 10_000) is None
    for i in range(10):
        cache.put(f"{i}" + "y" * 500, i)
    assert cache.bytes_used <= 2_000
