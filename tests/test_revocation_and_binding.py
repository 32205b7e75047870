"""Findings 3 and 6 of the audit: revocation survives restarts and is shared by workers, re-issue
keeps the original expiry, cookies are bound to their site, and of several cookies the most
restrictive wins."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from consent_gateway.consent import ConsentRecord
from consent_gateway.errors import RequestError, SettingsError
from consent_gateway.revocation import Revocations
from consent_gateway.signing import ConsentCodec, consent_cookie_name, most_restrictive
from tests.conftest import OLD_SECRET, SECRET
from tests.gateway_support import sign_cookie

YEAR = 365 * 86400
CID = "cid-0123456789abcdef"


def _record(
    cid: str = CID, categories: tuple[str, ...] = ("necessary", "analytics", "marketing"), method: str = "custom"
) -> ConsentRecord:
    return ConsentRecord(cid, "1.0", categories, method, int(time.time()))


def _codec(path: Path, **kwargs: object) -> ConsentCodec:
    return ConsentCodec([SECRET], max_age=YEAR, revocations=Revocations(path, max_age=YEAR), **kwargs)  # type: ignore[arg-type]


# -- revocation -------------------------------------------------------------------------------------


def test_a_revoked_id_is_refused_even_when_the_cookie_was_cached(tmp_path: Path) -> None:
    codec = _codec(tmp_path / "revoked.txt")
    value = codec.encode(_record())
    assert codec.decode(value) is not None  # cached now
    assert codec.revocations is not None
    codec.revocations.revoke(CID)
    assert codec.decode(value) is None
    other = codec.encode(_record("cid-another-visitor-0001"))
    assert codec.decode(other) is not None


def test_revocation_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    first = _codec(path)
    value = first.encode(_record())
    assert first.revocations is not None
    first.revocations.revoke(CID)
    restarted = _codec(path)  # a new process reads the same file
    assert restarted.decode(value) is None


def _revoke_in_child(path: str) -> None:
    Revocations(Path(path), max_age=YEAR).revoke(CID)


def test_revocation_by_another_worker_process_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    now = [0.0]
    worker = ConsentCodec(
        [SECRET], max_age=YEAR, revocations=Revocations(path, max_age=YEAR, refresh_seconds=1.0, clock=lambda: now[0])
    )
    value = worker.encode(_record())
    assert worker.decode(value) is not None
    child = multiprocessing.get_context("spawn").Process(target=_revoke_in_child, args=(str(path),))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    now[0] = 2.0  # past the refresh interval: the worker re-reads the shared file
    assert worker.decode(value) is None


def test_revoke_refuses_an_id_the_gateway_never_issues(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="consent id"):
        Revocations(tmp_path / "r.txt", max_age=YEAR).revoke("../../etc/passwd\n")


def test_compaction_drops_entries_whose_cookies_have_expired(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    wall = [1_000_000.0]
    revocations = Revocations(path, max_age=YEAR, wall_clock=lambda: wall[0])
    revocations.revoke("cid-old-0000000000001")
    wall[0] += YEAR + 10
    revocations.revoke("cid-new-0000000000002")
    assert revocations.compact() == 1
    assert path.read_text().split()[0] == "cid-new-0000000000002"
    assert revocations.is_revoked("cid-new-0000000000002")


# -- re-issue after key rotation ---------------------------------------------------------------------


def test_reissue_after_rotation_keeps_the_original_expiry() -> None:
    signed_at = int(time.time()) - 300 * 86400
    old_cookie = sign_cookie(OLD_SECRET, signed_at=signed_at)
    rotated = ConsentCodec([OLD_SECRET, SECRET], max_age=YEAR)
    verified = rotated.decode(old_cookie)
    assert verified is not None and verified.stale_key
    fresh = rotated.reissue(verified)
    again = ConsentCodec([SECRET], max_age=YEAR).decode(fresh)
    assert again is not None and not again.stale_key
    assert again.signed_at == signed_at
    # 66 days later the original year is over: the re-issued cookie expires with it.
    assert ConsentCodec([SECRET], max_age=YEAR).decode(fresh, now=signed_at + YEAR + 1) is None


# -- site binding -----------------------------------------------------------------------------------


def test_a_cookie_minted_by_another_site_with_the_same_keys_is_refused() -> None:
    blog = ConsentCodec([SECRET], max_age=YEAR, site_id="blog")
    shop = ConsentCodec([SECRET], max_age=YEAR, site_id="shop")
    assert shop.decode(blog.encode(_record())) is None
    assert blog.decode(blog.encode(_record())) is not None


def test_cookies_from_before_site_binding_are_honoured_only_while_allowed() -> None:
    legacy = sign_cookie(SECRET)  # five fields, no site
    assert ConsentCodec([SECRET], max_age=YEAR).decode(legacy) is not None
    assert ConsentCodec([SECRET], max_age=YEAR, accept_unbound=False).decode(legacy) is None


def test_of_several_cookies_the_most_restrictive_wins() -> None:
    codec = ConsentCodec([SECRET], max_age=YEAR)
    visitor = codec.decode(codec.encode(_record(categories=("necessary",), method="reject_all")))
    planted = codec.decode(
        codec.encode(ConsentRecord("cid-planted-000000001", "1.0", ("necessary", "marketing"), "accept_all", 2**31))
    )
    assert most_restrictive([planted, visitor, None]) is visitor
    assert most_restrictive([None]) is None


def test_host_prefix_cookie_name() -> None:
    assert consent_cookie_name("cg_consent", host_prefix=False, secure=False, domain="") == "cg_consent"
    assert consent_cookie_name("cg_consent", host_prefix=True, secure=True, domain="") == "__Host-cg_consent"
    with pytest.raises(SettingsError, match="cookie_domain"):
        consent_cookie_name("cg_consent", host_prefix=True, secure=True, domain=".example.com")
    with pytest.raises(SettingsError, match="cookie_secure"):
        consent_cookie_name("cg_consent", host_prefix=True, secure=False, domain="")
