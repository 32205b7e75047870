"""Key rotation end to end: old keys verify and are re-issued under the newest until removed."""

from __future__ import annotations

import re
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from itsdangerous import BadSignature, URLSafeTimedSerializer

from consent_gateway import ConsentGateway, Settings, SettingsError
from consent_gateway.cli import main
from consent_gateway.signing import COOKIE_SALT
from consent_gateway.store import Store
from tests.gateway_support import client_for, set_cookie_map, site_app, wait_for_count

KEY_A = "rotation-key-A-0123456789abcdefghijklmnop"
KEY_B = "rotation-key-B-0123456789abcdefghijklmnop"


def _cookie_value(header: str) -> str:
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(header)
    return cookie["cg_consent"].value


def _payload(value: str, key: str) -> list[object]:
    """The cookie's payload if ``key`` alone verifies it (raises BadSignature otherwise)."""
    return list(URLSafeTimedSerializer(key, salt=COOKIE_SALT).loads(value))


def test_rotation_from_key_a_to_key_b(make_settings: Callable[..., Settings], store: Store, tmp_path: Path) -> None:
    # Each step is another deployment (own data directory, as another replica would have); they
    # share only ClickHouse and the keys in their settings.
    # 1. Only key A: a visitor chooses, and gets a cookie signed with A.
    gateway = ConsentGateway(site_app(), make_settings(secret_keys=(KEY_A,), data_dir=tmp_path / "1"))
    with client_for(gateway) as client:
        chosen = client.post("/_consent/", json={"action": "save", "categories": ["analytics"]})
        assert chosen.status_code == 200
        cookie_a = _cookie_value(set_cookie_map(chosen)["cg_consent"])
        assert client.post("/_consent/collect", json={"name": "pageview", "url": "/a"}).json()["kept"] == 1
    consent_id = _payload(cookie_a, KEY_A)[0]
    with pytest.raises(BadSignature):
        _payload(cookie_a, KEY_B)

    # 2. Keys (A, B), newest last: the A cookie still verifies, and the response re-issues it under B.
    gateway = ConsentGateway(site_app(), make_settings(secret_keys=(KEY_A, KEY_B), data_dir=tmp_path / "2"))
    with client_for(gateway) as client:
        client.cookies.set("cg_consent", cookie_a)
        seen = client.get("/consent")
        assert seen.json()["status"] == "given"
        assert seen.json()["consent_id"] == consent_id
        assert "analytics" in seen.json()["categories"] and "marketing" not in seen.json()["categories"]
        reissued_header = set_cookie_map(seen)["cg_consent"]
        assert "HttpOnly" in reissued_header and "Max-Age=" in reissued_header
        cookie_b = _cookie_value(reissued_header)
        assert cookie_b != cookie_a
        assert _payload(cookie_b, KEY_B)[:3] == _payload(cookie_a, KEY_A)[:3]  # same id, version, categories
        with pytest.raises(BadSignature):
            _payload(cookie_b, KEY_A)
        # A cookie already under the newest key is left alone.
        client.cookies.set("cg_consent", cookie_b)
        again = client.get("/consent")
        assert again.json()["status"] == "given"
        assert "cg_consent" not in set_cookie_map(again)
        assert client.post("/_consent/collect", json={"name": "pageview", "url": "/b"}).json()["kept"] == 1

    # 3. Key A removed: its cookies mean "no consent yet"; B cookies keep working.
    gateway = ConsentGateway(site_app(), make_settings(secret_keys=(KEY_B,), data_dir=tmp_path / "3"))
    with client_for(gateway) as client:
        client.cookies.set("cg_consent", cookie_a)
        gone = client.get("/consent")
        assert gone.json()["status"] == "unset" and gone.json()["consent_id"] is None
        assert "cg_consent" not in set_cookie_map(gone)  # nothing to re-issue: A no longer verifies
        assert client.get("/_consent/state").json()["status"] == "unset"
        client.cookies.set("cg_consent", cookie_b)
        assert client.get("/consent").json()["consent_id"] == consent_id

    # The pseudonymisation key did not change, so both events carry the same visitor key:
    # rotating the signing keys neither splits visitors nor hides rows from erasure.
    events = store.table("events")
    count = wait_for_count(store, f"SELECT count() FROM {events} WHERE identified = 1 AND kind = 'event'", 2)
    assert count == 2
    visitors = store.query_rows(f"SELECT uniqExact(visitor) FROM {events} WHERE identified = 1 AND kind = 'event'")
    assert visitors == [(1,)]


def test_unset_after_removal_has_no_consent_id(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    gateway = ConsentGateway(site_app(), make_settings(secret_keys=(KEY_A,), data_dir=tmp_path / "1"))
    with client_for(gateway) as client:
        cookie_a = _cookie_value(set_cookie_map(client.post("/_consent/", json={"action": "accept_all"}))["cg_consent"])
    gateway = ConsentGateway(site_app(), make_settings(secret_keys=(KEY_B,), data_dir=tmp_path / "2"))
    with client_for(gateway) as client:
        client.cookies.set("cg_consent", cookie_a)
        seen = client.get("/consent").json()
        assert seen["status"] == "unset" and seen["consent_id"] is None
        assert seen["categories"] == ["necessary"]


def test_pseudonym_key_is_kept_apart_from_signing_keys(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match="pseudonym_key") as error:
        make_settings(secret_keys=(KEY_A, KEY_B), pseudonym_key=KEY_B)
    assert KEY_B not in str(error.value)  # the error names the setting, never the key
    settings = make_settings(secret_keys=(KEY_A, KEY_B))
    assert KEY_A not in repr(settings) and settings.pseudonym_key not in repr(settings)


def test_keys_secret_prints_a_fresh_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "secret"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["keys", "secret"]) == 0
    second = capsys.readouterr().out.strip()
    assert first != second
    assert re.fullmatch(r"[A-Za-z0-9_\-]{43}", first)  # 256 bits, URL-safe: fits env vars and TOML
    Settings(secret_keys=(first,), pseudonym_key=second)  # accepted as either kind of key
