"""Policy.decide is the one place a record's fate is decided; the request-path parts it relies on."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consent_gateway import ConsentGateway, Settings
from consent_gateway.clientip import TrustedProxies
from consent_gateway.consent import Consent, ConsentStatus
from consent_gateway.cookies import ConsentCookie
from consent_gateway.policy import EVENT, KEEP, PSEUDONYMISE, VISIT, Decision, Policy, withdrawn

from .gateway_support import client_for, site_app

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
ALL = frozenset({"necessary", "preferences", "analytics", "marketing"})


def _given(categories: frozenset[str]) -> Consent:
    return Consent(ConsentStatus.GIVEN, categories, consent_id="c" * 22, version="1.0")


UNSET = Consent(ConsentStatus.UNSET, frozenset({"necessary"}))
OUTDATED = Consent(ConsentStatus.OUTDATED, frozenset({"necessary"}), consent_id="o" * 22, version="0.9")


def test_a_granted_category_keeps_the_record_with_its_consent_id(settings: Settings) -> None:
    policy = Policy(settings)
    consent = _given(ALL)
    visit = policy.decide(VISIT, "", consent, CHROME)
    assert visit == Decision("analytics", KEEP, True)
    assert visit is not None and visit.consent_id(consent) == "c" * 22
    assert policy.decide(EVENT, "signup", consent, CHROME) == Decision("marketing", KEEP, True)
    # Decisions are shared values: events of one category and outcome get the same one.
    assert policy.decide(EVENT, "pageview", consent, CHROME) is policy.decide(EVENT, "portfolio_view", consent, CHROME)


def test_a_refused_category_is_pseudonymised_or_dropped_by_its_row(settings: Settings) -> None:
    policy = Policy(settings)
    consent = _given(frozenset({"necessary"}))
    visit = policy.decide(VISIT, "", consent, CHROME)
    assert visit == Decision("analytics", PSEUDONYMISE, False)
    assert visit is not None and visit.consent_id(consent) is None
    assert policy.decide(EVENT, "pageview", consent, CHROME) == Decision("analytics", PSEUDONYMISE, False)
    assert policy.decide(EVENT, "signup", consent, CHROME) is None  # marketing: refused means drop


@pytest.mark.parametrize("consent", [UNSET, OUTDATED], ids=["unset", "outdated"])
def test_a_keep_without_a_given_consent_is_stored_pseudonymised(
    make_settings: Callable[..., Settings], consent: Consent
) -> None:
    # "necessary" is required: always kept, yet identified only under a given consent.
    policy = Policy(make_settings(event_registry=(("login", "necessary"),)))
    decision = policy.decide(EVENT, "login", consent, CHROME)
    assert decision == Decision("necessary", PSEUDONYMISE, False)
    assert decision is not None and decision.consent_id(consent) is None
    assert policy.decide(EVENT, "login", _given(ALL), CHROME) == Decision("necessary", KEEP, True)


def test_bots_are_dropped_only_with_drop_bots(make_settings: Callable[..., Settings]) -> None:
    consent = _given(ALL)
    keeping = Policy(make_settings())
    assert keeping.decide(VISIT, "", consent, BOT) == Decision("analytics", KEEP, True)
    assert keeping.decide(EVENT, "pageview", consent, BOT) == Decision("analytics", KEEP, True)
    dropping = Policy(make_settings(drop_bots=True))
    assert dropping.decide(VISIT, "", consent, BOT) is None
    assert dropping.decide(EVENT, "pageview", consent, BOT) is None
    assert dropping.decide(VISIT, "", consent, CHROME) == Decision("analytics", KEEP, True)


def test_the_visit_category_is_a_setting(make_settings: Callable[..., Settings]) -> None:
    policy = Policy(make_settings(visit_category="preferences"))
    only_analytics = _given(frozenset({"necessary", "analytics"}))
    only_preferences = _given(frozenset({"necessary", "preferences"}))
    assert policy.decide(VISIT, "", only_analytics, CHROME) == Decision("preferences", PSEUDONYMISE, False)
    assert policy.decide(VISIT, "", only_preferences, CHROME) == Decision("preferences", KEEP, True)


def test_visit_decisions_are_remembered_apart_for_given_and_other_consents(
    make_settings: Callable[..., Settings],
) -> None:
    # Visits under the required category are always kept, identified only under a given consent;
    # an unset and a given consent grant the same set here, and neither may answer for the other.
    policy = Policy(make_settings(visit_category="necessary"))
    given = _given(frozenset({"necessary"}))
    assert UNSET.categories == given.categories
    for _ in range(2):
        assert policy.decide(VISIT, "", UNSET, CHROME) == Decision("necessary", PSEUDONYMISE, False)
        assert policy.decide(VISIT, "", given, CHROME) == Decision("necessary", KEEP, True)


def test_a_withdrawn_consent_id_keeps_the_statistics_and_loses_the_identity() -> None:
    assert withdrawn(KEEP) == PSEUDONYMISE and withdrawn(PSEUDONYMISE) == PSEUDONYMISE
    kept = Decision("analytics", KEEP, True)
    assert kept.without_identity() == Decision("analytics", PSEUDONYMISE, False)
    assert kept.without_identity().consent_id(_given(ALL)) is None


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("10.0.0.2", "198.51.100.23", ("10.0.0.0/8",), "198.51.100.23"),
        ("10.0.0.2", "198.51.100.23, 10.0.0.9", ("10.0.0.0/8",), "198.51.100.23"),
        ("203.0.113.7", "198.51.100.23", ("10.0.0.0/8",), "203.0.113.7"),  # an untrusted peer's header
        ("10.0.0.2", "198.51.100.23", (), "10.0.0.2"),  # no trusted proxies: the header is ignored
        ("10.0.0.2", "not-an-ip, 10.0.0.9", ("10.0.0.0/8",), "not-an-ip"),
        ("10.0.0.2", "10.0.0.7", ("10.0.0.0/8",), "10.0.0.2"),  # only our proxies: the peer
    ],
)
def test_trusted_proxies_name_the_first_untrusted_hop(
    peer: str, forwarded: str, trusted: tuple[str, ...], expected: str
) -> None:
    assert TrustedProxies(trusted).client_ip({"client": (peer, 1)}, forwarded) == expected


def test_trusted_proxies_without_a_client_answer_an_empty_address() -> None:
    assert TrustedProxies(("10.0.0.0/8",)).client_ip({}, "198.51.100.23") == ""


def test_the_consent_cookie_header_carries_every_attribute() -> None:
    plain = ConsentCookie("cg_consent", max_age=86400, secure=False)
    assert plain.header("v.1") == b"cg_consent=v.1; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax"
    full = ConsentCookie("cg", max_age=60, domain="example.org", secure=True)
    assert full.header("x") == b"cg=x; Max-Age=60; Path=/; HttpOnly; SameSite=Lax; Domain=example.org; Secure"


def test_collect_answers_405_to_other_methods(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings())
    with client_for(gateway) as http:
        answer = http.get("/_consent/collect")
        assert answer.status_code == 405 and "GET" in answer.json()["error"]
        assert http.get("/_consent/nowhere").status_code == 404
