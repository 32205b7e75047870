"""A real Django site with its admin behind the gateway, with the gateway's DEFAULT cookie settings.

No ``[cookies]`` registry: the well-known cookie catalogue alone must let Django's ``csrftoken`` and
``sessionid`` through for a visitor who refused everything, keep them on "reject all", and hold
back ``_ga`` until analytics is granted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consent_gateway import ConsentGateway, Settings

from .gateway_support import client_for, set_cookie_map
from .support import django_site

PASSWORD = django_site.PASSWORD
@pytest.fixture(scope="module")
def django_app() -> Any:
    """Django's ASGI app with the admin on sqlite and one superuser (configured once per process)."""
    return django_site.asgi_app()


@pytest.fixture
def gateway(django_app: Any, make_settings: Callable[..., Settings]) -> Iterator[ConsentGateway]:
    """The Django app behind a gateway with default cookie settings (the test fixture's registry removed)."""
    yield ConsentGateway(django_app, make_settings(cookie_registry=()))


def _choose(client: Any, action: str, categories: tuple[str, ...] = ()) -> Any:
    data: dict[str, Any] = {"action": action, "return_to": "/admin/"}
    if categories:
        data["categories"] = list(categories)
    response = client.post("/_consent/", data=data)
    assert response.status_code == 303, response.text
    return response


def _log_in(client: Any) -> Any:
    page = client.get("/admin/login/?next=/admin/")
    assert page.status_code == 200
    assert "csrftoken" in set_cookie_map(page), "Django's CSRF cookie was stripped"
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None, page.text[:500]
    form = {"csrfmiddlewaretoken": token.group(1), "username": "admin", "password": PASSWORD, "next": "/admin/"}
    return client.post("/admin/login/?next=/admin/", data=form)


def test_a_visitor_who_rejected_everything_can_log_in_to_the_admin(gateway: ConsentGateway) -> None:
    with client_for(gateway) as client:
        _choose(client, "reject_all")
        response = _log_in(client)
        assert response.status_code == 302, response.text[:500]
        assert response.headers["location"] == "/admin/"
        assert "sessionid" in set_cookie_map(response)
        assert "sessionid" in client.cookies
        home = client.get("/admin/")
        assert home.status_code == 200 and "Site administration" in home.text


def test_reject_all_keeps_the_login(gateway: ConsentGateway) -> None:
    with client_for(gateway) as client:
        _choose(client, "accept_all")
        assert _log_in(client).status_code == 302
        rejected = _choose(client, "reject_all")
        deleted = set(set_cookie_map(rejected)) - {"cg_consent"}
        assert not {"sessionid", "csrftoken"} & deleted, rejected.headers.get_list("set-cookie")
        assert {"sessionid", "csrftoken"} <= set(client.cookies)
        assert client.get("/admin/").status_code == 200  # still logged in


def test_without_the_catalogue_the_same_login_fails(django_app: Any, make_settings: Callable[..., Settings]) -> None:
    """The control: with only the (empty) registry, Django's cookies are preferences and get stripped."""
    gateway = ConsentGateway(django_app, make_settings(cookie_registry=(), cookie_catalogue=False))
    with client_for(gateway) as client:
        _choose(client, "reject_all")
        page = client.get("/admin/login/?next=/admin/")
        assert "csrftoken" not in set_cookie_map(page)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None
        form = {"csrfmiddlewaretoken": token.group(1), "username": "admin", "password": PASSWORD}
        assert client.post("/admin/login/", data=form).status_code == 403  # Django's CSRF failure


@pytest.mark.parametrize(
    ("action", "categories", "kept"),
    [("reject_all", (), False), ("save", ("preferences",), False), ("save", ("analytics",), True)],
)
def test_ga_waits_for_an_analytics_grant(
    gateway: ConsentGateway, action: str, categories: tuple[str, ...], kept: bool
) -> None:
    with client_for(gateway) as client:
        _choose(client, action, categories)
        response = client.get("/track/")
        assert response.status_code == 200
        names = set(set_cookie_map(response))
        assert ({"_ga", "_ga_4XJ2"} <= names) is kept
        assert ({"_ga", "_ga_4XJ2"} & names == set()) is not kept
