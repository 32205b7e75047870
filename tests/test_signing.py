"""Each state of the consent cookie, as the codec and as the wrapped app see it (``scope["consent"]``)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pytest

from consent_gateway import ConsentGateway, PolicyVersion, Settings
from consent_gateway.consent import ConsentRecord
from consent_gateway.signing import MAX_COOKIE_LENGTH, ConsentCodec
from tests.conftest import OLD_SECRET, SECRET
from tests.gateway_support import client_for, set_cookie_map, sign_cookie, site_app

ALL = ["analytics", "marketing", "necessary", "preferences"]
FOREIGN_SECRET = "foreign-secret-key-0123456789abcdefghij"
YEAR = 365 * 86400


def _record(version: str = "1.0", categories: tuple[str, ...] = ("necessary", "analytics")) -> ConsentRecord:
    return ConsentRecord("cid-0123456789abcdef", version, categories, "custom", int(time.time()))


# -- the codec on its own ---------------------------------------------------------------------------


def test_codec_round_trip_keeps_every_field() -> None:
    codec = ConsentCodec([SECRET], max_age=YEAR)
    record = _record()
    verified = codec.decode(codec.encode(record))
    assert verified is not None
    assert verified.record == record
    assert verified.stale_key is False


def test_codec_expiry_is_checked_even_for_a_cached_cookie() -> None:
    codec = ConsentCodec([SECRET], max_age=3600)
    value = codec.encode(_record())
    assert codec.decode(value) is not None  # now cached
    assert codec.decode(value, now=time.time() + 3600 + 60) is None
    assert codec.decode(value, now=time.time() + 60) is not None


def test_codec_caches_verification_of_a_cookie_already_seen() -> None:
    codec = ConsentCodec([SECRET], max_age=YEAR, cache_size=8)
    value = codec.encode(_record())
    for _ in range(5):
        assert codec.decode(value) is not None
    info = codec.cache_info()
    assert info.hits == 4 and info.misses == 1  # type: ignore[attr-defined]


def test_codec_rotation_verifies_old_key_and_marks_it_stale() -> None:
    old = ConsentCodec([OLD_SECRET], max_age=YEAR)
    rotated = ConsentCodec([OLD_SECRET, SECRET], max_age=YEAR)
    verified = rotated.decode(old.encode(_record()))
    assert verified is not None and verified.stale_key is True
    # The rotated codec signs with the newest key only.
    assert ConsentCodec([SECRET], max_age=YEAR).decode(rotated.encode(_record())) is not None
    assert old.decode(rotated.encode(_record())) is None


def test_codec_repr_hides_keys() -> None:
    assert SECRET not in repr(ConsentCodec([SECRET], max_age=YEAR))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "a.b.c",
        "x" * (MAX_COOKIE_LENGTH + 1),
        "eyJhIjoxfQ.AAAA.BBBB",
        "%00%ff",
        sign_cookie(FOREIGN_SECRET),
        sign_cookie(SECRET, salt="another-purpose"),
        sign_cookie(SECRET, payload={"consent_id": "x"}),
        sign_cookie(SECRET, payload=["short", "1.0", [], "a", 1]),
        sign_cookie(SECRET, version="one.zero"),
        sign_cookie(SECRET, method="z"),
        sign_cookie(SECRET, categories=["x" * 40]),
        sign_cookie(SECRET, payload=["cid-0123456789abcdef", "1.0", ["necessary"], "a", True]),
    ],
    ids=[
        "empty",
        "garbage",
        "dots",
        "oversized",
        "fake-signature",
        "binary",
        "foreign-key",
        "other-salt",
        "dict-payload",
        "short-id",
        "bad-version",
        "bad-method",
        "long-category",
        "bool-time",
    ],
)
def test_codec_refuses_bad_values_without_raising(value: str) -> None:
    assert ConsentCodec([SECRET], max_age=YEAR).decode(value) is None


# -- through the gateway ----------------------------------------------------------------------------


def _consent_seen(settings: Settings, cookie: str | None, headers: dict[str, str] | None = None) -> tuple[dict, dict]:
    """What the wrapped app sees for a request with this ``cg_consent`` value, and the Set-Cookies."""
    gateway = ConsentGateway(site_app(), settings)
    with client_for(gateway) as client:
        if cookie is not None:
            client.cookies.set("cg_consent", cookie)
        response = client.get("/consent", headers=headers or {})
        assert response.status_code == 200
        return response.json(), set_cookie_map(response)


def test_no_cookie_is_unset_with_required_only(make_settings: Callable[..., Settings]) -> None:
    seen, _ = _consent_seen(make_settings(), None)
    assert seen["status"] == "unset"
    assert seen["categories"] == ["necessary"]
    assert seen["consent_id"] is None


def test_valid_cookie_is_given_with_its_categories(make_settings: Callable[..., Settings]) -> None:
    seen, cookies = _consent_seen(make_settings(), sign_cookie(SECRET, categories=["necessary", "analytics"]))
    assert seen["status"] == "given"
    assert seen["categories"] == ["analytics", "necessary"]
    assert seen["consent_id"] == "cid-0123456789abcdef"
    assert "cg_consent" not in cookies  # nothing to re-issue


@pytest.mark.parametrize(
    "cookie",
    [
        sign_cookie(SECRET)[:-3] + "AAA",
        sign_cookie(SECRET).replace(".", "!", 1),
        sign_cookie(SECRET, signed_at=int(time.time()) - 400 * 86400),
        sign_cookie(FOREIGN_SECRET),
        "z" * (MAX_COOKIE_LENGTH + 10),
        "not-a-cookie",
        '"quoted"',
    ],
    ids=["tampered", "mangled", "expired", "foreign-key", "oversized", "garbage", "quoted"],
)
def test_bad_cookies_mean_unset_never_an_error(make_settings: Callable[..., Settings], cookie: str) -> None:
    seen, _ = _consent_seen(make_settings(), cookie)
    assert seen["status"] == "unset"
    assert seen["categories"] == ["necessary"]


def test_max_age_setting_is_enforced_server_side(make_settings: Callable[..., Settings]) -> None:
    # Signed 40 days ago: valid under a 365-day lifetime, expired under a 30-day one.
    cookie = sign_cookie(SECRET, signed_at=int(time.time()) - 40 * 86400)
    seen_long, _ = _consent_seen(make_settings(), cookie)
    assert seen_long["status"] == "given"
    seen_short, _ = _consent_seen(make_settings(cookie_max_age_days=30), cookie)
    assert seen_short["status"] == "unset"


def test_old_key_still_verifies_and_is_reissued_with_the_newest(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(secret_keys=(OLD_SECRET, SECRET))
    old_cookie = sign_cookie(OLD_SECRET, categories=["necessary", "preferences"])
    seen, cookies = _consent_seen(settings, old_cookie)
    assert seen["status"] == "given"
    assert seen["categories"] == ["necessary", "preferences"]
    assert "cg_consent" in cookies
    header = cookies["cg_consent"]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Max-Age=" in header
    new_value = header.split(";", 1)[0].split("=", 1)[1]
    newest_only = ConsentCodec([SECRET], max_age=YEAR, site_id=settings.site_id).decode(new_value)
    assert newest_only is not None
    assert newest_only.record.consent_id == "cid-0123456789abcdef"
    assert newest_only.record.categories == ("necessary", "preferences")
    assert ConsentCodec([OLD_SECRET], max_age=YEAR).decode(new_value) is None


def test_retired_key_no_longer_verifies(make_settings: Callable[..., Settings]) -> None:
    seen, _ = _consent_seen(make_settings(secret_keys=(SECRET,)), sign_cookie(OLD_SECRET))
    assert seen["status"] == "unset"


def test_secure_flag_is_set_unless_disabled(make_settings: Callable[..., Settings]) -> None:
    _, cookies = _consent_seen(
        make_settings(secret_keys=(OLD_SECRET, SECRET), cookie_secure=True), sign_cookie(OLD_SECRET)
    )
    assert "Secure" in cookies["cg_consent"]


def test_major_policy_change_makes_the_cookie_outdated_and_shows_the_banner(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(policy=PolicyVersion(2, 0, dt.date(2026, 1, 1)))
    cookie = sign_cookie(SECRET, version="1.3")
    gateway = ConsentGateway(site_app(), settings)
    with client_for(gateway) as client:
        client.cookies.set("cg_consent", cookie)
        seen = client.get("/consent").json()
        assert seen["status"] == "outdated"
        assert seen["categories"] == ["necessary"]
        assert seen["version"] == "1.3"
        page = client.get("/")
        assert 'id="cg-banner"' in page.text
        assert 'data-cg-status="outdated"' in page.text
        assert set(set_cookie_map(page)) == {"palette_session"}


def test_minor_policy_change_keeps_the_choice(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(policy=PolicyVersion(2, 4, dt.date(2026, 1, 1)))
    gateway = ConsentGateway(site_app(), settings)
    with client_for(gateway) as client:
        client.cookies.set("cg_consent", sign_cookie(SECRET, version="2.0"))
        assert client.get("/consent").json()["status"] == "given"
        assert 'id="cg-banner"' not in client.get("/").text


def test_upcoming_major_version_outdates_cookies_once_in_force(make_settings: Callable[..., Settings]) -> None:
    today = dt.datetime.now(dt.UTC).date()
    in_force = PolicyVersion(2, 0, today - dt.timedelta(days=1), today - dt.timedelta(days=40))
    announced = PolicyVersion(2, 0, today + dt.timedelta(days=20), today - dt.timedelta(days=10))
    cookie = sign_cookie(SECRET, version="1.0")
    seen, _ = _consent_seen(make_settings(upcoming_policy=in_force), cookie)
    assert seen["status"] == "outdated"
    seen, _ = _consent_seen(make_settings(upcoming_policy=announced), cookie)
    assert seen["status"] == "given"


def test_banner_shown_only_while_a_choice_is_needed(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings())
    with client_for(gateway) as client:
        first = client.get("/")
        assert 'id="cg-banner"' in first.text and 'data-cg-status="unset"' in first.text
        client.cookies.set("cg_consent", sign_cookie(SECRET))
        later = client.get("/")
        assert 'id="cg-banner"' not in later.text
        assert 'data-cg-status="given"' in later.text  # the settings link stays


def test_reissued_cookie_stops_the_reissue(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings(secret_keys=(OLD_SECRET, SECRET)))
    with client_for(gateway) as client:
        # The domain httpx files the gateway's cookies under, so the re-issued one replaces this one.
        client.cookies.set("cg_consent", sign_cookie(OLD_SECRET), domain="testserver.local")
        assert "cg_consent" in set_cookie_map(client.get("/consent"))
        again = client.get("/consent")  # the jar now holds the cookie signed with the newest key
        assert "cg_consent" not in set_cookie_map(again)
        assert again.json()["status"] == "given"
        client.get("/consent")
        assert gateway.runtime.codec.cache_info().hits >= 1  # type: ignore[attr-defined]
