"""개인정보처리방침 변경 (the policy's last section): a revised policy takes effect 7 days after it
is posted; a material change (collected items, purposes) is announced at least 30 days ahead.
Consent is asked again only for material (MAJOR) changes.

"변경된 개인정보처리방침은 게시한 날로부터 7일 후부터 효력이 발생합니다. 다만, 수집하는 개인정보의
항목, 이용목적의 변경 등과 같이 이용자 권리의 중대한 변경이 발생할 때에는 최소 30일 전에 미리
알려드리겠습니다."
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest

from consent_gateway.consent import ConsentRecord
from consent_gateway.errors import SettingsError
from consent_gateway.settings import PolicyVersion

from .support import SITE_COOKIES, page, set_cookie_names

POSTED = dt.date(2026, 3, 2)
CURRENT = PolicyVersion(1, 0, dt.date(2026, 1, 1))


def _upcoming(version: str, days_after_posting: int) -> PolicyVersion:
    return PolicyVersion.from_values(
        "policy.upcoming.version", version, POSTED + dt.timedelta(days=days_after_posting), POSTED
    )


def test_8_policy_changes_take_effect_7_days_after_posting(make_settings: Callable[..., Any]) -> None:
    with pytest.raises(SettingsError, match="7 days"):
        make_settings(policy=CURRENT, upcoming_policy=_upcoming("1.1", 6))
    settings = make_settings(policy=CURRENT, upcoming_policy=_upcoming("1.1", 7))
    assert str(settings.policy_in_force(POSTED + dt.timedelta(days=6))) == "1.0"
    assert str(settings.announced_policy(POSTED + dt.timedelta(days=6))) == "1.1"  # the notice is shown
    assert str(settings.policy_in_force(POSTED + dt.timedelta(days=7))) == "1.1"
    assert settings.announced_policy(POSTED + dt.timedelta(days=7)) is None


def test_8_material_changes_are_announced_30_days_ahead(make_settings: Callable[..., Any]) -> None:
    with pytest.raises(SettingsError, match="30 days"):
        make_settings(policy=CURRENT, upcoming_policy=_upcoming("2.0", 29))
    settings = make_settings(policy=CURRENT, upcoming_policy=_upcoming("2.0", 30))
    assert str(settings.policy_in_force(POSTED + dt.timedelta(days=29))) == "1.0"
    assert str(settings.policy_in_force(POSTED + dt.timedelta(days=30))) == "2.0"
    with pytest.raises(SettingsError, match="announced"):
        make_settings(policy=CURRENT, upcoming_policy=PolicyVersion(2, 0, dt.date(2026, 12, 1)))


def _cookie_from_policy_1_0(driver: Any) -> bytes:
    """A visitor who accepted everything under policy 1.0."""
    runtime = driver.app.runtime
    record = ConsentRecord(
        "VisitorFromPolicy10xyz",
        "1.0",
        ("necessary", "preferences", "analytics", "marketing"),
        "accept_all",
        1_767_225_600,
    )
    return b"cg_consent=" + runtime.codec.encode(record).encode()


@pytest.mark.parametrize(("version", "asks_again"), [("1.1", False), ("1.9", False), ("2.0", True)])
def test_8_consent_is_asked_again_only_for_material_changes(
    make_gateway: Callable[..., Any], version: str, asks_again: bool
) -> None:
    # The new version was posted long ago and is in force today.
    upcoming = PolicyVersion.from_values("policy.upcoming.version", version, dt.date(2026, 2, 15), dt.date(2026, 1, 2))
    driver, site = make_gateway(policy=CURRENT, upcoming_policy=upcoming)
    site.headers = [(b"content-type", b"text/html; charset=utf-8"), *SITE_COOKIES]
    cookie = _cookie_from_policy_1_0(driver)
    state = json.loads(driver.request("GET", "/_consent/state", headers=[(b"cookie", cookie)]).body)
    assert state["policy"]["version"] == version
    assert state["status"] == ("outdated" if asks_again else "given")
    names = set_cookie_names(page(driver, "/", cookie=cookie))
    body = page(driver, "/", cookie=cookie).body.decode()
    if asks_again:
        # Until the visitor chooses again, only necessary cookies pass and the banner asks.
        assert names == ["palette_session"]
        assert 'data-cg-status="outdated"' in body
    else:
        assert "_mk_pixel" in names and "_pa_id" in names
        assert 'data-cg-status="given"' in body
