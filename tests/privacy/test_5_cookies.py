"""5. 개인정보 자동수집 장치(쿠키)의 설치·운영 및 거부: cookies can be refused, on the server.

"이용자는 쿠키 설치에 대한 선택권을 가지고 있습니다 … 모든 쿠키의 저장을 거부할 수도 있습니다."
"단, 쿠키 설치를 거부하였을 경우 로그인이 필요한 일부 서비스 이용에 어려움이 있을 수 있습니다."
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .support import CATEGORY, SITE_COOKIES, choose, deleted_cookie_names, page, set_cookie_names

HTML = (b"content-type", b"text/html; charset=utf-8")


def test_5_cookies_can_be_refused(make_gateway: Callable[..., Any]) -> None:
    """reject_all: not one non-necessary Set-Cookie of the site passes, HttpOnly ones included."""
    driver, site = make_gateway()
    site.headers = [HTML, *SITE_COOKIES]
    reply, cookie = choose(driver, {"action": "reject_all"})
    assert reply.first("content-type") == "application/json"
    for path in ("/", "/students", "/login"):
        names = set_cookie_names(page(driver, path, cookie=cookie))
        assert names == ["palette_session"], names


def test_5_refusing_removes_cookies_already_set(make_gateway: Callable[..., Any]) -> None:
    """Cookies set before the refusal are deleted by the server (a script could not delete HttpOnly ones)."""
    driver, site = make_gateway()
    site.headers = [HTML, *SITE_COOKIES]
    _, given = choose(driver, {"action": "accept_all"})
    names = set_cookie_names(page(driver, "/", cookie=given))
    assert sorted(names) == sorted(CATEGORY)
    held = b"; ".join([given, b"palette_session=s1", b"ui_lang=ko", b"_pa_id=a1", b"_mk_pixel=m1", b"mystery=1"])
    reply, _ = choose(driver, {"action": "reject_all"}, extra=[(b"cookie", held)])
    assert deleted_cookie_names(reply) == {"ui_lang", "_pa_id", "_mk_pixel", "mystery"}


def test_5_before_any_choice_only_necessary_cookies_are_set(make_gateway: Callable[..., Any]) -> None:
    driver, site = make_gateway()
    site.headers = [HTML, *SITE_COOKIES]
    assert set_cookie_names(page(driver, "/")) == ["palette_session"]


def test_5_refusing_cookies_leaves_login_working(make_gateway: Callable[..., Any]) -> None:
    """Only 'some services that need login' may suffer: the necessary login cookie is never refused."""
    driver, site = make_gateway()
    site.headers = [HTML, *SITE_COOKIES]
    _, cookie = choose(driver, {"action": "save", "categories": []})
    assert "palette_session" in set_cookie_names(page(driver, "/login", cookie=cookie))
