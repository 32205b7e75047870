"""Small helpers of the privacy suite: choices, cookies and the rows a gateway stored."""

from __future__ import annotations

import json
from typing import Any

from ..support import flush as wait_flushed
from ..support.driver import Driver, Reply

SAME = [(b"origin", b"http://site.example")]
JSON = [(b"content-type", b"application/json"), *SAME]
FORM = [(b"content-type", b"application/x-www-form-urlencoded"), *SAME]
BROWSER = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
VISITOR_IP = ("203.0.113.77", 40000)
# The wrapped site sets one cookie of every category (and one the registry does not know).
SITE_COOKIES = [
    (b"set-cookie", b"palette_session=s1; Path=/; HttpOnly; SameSite=Lax"),
    (b"set-cookie", b"ui_lang=ko; Path=/"),
    (b"set-cookie", b"_pa_id=a1; Path=/; HttpOnly"),
    (b"set-cookie", b"_mk_pixel=m1; Path=/"),
    (b"Set-Cookie", b"_mk_campaign=spring; Path=/"),
    (b"SET-COOKIE", b"mystery=1; Path=/"),
]
CATEGORY = {
    "palette_session": "necessary",
    "ui_lang": "preferences",
    "_pa_id": "analytics",
    "_mk_pixel": "marketing",
    "_mk_campaign": "marketing",
    "mystery": "preferences",
}


def choose(
    driver: Driver, body: dict[str, Any], *, extra: list[tuple[bytes, bytes]] | None = None
) -> tuple[Reply, bytes]:
    """POST a choice as the banner's script does; returns the reply and the consent cookie pair."""
    reply = driver.request(
        "POST", "/_consent/", headers=[*JSON, *(extra or [])], body=json.dumps(body).encode(), client=VISITOR_IP
    )
    assert reply.status == 200, reply.body
    return reply, consent_cookie(reply)


def consent_cookie(reply: Reply) -> bytes:
    for value in reply.header("set-cookie"):
        if value.startswith(b"cg_consent="):
            return value.split(b";", 1)[0]
    raise AssertionError("no consent cookie in the reply")


def set_cookie_names(reply: Reply) -> list[str]:
    """Names of cookies the reply sets (not the ones it deletes)."""
    out = []
    for value in reply.header("set-cookie"):
        if b"Max-Age=0" in value:
            continue
        out.append(value.split(b"=", 1)[0].decode())
    return out


def deleted_cookie_names(reply: Reply) -> set[str]:
    return {v.split(b"=", 1)[0].decode() for v in reply.header("set-cookie") if b"Max-Age=0" in v}


def page(
    driver: Driver,
    path: str = "/",
    *,
    cookie: bytes = b"",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Reply:
    hdrs = [(b"user-agent", BROWSER), *(headers or [])]
    if cookie:
        hdrs.append((b"cookie", cookie))
    reply = driver.request("GET", path, headers=hdrs, query=query, client=VISITOR_IP)
    assert reply.status == 200
    return reply


def flush(driver: Driver) -> None:
    wait_flushed(driver, timeout=30.0, what="the pipeline did not flush")
