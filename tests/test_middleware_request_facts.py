"""RequestFacts reads the consent cookie alike whether its Cookie header was parsed before or not."""

from __future__ import annotations

from consent_gateway.middleware import MAX_CACHED_COOKIE_HEADER, RequestFacts, _cookie_header

NAME = b"cg_consent"


def _facts(*cookie_headers: bytes) -> RequestFacts:
    return RequestFacts([(b"host", b"example.org"), *((b"cookie", h) for h in cookie_headers)], NAME)


def test_a_repeated_cookie_header_gives_the_same_facts() -> None:
    header = b'_pa_id=1; cg_consent="first"; x=2; cg_consent=second'
    first, again = _facts(header), _facts(header)
    assert (first.consent_cookie, first.consent_alternatives, first.cookie) == ("first", ("second",), header.decode())
    assert (again.consent_cookie, again.consent_alternatives, again.cookie) == (
        first.consent_cookie,
        first.consent_alternatives,
        first.cookie,
    )
    # Another visitor's header is parsed on its own.
    assert _facts(b"cg_consent=other").consent_cookie == "other"
    assert _facts(b"_pa_id=1").consent_cookie is None


def test_values_across_several_cookie_headers_keep_their_order() -> None:
    facts = _facts(b"a=1", b"cg_consent=one; cg_consent=two", b"cg_consent=three")
    assert facts.consent_cookie == "one" and facts.consent_alternatives == ("two", "three")
    assert facts.cookie == "a=1; cg_consent=one; cg_consent=two; cg_consent=three"


def test_the_parsed_headers_kept_are_bounded_in_number_and_size() -> None:
    assert _cookie_header.cache_info().maxsize == 1024
    _cookie_header.cache_clear()
    long_header = b"cg_consent=v; pad=" + b"x" * MAX_CACHED_COOKIE_HEADER
    assert _facts(long_header).consent_cookie == "v"
    assert _cookie_header.cache_info().currsize == 0
    for n in range(1100):
        assert _facts(b"cg_consent=%d" % n).consent_cookie == str(n)
    assert _cookie_header.cache_info().currsize == 1024
