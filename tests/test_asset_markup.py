"""The banner's asset tags are kept encoded between pages, but never across a nonce or a change of input."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consent_gateway import Settings
from consent_gateway.banner import ASSET_CACHE_SIZE, ASSET_CSP_MAX_BYTES, BannerRenderer
from consent_gateway.consent import Consent, ConsentStatus
from consent_gateway.inject import UnsupportedCharset, charset_of
from consent_gateway.runtime import GatewayRuntime

ALL = frozenset({"necessary", "preferences", "analytics", "marketing"})
NECESSARY = frozenset({"necessary"})


def _renderer(settings: Settings) -> BannerRenderer:
    return GatewayRuntime(settings).banner


def _expected(renderer: BannerRenderer, consent: Consent, csp: list[bytes]) -> tuple[bytes, bytes]:
    head_script, assets = renderer.asset_tags(consent, csp)
    return head_script.encode("ascii", "xmlcharrefreplace"), assets.encode("ascii", "xmlcharrefreplace")


def test_markup_is_asset_tags_encoded_for_each_consent_and_policy(make_settings: Callable[..., Settings]) -> None:
    renderer = _renderer(make_settings(google_consent_mode=True))
    given = Consent(ConsentStatus.GIVEN, ALL)
    refused = Consent(ConsentStatus.GIVEN, NECESSARY)
    by_hash = [b"script-src 'self' 'sha384-abc'; style-src 'self' 'sha256-def'"]
    for _ in range(2):  # the second round comes from the cache
        for consent in (given, refused):
            for csp in ([], by_hash):
                assert renderer.asset_markup(consent, csp) == _expected(renderer, consent, csp)
    assert renderer.asset_markup(given, []) != renderer.asset_markup(refused, [])  # data-cg-granted differs
    assert b'integrity="sha384-' in renderer.asset_markup(given, by_hash)[0]
    assert renderer._assets.cache_info().currsize == 4
    assert renderer._assets.cache_info().maxsize == ASSET_CACHE_SIZE


def test_nonces_and_long_policies_are_never_kept(make_settings: Callable[..., Settings]) -> None:
    renderer = _renderer(make_settings())
    consent = Consent(ConsentStatus.GIVEN, ALL)
    for nonce in ("abcdefgh12345678", "zyxwvuts87654321"):
        csp = [f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'".encode()]
        _, assets = renderer.asset_markup(consent, csp)
        assert f'nonce="{nonce}"'.encode() in assets
    long = [b"default-src 'self' " + b"https://cdn.example " * (ASSET_CSP_MAX_BYTES // 20 + 1)]
    assert renderer.asset_markup(consent, long) == _expected(renderer, consent, long)
    assert renderer._assets.cache_info().currsize == 0


def test_charset_of_reads_the_same_from_its_cache() -> None:
    for _ in range(2):
        assert charset_of(b"text/html; charset=utf-8") == "utf-8"
        assert charset_of(b"text/html; charset=EUC-KR") == "cp949"
        assert charset_of(b"text/html") is None
        assert charset_of(b"text/html; charset=" + b"x" * 200) == "ascii"  # unknown label, too long to keep
        with pytest.raises(UnsupportedCharset, match="utf-16le"):  # refused every time, cached or not
            charset_of(b"text/html; charset=utf-16le")
