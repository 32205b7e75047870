"""A real Django site with its admin behind the gateway, with the gateway's DEFAULT cookie settings.

No ``[cookies]`` registry: the well-known cookie catalogue alone must let Django's ``csrftoken`` and
``sessionid`` through for a visitor who refused everything, keep them on "reject all", and hold
back ``_ga`` until analytics is granted.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import django
import pytest
from django.conf import settings as django_settings

from consent_gateway import ConsentGateway, Settings

from .gateway_support import client_for, set_cookie_map

PASSWORD = "correct horse battery staple"
URLCONF = "cg_test_django_urls"


def _track(request: Any) -> Any:
    from django.http import HttpResponse

    response = HttpResponse("<!doctype html><html><head><title>t</title></head><body>tracked</body></html>")
    response.set_cookie("_ga", "GA1.1.123.456", max_age=3600)
    response.set_cookie("_ga_4XJ2", "GS1.1.1", max_age=3600)
    return response


@pytest.fixture(scope="module")
def django_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Django's ASGI app with the admin on sqlite and one superuser (configured once per process)."""
    if not django_settings.configured:
        django_settings.configure(
            DEBUG=False,
            SECRET_KEY="django-test-secret-key-not-for-production-0123456789",
            ALLOWED_HOSTS=["testserver"],
            ROOT_URLCONF=URLCONF,
            INSTALLED_APPS=[
                "django.contrib.admin",
                "django.contrib.auth",
                "django.contrib.contenttypes",
                "django.contrib.sessions",
                "django.contrib.messages",
            ],
            MIDDLEWARE=[
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.middleware.common.CommonMiddleware",
                "django.middleware.csrf.CsrfViewMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "django.contrib.messages.middleware.MessageMiddleware",
            ],
            TEMPLATES=[
                {
                    "BACKEND": "django.template.backends.django.DjangoTemplates",
                    "APP_DIRS": True,
                    "OPTIONS": {
                        "context_processors": [
                            "django.template.context_processors.request",
                            "django.contrib.auth.context_processors.auth",
                            "django.contrib.messages.context_processors.messages",
                        ]
                    },
                }
            ],
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
                }
            },
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
            STATIC_URL="/static/",
            USE_TZ=True,
            PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],  # fast, test only
        )
        django.setup()
        from django.contrib import admin
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.urls import path

        urls = types.ModuleType(URLCONF)
        urls.urlpatterns = [path("admin/", admin.site.urls), path("track/", _track)]  # type: ignore[attr-defined]
        sys.modules[URLCONF] = urls
        call_command("migrate", verbosity=0, interactive=False)
        get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


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
