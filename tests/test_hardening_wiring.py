"""The audit's findings (issue 19) against the gateway as served: each test drives a real gateway
(in-process driver or Starlette's TestClient, embedded ClickHouse) and fails on the code before
the hardening was wired in. The finding each one covers is named in its docstring."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consent_gateway import ConsentGateway, Settings, SettingsError
from consent_gateway.cli import main
from consent_gateway.consent import ConsentRecord
from consent_gateway.signing import ConsentCodec
from tests.conftest import CHDB_URL, OLD_SECRET, PSEUDONYM_KEY, SECRET
from tests.support import Driver, Reply, site_app
from tests.support.site import sign_cookie

YEAR = 365 * 86400
DAY = 86400
SAME = [(b"origin", b"http://site.example")]
JSON = [(b"content-type", b"application/json"), *SAME]
EVIL = [(b"content-type", b"application/json"), (b"origin", b"https://evil.example")]
VISITOR = ("198.51.100.40", 40000)


@pytest.fixture
def make_driver(make_settings: Callable[..., Settings]) -> Any:
    drivers: list[Driver] = []

    def build(**overrides: Any) -> Driver:
        driver = Driver(ConsentGateway(site_app(), make_settings(**overrides)))
        drivers.append(driver)
        return driver

    yield build
    for driver in drivers:
        driver.close()


def _cookie_pair(reply: Reply, name: str = "cg_consent") -> str | None:
    """``name=value`` of the Set-Cookie that stores ``name`` (not a deletion), if the reply has one."""
    for header in reply.header("set-cookie"):
        text = header.decode("latin-1")
        pair = text.split(";", 1)[0]
        if pair.split("=", 1)[0] == name and "Max-Age=0" not in text:
            return pair
    return None


def _state(driver: Driver, cookie: str, **kwargs: Any) -> dict[str, Any]:
    reply = driver.request("GET", "/_consent/state", headers=[(b"cookie", cookie.encode("latin-1"))], **kwargs)
    assert reply.status == 200, reply.body
    import json

    return dict(json.loads(reply.body))


def _accept_all(driver: Driver) -> str:
    reply = driver.request("POST", "/_consent/", headers=JSON, body=b'{"action":"accept_all"}', client=VISITOR)
    assert reply.status == 200, reply.body
    pair = _cookie_pair(reply)
    assert pair is not None
    return pair


# -- finding 3: withdrawal and erasure revoke the id; rotation keeps the expiry ----------------------


def test_a_withdrawn_cookie_replayed_later_is_no_consent_even_after_a_restart(
    make_driver: Callable[..., Driver],
) -> None:
    """Finding 3: a withdrawn cg_consent replayed later was `given` again."""
    driver = make_driver()
    cookie = _accept_all(driver)
    assert _state(driver, cookie)["status"] == "given"
    withdrawn = driver.request(
        "POST", "/_consent/withdraw", headers=[*JSON, (b"cookie", cookie.encode())], body=b"{}", client=VISITOR
    )
    assert withdrawn.status == 200, withdrawn.body
    replayed = _state(driver, cookie)
    assert replayed["status"] == "unset" and replayed["categories"] == ["necessary"]
    # A restarted gateway (a new process reading the same data directory) refuses it too.
    restarted = make_driver()
    assert _state(restarted, cookie)["status"] == "unset"


def test_erase_from_the_command_line_revokes_the_id_for_the_gateway(
    tmp_path: Path, database: str, make_driver: Callable[..., Driver], capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 3: `consent-gateway erase` deleted rows but the erased cookie stayed valid."""
    cid = "cid-erase-and-revoke-01"
    cookie = "cg_consent=" + sign_cookie(SECRET, consent_id=cid)
    driver = make_driver()
    assert _state(driver, cookie)["status"] == "given"
    config = tmp_path / "consent.toml"
    config.write_text(
        f'site_id = "test-site"\ndata_dir = "{tmp_path / "data"}"\nclickhouse_url = "{CHDB_URL}"\n'
        f'database = "{database}"\nsecret_keys = ["{SECRET}"]\npseudonym_key = "{PSEUDONYM_KEY}"\n',
        encoding="utf-8",
    )
    assert main(["erase", cid, "--config", str(config)]) == 0
    assert "revoked" in capsys.readouterr().out
    driver.app.runtime.revocations.refresh()  # what every worker does within a second
    assert _state(driver, cookie)["status"] == "unset"


def test_key_rotation_reissues_a_cookie_with_its_original_expiry(make_driver: Callable[..., Driver]) -> None:
    """Finding 3: rotation re-signed an old-key cookie with a fresh timestamp, resetting its max age."""
    signed_at = int(time.time()) - 100 * DAY
    old = sign_cookie(OLD_SECRET, categories=["necessary", "analytics"], signed_at=signed_at)
    driver = make_driver(secret_keys=(OLD_SECRET, SECRET))
    reply = driver.request("GET", "/", headers=[(b"cookie", f"cg_consent={old}".encode())])
    assert reply.status == 200
    headers = [h.decode() for h in reply.header("set-cookie") if h.startswith(b"cg_consent=")]
    assert len(headers) == 1
    max_age = int(headers[0].split("Max-Age=", 1)[1].split(";", 1)[0])
    assert YEAR - 101 * DAY < max_age <= YEAR - 100 * DAY  # what is left, not a fresh year
    value = headers[0].split(";", 1)[0].split("=", 1)[1]
    verified = ConsentCodec([SECRET], max_age=YEAR, site_id="test-site").decode(value)
    assert verified is not None and verified.signed_at == signed_at and not verified.stale_key


# -- finding 4: the origin is checked before any bucket is charged ----------------------------------


def test_refused_cross_site_posts_do_not_spend_the_visitors_allowance(make_driver: Callable[..., Driver]) -> None:
    """Finding 4: 403s consumed the shared per-IP allowance; the visitor's withdrawal then got 429."""
    driver = make_driver(
        rate_limit_consent_per_minute=1,
        rate_limit_consent_burst=2,
        rate_limit_collect_per_minute=1,
        rate_limit_collect_burst=2,
    )
    for _ in range(10):
        assert driver.request("POST", "/_consent/withdraw", headers=EVIL, body=b"{}", client=VISITOR).status == 403
        assert driver.request("POST", "/_consent/collect", headers=EVIL, body=b"{}", client=VISITOR).status == 403
    own = driver.request("POST", "/_consent/withdraw", headers=JSON, body=b"{}", client=VISITOR)
    assert own.status == 200, own.body
    event = b'{"name":"pageview"}'
    assert driver.request("POST", "/_consent/collect", headers=JSON, body=event, client=VISITOR).status == 202
    # Accepted requests are still counted: the bucket runs out after the burst.
    assert (
        driver.request("POST", "/_consent/", headers=JSON, body=b'{"action":"reject_all"}', client=VISITOR).status
        == 200
    )
    limited = driver.request("POST", "/_consent/withdraw", headers=JSON, body=b"{}", client=VISITOR)
    assert limited.status == 429 and limited.first("retry-after")


# -- finding 6: site binding, most restrictive of several cookies, __Host- ---------------------------


def test_a_cookie_signed_for_another_site_with_the_same_keys_is_not_honoured(
    make_driver: Callable[..., Driver],
) -> None:
    """Finding 6: a cookie minted by another site with the same keys was honoured."""
    record = ConsentRecord("cid-from-the-blog-0001", "1.0", ("necessary", "marketing"), "custom", int(time.time()))
    foreign = ConsentCodec([SECRET], max_age=YEAR, site_id="blog").encode(record)
    own = ConsentCodec([SECRET], max_age=YEAR, site_id="test-site").encode(record)
    driver = make_driver()
    assert _state(driver, f"cg_consent={foreign}")["status"] == "unset"
    assert _state(driver, f"cg_consent={own}")["status"] == "given"
    # Cookies from before the site was carried: honoured while cookie_accept_unbound is on.
    legacy = f"cg_consent={sign_cookie(SECRET)}"
    assert _state(driver, legacy)["status"] == "given"
    assert _state(make_driver(cookie_accept_unbound=False), legacy)["status"] == "unset"


def test_of_several_consent_cookies_the_most_restrictive_wins(make_driver: Callable[..., Driver]) -> None:
    """Finding 6: a newer cookie planted from a sibling subdomain overrode the visitor's "reject all"."""
    now = int(time.time())
    refused = sign_cookie(
        SECRET, consent_id="cid-visitor-own-0001", categories=["necessary"], method="r", issued_at=now - 60
    )
    planted = sign_cookie(SECRET, consent_id="cid-planted-00000001", method="a", issued_at=now)
    driver = make_driver()
    for header in (f"cg_consent={refused}; cg_consent={planted}", f"cg_consent={planted}; cg_consent={refused}"):
        state = _state(driver, header)
        assert state["status"] == "given" and state["categories"] == ["necessary"], header


def test_the_host_prefixed_cookie_is_set_read_and_deleted_under_its_own_name(
    make_driver: Callable[..., Driver], make_settings: Callable[..., Settings]
) -> None:
    """Finding 6: there was no __Host- option."""
    driver = make_driver(cookie_host_prefix=True, cookie_secure=True)
    reply = driver.request("POST", "/_consent/", headers=JSON, body=b'{"action":"accept_all"}', client=VISITOR)
    pair = _cookie_pair(reply, "__Host-cg_consent")
    assert pair is not None, reply.header("set-cookie")
    header = next(h for h in reply.header("set-cookie") if h.startswith(b"__Host-cg_consent="))
    assert b"Secure" in header and b"Path=/" in header and b"Domain" not in header
    assert _state(driver, pair)["status"] == "given"
    # The unprefixed name, which any sibling subdomain can set, is not the consent cookie any more.
    plain = "cg_consent=" + pair.split("=", 1)[1]
    assert _state(driver, plain)["status"] == "unset"
    withdrawn = driver.request(
        "POST", "/_consent/withdraw", headers=[*JSON, (b"cookie", pair.encode())], body=b"{}", client=VISITOR
    )
    assert any(h.startswith(b"__Host-cg_consent=;") for h in withdrawn.header("set-cookie"))
    with pytest.raises(SettingsError, match="__Host-"):
        make_settings(cookie_host_prefix=True, cookie_secure=True, cookie_domain="site.example")


# -- finding 7: bounded answers on the consent routes ------------------------------------------------


def test_a_choice_answers_a_bounded_number_of_deletions_known_cookies_first(
    make_driver: Callable[..., Driver],
) -> None:
    """Finding 7: a 0.89 MB request to POST /_consent/ made a 7.9 MB response (one deletion per cookie)."""
    driver = make_driver()
    long_junk = "; ".join(f"junk{i:04d}{'x' * 200}=1" for i in range(250))  # 250 invented 208-char names
    short_junk = "; ".join(f"j{i}=1" for i in range(100))
    known = "; ".join(f"_mk_c{i}=1" for i in range(200))  # registered (glob _mk_*), marketing
    cookie = f"{long_junk}; {short_junk}; ui_lang=ko; {known}".encode()
    reply = driver.request(
        "POST", "/_consent/", headers=[*JSON, (b"cookie", cookie)], body=b'{"action":"reject_all"}', client=VISITOR
    )
    assert reply.status == 200, reply.body
    deleted = [h.split(b"=", 1)[0] for h in reply.header("set-cookie") if b"Max-Age=0" in h]
    assert len(deleted) == 64  # routes.MAX_DELETIONS
    assert b"ui_lang" in deleted and all(name == b"ui_lang" or name.startswith(b"_mk_c") for name in deleted)
    assert sum(len(k) + len(v) for k, v in reply.headers) < 16_384
    # Without known names in the way, short unclassified ones are deleted (a site's unknown cookie
    # set while the visitor allowed it must go), invented 208-character ones never.
    reply = driver.request(
        "POST",
        "/_consent/",
        headers=[*JSON, (b"cookie", f"{long_junk}; mystery=1".encode())],
        body=b'{"action":"reject_all"}',
        client=VISITOR,
    )
    deleted = [h.split(b"=", 1)[0] for h in reply.header("set-cookie") if b"Max-Age=0" in h]
    assert deleted == [b"mystery"]


# -- finding 9: scheme in the origin check, body timeout -----------------------------------------------


def test_an_origin_with_the_sites_host_but_another_scheme_is_refused(make_driver: Callable[..., Driver]) -> None:
    """Finding 9: ftp:// with the same host passed the origin check."""
    driver = make_driver()
    for origin in (b"ftp://site.example", b"chrome-extension://site.example"):
        headers = [(b"content-type", b"application/json"), (b"origin", origin)]
        reply = driver.request("POST", "/_consent/", headers=headers, body=b'{"action":"accept_all"}', client=VISITOR)
        assert reply.status == 403, origin
        assert not reply.header("set-cookie")
        collect = driver.request("POST", "/_consent/collect", headers=headers, body=b"{}", client=VISITOR)
        assert collect.status == 403
    referer = [(b"content-type", b"application/json"), (b"referer", b"ftp://site.example/page")]
    assert driver.request("POST", "/_consent/", headers=referer, body=b"{}", client=VISITOR).status == 403


@pytest.mark.parametrize("path", ["/_consent/", "/_consent/collect"])
def test_a_body_that_never_finishes_gets_408(make_driver: Callable[..., Driver], path: str) -> None:
    """Finding 9: slow bodies were never timed out."""
    driver = make_driver(collect_body_timeout=0.2)
    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b'{"action":', "more_body": True}
        await asyncio.sleep(3600)  # the rest of the body never comes
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"site.example"), *JSON, (b"content-length", b"100")],
        "client": VISITOR,
        "server": ("site.example", 80),
    }
    driver.run(driver.app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"did not arrive" in body and b"collect_body_timeout" in body


def test_a_collect_request_cancelled_while_its_body_comes_is_cancelled_not_timed_out(
    make_driver: Callable[..., Driver],
) -> None:
    """The body's deadline cancels the task itself; a cancellation from outside (the server
    shutting down, say) must go on as one, not turn into a 408."""
    driver = make_driver(collect_body_timeout=30)
    sent: list[dict[str, Any]] = []
    waiting = asyncio.Event()

    async def receive() -> dict[str, Any]:
        waiting.set()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/_consent/collect", "raw_path": b"/_consent/collect", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"site.example"), *JSON, (b"content-length", b"100")],
        "client": VISITOR, "server": ("site.example", 80),
    }  # fmt: skip

    async def cancel_while_waiting() -> BaseException | None:
        task = asyncio.ensure_future(driver.app(scope, receive, send))
        await waiting.wait()
        task.cancel()
        try:
            await task
        except BaseException as exc:  # what the app raised is the result
            return exc
        return None

    raised = driver.run(cancel_while_waiting())
    assert isinstance(raised, asyncio.CancelledError)
    assert sent == [], "nothing answered: the request was cancelled, not timed out"


# -- finding 1: header cap and page-view limit -------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/_consent/state"])
def test_headers_over_the_cap_get_a_clear_431(make_driver: Callable[..., Driver], path: str) -> None:
    """Finding 1: an 8 MB header was accepted and a 1 MB user agent grew the worker by 1 MB."""
    driver = make_driver(max_header_bytes=8192)
    reply = driver.request("GET", path, headers=[(b"user-agent", b"M" * 200_000)])
    assert reply.status == 431
    assert b"max_header_bytes" in reply.body and b"8192" in reply.body
    assert driver.request("GET", path, headers=[(b"user-agent", b"M" * 1000)]).status == 200


def test_page_views_over_the_per_address_limit_get_429(make_driver: Callable[..., Driver]) -> None:
    """Finding 1: page views were not rate-limited."""
    driver = make_driver(rate_limit_page_per_minute=1, rate_limit_page_burst=3)
    statuses = [driver.request("GET", "/", client=VISITOR).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = driver.request("GET", "/students", client=VISITOR)
    assert limited.status == 429 and int(limited.first("retry-after") or "0") >= 1
    assert b"too many page requests" in limited.body
    # Another address, assets, and the gateway's own routes are not counted against it.
    assert driver.request("GET", "/", client=("198.51.100.41", 1)).status == 200
    assert driver.request("GET", "/app.css", client=VISITOR).status != 429
    assert driver.request("GET", "/_consent/state", client=VISITOR).status == 200


# -- finding 2: proxy trust is said at start under any server ----------------------------------------


def test_the_runtime_says_which_proxies_it_trusts_at_start(
    make_driver: Callable[..., Driver], caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 2: only `consent-gateway serve` said it; ConsentGateway under another server said nothing."""
    with caplog.at_level(logging.INFO, logger="consent_gateway"):
        make_driver().request("GET", "/_consent/healthz")
        make_driver(trusted_proxies=("10.0.0.0/8",)).request("GET", "/_consent/healthz")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("proxy trust")]
    assert any("X-Forwarded-For is ignored" in line for line in lines)
    assert any("believed only from 10.0.0.0/8" in line for line in lines)


def test_a_client_address_the_server_rewrote_from_forwarded_for_is_warned_about(
    make_driver: Callable[..., Driver], caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 2: uvicorn's own proxy handling rewrote the client address before the gateway looked."""
    driver = make_driver()
    with caplog.at_level(logging.WARNING, logger="consent_gateway"):
        # What uvicorn's ProxyHeadersMiddleware leaves: the last hop as the client, port 0.
        driver.request("GET", "/", headers=[(b"x-forwarded-for", b"203.0.113.77")], client=("203.0.113.77", 0))
        driver.request("GET", "/", headers=[(b"x-forwarded-for", b"203.0.113.78")], client=("203.0.113.78", 0))
    warnings = [r.getMessage() for r in caplog.records if "--no-proxy-headers" in r.getMessage()]
    assert len(warnings) == 1  # said once, not per request
    assert "203.0.113" not in warnings[0]  # no visitor address in the log


def test_the_my_data_page_reads_the_host_prefixed_cookie(make_settings: Callable[..., Settings]) -> None:
    """Finding 6: every reader of the consent cookie uses the same (prefixed) name."""
    from starlette.requests import Request

    from consent_gateway.my_data import cookie_identify

    settings = make_settings(cookie_host_prefix=True, cookie_secure=True)
    assert settings.consent_cookie_name == "__Host-cg_consent"
    codec = ConsentCodec([SECRET], max_age=YEAR, site_id="test-site")
    value = codec.encode(ConsentRecord("cid-my-data-prefixed-01", "1.0", ("necessary",), "reject_all", 1))
    scope = {"type": "http", "headers": [(b"cookie", f"__Host-cg_consent={value}".encode())], "client": VISITOR}
    assert cookie_identify(settings, codec)(Request(scope)).consent_id == "cid-my-data-prefixed-01"


# -- the new settings ----------------------------------------------------------------------------------


def test_the_new_settings_read_from_toml_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "site" / "consent.toml"
    config.parent.mkdir()
    config.write_text(
        "max_header_bytes = 32768\n[cookie]\nhost_prefix = true\naccept_unbound = false\n"
        "[collect]\nbody_timeout = 5\n[rate_limit]\npage_per_minute = 100\npage_burst = 50\n"
        '[event_props]\nsignup = ["plan", "step"]\n"*" = []\n',
        encoding="utf-8",
    )
    s = Settings.load(config, environ={})
    assert (s.cookie_host_prefix, s.cookie_accept_unbound, s.max_header_bytes) == (True, False, 32768)
    assert (s.collect_body_timeout, s.rate_limit_page_per_minute, s.rate_limit_page_burst) == (5.0, 100.0, 50)
    assert s.declared_props == {"signup": frozenset({"plan", "step"}), "*": frozenset()}
    assert Settings().declared_props is None
    env = Settings.load(
        None, environ={"CONSENT_GATEWAY_MAX_HEADER_BYTES": "9000", "CONSENT_GATEWAY_COOKIE_HOST_PREFIX": "1"}
    )
    assert env.max_header_bytes == 9000 and env.consent_cookie_name == "__Host-cg_consent"
    with pytest.raises(SettingsError, match="cookie_secure"):
        Settings(cookie_host_prefix=True, cookie_secure=False)
    with pytest.raises(SettingsError, match="max_header_bytes"):
        Settings(max_header_bytes=10)
    with pytest.raises(SettingsError, match=r"event_props\.signup"):
        Settings.load(None, environ={}, event_props=(("signup", ("",)),))
