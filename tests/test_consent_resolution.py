"""A returning visitor's consent is resolved once and shared, and still expires and changes on time."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from consent_gateway import Settings
from consent_gateway import signing as signing_module
from consent_gateway.consent import ConsentStatus
from consent_gateway.runtime import GatewayRuntime

from .conftest import SECRET
from .gateway_support import sign_cookie


def test_a_returning_visitor_shares_one_resolved_consent(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = GatewayRuntime(make_settings())
    cookie = sign_cookie(SECRET, categories=("necessary", "analytics"))
    first, verified = runtime.consents.consent_for(cookie, False, 1)
    again, _ = runtime.consents.consent_for(cookie, False, 1)
    assert verified is not None and first is again
    assert first.categories == {"necessary", "analytics"} and first.status is ConsentStatus.GIVEN
    # GPC and a newer policy MAJOR resolve anew.
    with_gpc, _ = runtime.consents.consent_for(cookie, True, 1)
    outdated, _ = runtime.consents.consent_for(cookie, False, 2)
    assert with_gpc.gpc and not first.gpc
    assert outdated.status is ConsentStatus.OUTDATED
    # The same cookie past its max age is unset, although its consent was resolved before.
    later = time.time() + runtime.codec.max_age + 60
    monkeypatch.setattr(signing_module, "time", SimpleNamespace(time=lambda: later))
    assert runtime.consents.consent_for(cookie, False, 1) == (runtime.consents.consent_for(None, False, 1)[0], None)
    assert runtime.consents.consent_for(cookie, False, 1)[0].status is ConsentStatus.UNSET


def test_resolved_consents_are_bounded_like_the_verify_cache(make_settings: Callable[..., Settings]) -> None:
    runtime = GatewayRuntime(make_settings(verify_cache_size=4))
    for n in range(10):
        cookie = sign_cookie(SECRET, consent_id=f"cid-{n:016d}")
        consent, _ = runtime.consents.consent_for(cookie, False, 1)
        assert consent.consent_id == f"cid-{n:016d}"
    assert runtime.consents.cached == 4


def test_the_policy_major_is_looked_up_once_a_day(monkeypatch: pytest.MonkeyPatch) -> None:
    from consent_gateway import resolver as resolver_module
    from consent_gateway.resolver import MajorInForce

    days: list[object] = []

    def major_on(day: object) -> int:
        days.append(day)
        return len(days)

    major = MajorInForce(major_on)
    assert major() == 1 and major() == 1 and len(days) == 1
    # Past the next UTC midnight the policy in force is looked up again.
    tomorrow = time.time() + 86400 + 1
    monkeypatch.setattr(resolver_module, "time", SimpleNamespace(time=lambda: tomorrow))
    assert major() == 2 and len(days) == 2
