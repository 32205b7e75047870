"""The rendered banner root is reused across pages, but never where any of its inputs differ."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from consent_gateway import PolicyVersion, Settings
from consent_gateway import banner as banner_module
from consent_gateway.banner import ROOT_CACHE_SIZE, BannerRenderer
from consent_gateway.consent import Consent, ConsentStatus
from consent_gateway.runtime import GatewayRuntime

PAGE = b'<!doctype html><html><head><title>t</title></head><body><p>page</p></body></html>'
ALL = frozenset({"necessary", "preferences", "analytics", "marketing"})
NECESSARY = frozenset({"necessary"})


def _renderer(settings: Settings) -> BannerRenderer:
    return GatewayRuntime(settings).banner


def _inject(
    renderer: BannerRenderer,
    consent: Consent,
    *,
    path: str = "/",
    query: bytes = b"",
    accept_language: str = "ko",
    body: bytes = PAGE,
) -> bytes:
    facts = SimpleNamespace(accept_language=accept_language)
    return renderer.inject(body, consent, facts, {"path": path, "query_string": query})


def _root(page: bytes) -> bytes:
    start = page.index(b'<div id="cg-root"')
    return page[start : page.index(b"</body>")]


def test_same_inputs_reuse_one_rendering(make_settings: Callable[..., Settings]) -> None:
    renderer = _renderer(make_settings())
    given = Consent(ConsentStatus.GIVEN, ALL, consent_id="c" * 20)
    first = _inject(renderer, given)
    # Another visitor with the same choice: same banner, and the consent id is not in it.
    second = _inject(renderer, Consent(ConsentStatus.GIVEN, ALL, consent_id="d" * 20))
    assert first == second
    assert b"c" * 20 not in first
    info: Any = renderer.root_cache_info()
    assert (info.hits, info.misses) == (1, 1)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("status", ConsentStatus.OUTDATED),
        ("categories", NECESSARY | {"analytics"}),
        ("gpc", True),
        ("locale", "en"),
        ("path", "/students"),
        ("query", b"page=2"),
    ],
)
def test_each_input_gives_its_own_banner(make_settings: Callable[..., Settings], change: str, value: Any) -> None:
    renderer = _renderer(make_settings())
    inputs: dict[str, Any] = {
        "status": ConsentStatus.UNSET,
        "categories": NECESSARY,
        "gpc": False,
        "locale": "ko",
        "path": "/",
        "query": b"",
    }

    def page(values: dict[str, Any]) -> bytes:
        consent = Consent(values["status"], values["categories"], gpc=values["gpc"])
        return _inject(
            renderer, consent, path=values["path"], query=values["query"], accept_language=values["locale"]
        )

    before = page(inputs)
    after = page({**inputs, change: value})
    assert _root(before) != _root(after)
    # Each is what an uncached rendering of its own inputs gives.
    consent = Consent(inputs["status"], inputs["categories"], gpc=inputs["gpc"])
    assert _root(before).decode() == renderer.render(consent, "ko", "/")
    assert page(inputs) == before


def test_return_path_in_the_banner_follows_the_page(make_settings: Callable[..., Settings]) -> None:
    renderer = _renderer(make_settings())
    unset = Consent(ConsentStatus.UNSET, NECESSARY)
    students = _inject(renderer, unset, path="/students", query=b"q=1")
    portfolio = _inject(renderer, unset, path="/portfolio")
    assert b'name="return_to" value="/students?q=1"' in students
    assert b'name="return_to" value="/portfolio"' in portfolio


def test_the_cache_is_bounded(make_settings: Callable[..., Settings]) -> None:
    renderer = _renderer(make_settings())
    given = Consent(ConsentStatus.GIVEN, ALL)
    for n in range(ROOT_CACHE_SIZE + 50):
        page = _inject(renderer, given, path=f"/p/{n}")
        assert f"return_to=%2Fp%2F{n}&amp;".encode() in page
    info: Any = renderer.root_cache_info()
    assert info.currsize == ROOT_CACHE_SIZE == info.maxsize


def test_the_policy_notice_ends_when_the_new_version_takes_effect(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    upcoming = PolicyVersion(1, 1, today + dt.timedelta(days=2), today - dt.timedelta(days=6))
    renderer = _renderer(make_settings(upcoming_policy=upcoming))
    unset = Consent(ConsentStatus.UNSET, NECESSARY)
    assert b"cg-upcoming" in _inject(renderer, unset)
    # The clock passes 00:00 UTC of the effective date: the same page no longer announces it.
    effective = dt.datetime.combine(upcoming.effective, dt.time(), dt.UTC).timestamp()
    monkeypatch.setattr(banner_module, "time", SimpleNamespace(time=lambda: effective))
    assert b"cg-upcoming" not in _inject(renderer, unset)
    monkeypatch.setattr(banner_module, "time", SimpleNamespace(time=lambda: effective - 1))
    assert b"cg-upcoming" in _inject(renderer, unset)


def test_body_end_is_found_in_any_spelling(make_settings: Callable[..., Settings]) -> None:
    renderer = _renderer(make_settings())
    given = Consent(ConsentStatus.GIVEN, ALL)
    for body, before in [
        (b"<html><head></head><body>a</body>b</BODY >c", b"b"),  # the last one wins, whatever its case
        (b"<html><head></head><body>a</body>b</body>c", b"b"),
        (b"<html><HEAD></Head\n><body>a</Body>c", b"a"),
        (b"<p>no structure</p>", None),
    ]:
        page = _inject(renderer, given, body=body)
        at = page.index(b'<div id="cg-root"')
        if before is None:
            assert page.endswith(b"</div>") and page.startswith(b"<p>no structure</p><link")
        else:
            assert page[at - 1 : at] == before
        assert page.count(b"banner.css") == 1


def test_pages_with_a_query_string_are_rendered_but_not_remembered(make_settings: Callable[..., Settings]) -> None:
    """A query string can carry personal data: it never becomes a key of the long-lived cache."""
    renderer = _renderer(make_settings())
    unset = Consent(ConsentStatus.UNSET, NECESSARY)
    page = _inject(renderer, unset, path="/signup", query=b"email=kim%40example.com")
    assert b'name="return_to" value="/signup?email=kim%40example.com"' in page
    info: Any = renderer.root_cache_info()
    assert info.currsize == 0 and info.misses == 0
    _inject(renderer, unset, path="/signup")
    assert renderer.root_cache_info().currsize == 1  # type: ignore[attr-defined]
