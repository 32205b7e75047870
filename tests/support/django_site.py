"""One real Django site for every test that puts the gateway in front of Django.

Django is configured once per process, so the tests share one configuration: the admin on sqlite
with one superuser (the login tests), a page that sets ``csrftoken`` as a login form does, an empty
redirect, and a page that sets Google Analytics cookies. ``ConditionalGetMiddleware`` adds the
ETag whose handling the byte-for-byte comparison checks.
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path
from typing import Any

URLCONF = "cg_test_django_urls"
PASSWORD = "correct horse battery staple"
_DEFAULT_PAGE = "<!doctype html><html><head><title>t</title></head><body>page</body></html>"
# What "/" answers: the page of the latest asgi_app() call (the configuration itself is made once).
_page = [_DEFAULT_PAGE]


def asgi_app(page_html: str = _DEFAULT_PAGE) -> Any:
    """Django's ASGI application for the shared site, configured on first use; "/" answers ``page_html``."""
    import django
    from django.conf import settings as django_settings

    _page[0] = page_html
    if not django_settings.configured:
        db_dir = Path(tempfile.mkdtemp(prefix="cg-django-"))
        django_settings.configure(
            DEBUG=False,
            SECRET_KEY="django-test-secret-key-not-for-production-0123456789",
            ALLOWED_HOSTS=["*"],
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
                "django.middleware.http.ConditionalGetMiddleware",
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
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db_dir / "db.sqlite3")}},
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
            STATIC_URL="/static/",
            USE_TZ=True,
            PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],  # fast, test only
        )
        django.setup()
        _install_urls()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def _install_urls() -> None:
    from django.contrib import admin
    from django.http import HttpResponse, HttpResponseRedirect
    from django.middleware.csrf import get_token
    from django.urls import path

    def page(request: Any) -> Any:
        token = get_token(request)  # sets the csrftoken cookie, as a login form does
        return HttpResponse(_page[0].replace("<h1>Orders</h1>", f'<form><input name="t" value="{token[:4]}"></form>'))

    def redirect(request: Any) -> Any:
        return HttpResponseRedirect("/")

    def track(request: Any) -> Any:
        response = HttpResponse("<!doctype html><html><head><title>t</title></head><body>tracked</body></html>")
        response.set_cookie("_ga", "GA1.1.123.456", max_age=3600)
        response.set_cookie("_ga_4XJ2", "GS1.1.1", max_age=3600)
        return response

    urls = types.ModuleType(URLCONF)
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("", page),
        path("go", redirect),
        path("admin/", admin.site.urls),
        path("track/", track),
    ]
    sys.modules[URLCONF] = urls
