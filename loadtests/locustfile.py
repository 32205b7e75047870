"""Locust scenarios of real visitor behaviour on the demo site behind the consent gateway.

    # the demo as `consent-gateway demo` serves it, without per-address rate limits (every simulated
    # visitor comes from 127.0.0.1), on its own data directory:
    CG_LOAD_DATA=./data-load .venv/bin/uvicorn --factory loadtests.apps:demo --port 8000 &
    .venv/bin/locust --headless -u 20 -r 10 -t 60s        # settings from [tool.locust] in pyproject.toml

``python -m loadtests.zero_loss`` does all of it (server, token, locust, the ClickHouse check).

Users (weights are relative):

- ``FirstVisit`` (3): no cookie yet; the page shows the banner and sets no analytics or marketing
  cookie; the banner's files and ``/state`` load; the visitor accepts all, rejects all or saves a
  custom choice (JSON ``POST /_consent/`` with a same-origin ``Origin``); then browses with the
  consent cookie, sends SPA events and maybe a conversion through ``/collect``.
- ``ReturningVisitor`` (6): has a consent cookie; browses, sends SPA page views in batches and now
  and then a marketing conversion.
- ``Withdrawal`` (1): gives consent, browses, withdraws (``POST /_consent/withdraw``) and gets the
  banner back.
- ``MarketingAnalyst`` (1, at most one): polls the analytics API (``/_analytics/api/v1/...``) with
  the Bearer token in ``CG_ANALYTICS_TOKEN``; skipped, with a message, when either is missing.

Every response is checked (status and body shape), not only counted. ``/collect`` answers are
checked against the consent given: marketing conversions are kept with marketing granted and
dropped without it; analytics events are kept or pseudonymised, never dropped.

Every event carries ``props.run`` (``CG_LOAD_RUN``) and a unique ``props.eid``; at the end the ids
acknowledged with 202 are written to ``CG_LOAD_EVENTS_OUT`` for ``loadtests.zero_loss`` to look up
in ClickHouse. ``CG_LOAD_TASK_RATE`` (tasks per second per user) turns on a fixed rate.
"""

from __future__ import annotations

import json
import logging
import os
import random
import string
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from locust import FastHttpUser, between, constant_throughput, events, task
from locust.exception import StopUser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # locust puts only loadtests/ on the path
from loadtests.servers import BROWSER_UA
from loadtests.zero_loss import Ledger

logger = logging.getLogger("loadtests")

PREFIX = "/_consent"
ANALYTICS = "/_analytics"
PAGES = ("/", "/students", "/portfolio", "/attendance", "/privacy")
ALL = ("necessary", "preferences", "analytics", "marketing")
SPA_EVENTS = ("pageview", "portfolio_view")  # analytics: kept or pseudonymised, never dropped
CONVERSIONS = ("signup", "trial_request")  # marketing: dropped unless marketing was granted
CAMPAIGN = "?utm_source=newsletter&utm_campaign=spring"
RUN = os.environ.get("CG_LOAD_RUN") or "run-" + "".join(random.choices(string.ascii_lowercase, k=8))


def _wait_time() -> Any:
    rate = os.environ.get("CG_LOAD_TASK_RATE")
    return constant_throughput(float(rate)) if rate else between(0.5, 2.0)


LEDGER = Ledger(RUN)


def _write_ledger(environment: Any, **_kwargs: Any) -> None:
    summary = LEDGER.summary()
    path = os.environ.get("CG_LOAD_EVENTS_OUT")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(summary, fh)
    logger.info(
        "events of run %s: sent %d, acknowledged %d (%d dropped by the policy), refused %d, failed %d",
        RUN, summary["sent"], summary["acknowledged"], summary["dropped_by_policy"], summary["refused_503"],
        summary["failed"],
    )


events.quitting.add_listener(_write_ledger)  # type: ignore[no-untyped-call]


# -- shared behaviour ----------------------------------------------------------------------------


def _set_cookies(r: Any) -> str:
    """Every Set-Cookie of a response, in one string."""
    return " ".join(v for k, v in r.headers.items() if k.lower() == "set-cookie")


def _json(r: Any) -> Any:
    """The response's JSON document, or None once the request is marked failed."""
    try:
        return r.json()
    except ValueError:
        r.failure(f"status {r.status_code}, not JSON")
        return None


class Visitor(FastHttpUser):
    """Browser-like behaviour shared by the visitor classes; not run by itself."""

    abstract = True
    wait_time = _wait_time()
    granted: tuple[str, ...] = ()
    identified: list[str]  # ids of events stored under this visitor's consent id (erased on withdrawal)

    def on_start(self) -> None:
        self.identified = []

    def _origin(self) -> str:
        parts = urlsplit(self.host or "")
        return f"{parts.scheme}://{parts.netloc}"

    def _headers(self, **extra: str) -> dict[str, str]:
        return {
            "User-Agent": BROWSER_UA,
            "Accept-Language": random.choice(("ko-KR,ko;q=0.9", "en-US,en;q=0.8")),
            **extra,
        }

    def forget(self) -> None:
        """A new browser: no cookies."""
        self.client.cookiejar.clear()
        self.granted = ()
        self.identified = []

    def first_page(self) -> None:
        """A page without consent: banner shown, no analytics or marketing cookie set."""
        with self.client.get(random.choice(PAGES), headers=self._headers(Accept="text/html"),
                             name="page (no consent)", catch_response=True) as r:
            body = r.text or ""
            cookies = _set_cookies(r)
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
            elif 'id="cg-banner"' not in body or 'data-cg-status="unset"' not in body:
                r.failure("the first visit did not show the banner")
            elif "_pa_id=" in cookies or "_mk_px=" in cookies:
                r.failure(f"an analytics or marketing cookie was set before consent: {cookies[:120]}")
        with self.client.get(f"{PREFIX}/static/banner.js", name=f"{PREFIX}/static/banner.js",
                             catch_response=True) as r:
            if r.status_code != 200 or "javascript" not in r.headers.get("content-type", ""):
                r.failure(f"status {r.status_code}, type {r.headers.get('content-type')}")
        with self.client.get(f"{PREFIX}/state", headers=self._headers(), name=f"{PREFIX}/state",
                             catch_response=True) as r:
            if (state := _json(r)) is None:
                return
            if r.status_code != 200 or state.get("status") != "unset" or not state.get("categories_info"):
                r.failure(f"status {r.status_code}, consent {state.get('status')!r}")

    def choose(self, action: str, categories: list[str] | None = None) -> None:
        payload: dict[str, Any] = {"action": action}
        if categories is not None:
            payload["categories"] = categories
        with self.client.post(f"{PREFIX}/", json=payload, headers=self._headers(Origin=self._origin()),
                              name=f"{PREFIX}/ {action}", catch_response=True) as r:
            if (answer := _json(r)) is None:
                return
            expected = {
                "accept_all": set(ALL),
                "reject_all": {"necessary"},
                "save": {"necessary", *(categories or [])},
            }[action]
            cookies = _set_cookies(r)
            if r.status_code != 200 or answer.get("status") != "given":
                r.failure(f"status {r.status_code}: {answer}")
            elif set(answer.get("categories", [])) != expected:
                r.failure(f"granted {answer.get('categories')}, expected {sorted(expected)}")
            elif "cg_consent=" not in cookies or not (answer.get("receipt") or {}).get("receipt_id"):
                r.failure("no consent cookie or no receipt")
            else:
                self.granted = tuple(sorted(expected))

    def browse(self) -> None:
        with self.client.get(random.choice(PAGES), headers=self._headers(Accept="text/html"),
                             name="page (consent given)", catch_response=True) as r:
            body = r.text or ""
            cookies = _set_cookies(r)
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
            elif 'data-cg-status="given"' not in body or 'id="cg-banner"' in body:
                r.failure("the consent cookie was not honoured: banner shown or status not given")
            elif "marketing" not in self.granted and "_mk_px=" in cookies:
                r.failure("a marketing cookie was set without marketing consent")

    def collect(self, names: list[str], name: str) -> None:
        events = [
            {
                "name": n,
                "url": random.choice(PAGES) + (CAMPAIGN if n in CONVERSIONS else ""),
                "referrer": "",
                "props": {"run": RUN, "eid": LEDGER.new_id(), "plan": "trial"},
            }
            for n in names
        ]
        marketing = "marketing" in self.granted
        drop = {i for i, e in enumerate(events) if e["name"] in CONVERSIONS and not marketing}
        body = events[0] if len(events) == 1 else events
        with self.client.post(f"{PREFIX}/collect", json=body, headers=self._headers(Origin=self._origin()),
                              name=name, catch_response=True) as r:
            kept = LEDGER.record(events, r.status_code, drop)
            if r.status_code == 503:
                r.failure("503: the gateway is busy (the events were not stored; a tracker retries)")
                return
            if (answer := _json(r)) is None:
                return
            if r.status_code != 202:
                r.failure(f"status {r.status_code}: {answer}")
            elif answer.get("accepted") != len(events) or answer.get("dropped") != len(drop):
                r.failure(f"{answer} for {len(events)} events of which {len(drop)} should be dropped")
            elif answer.get("kept", 0) + answer.get("pseudonymised", 0) != len(events) - len(drop):
                r.failure(f"{answer}: kept + pseudonymised does not add up")
            elif answer.get("kept") == len(kept):
                self.identified += kept
            elif answer.get("kept"):
                r.failure(f"{answer}: some but not all events kept under one consent")

    def spa_events(self) -> None:
        count = random.randint(1, 5)
        self.collect([random.choice(SPA_EVENTS) for _ in range(count)],
                     f"{PREFIX}/collect spa batch" if count > 1 else f"{PREFIX}/collect spa event")

    def conversion(self) -> None:
        self.collect([random.choice(CONVERSIONS)], f"{PREFIX}/collect conversion")


# -- the users -----------------------------------------------------------------------------------


class FirstVisit(Visitor):
    """Arrives without cookies, meets the banner, chooses, browses a little, sends events."""

    weight = 3

    @task
    def visit(self) -> None:
        self.forget()
        self.first_page()
        roll = random.random()
        if roll < 0.5:
            self.choose("accept_all")
        elif roll < 0.8:
            self.choose("reject_all")
        else:
            self.choose("save", random.sample(["preferences", "analytics", "marketing"], k=random.randint(0, 3)))
        if not self.granted:
            return
        for _ in range(random.randint(1, 3)):
            self.browse()
        self.spa_events()
        if random.random() < 0.3:
            self.conversion()


class ReturningVisitor(Visitor):
    """Comes back with a consent cookie and browses."""

    weight = 6

    def on_start(self) -> None:
        super().on_start()
        self.choose(random.choice(("accept_all", "accept_all", "reject_all")))

    @task(6)
    def page(self) -> None:
        self.browse()

    @task(3)
    def spa(self) -> None:
        self.spa_events()

    @task(1)
    def convert(self) -> None:
        self.conversion()


class Withdrawal(Visitor):
    """Gives consent, later withdraws it: the cookies go and the banner comes back."""

    weight = 1

    @task
    def give_and_withdraw(self) -> None:
        self.forget()
        self.choose("accept_all")
        self.browse()
        self.spa_events()
        with self.client.post(f"{PREFIX}/withdraw", json={}, headers=self._headers(Origin=self._origin()),
                              name=f"{PREFIX}/withdraw", catch_response=True) as r:
            if (answer := _json(r)) is None:
                return
            cookies = _set_cookies(r)
            if r.status_code != 200 or answer.get("status") != "unset":
                r.failure(f"status {r.status_code}: {answer}")
            elif "cg_consent=" not in cookies or "Max-Age=0" not in cookies:
                r.failure("the consent cookie was not expired")
            elif answer.get("erased") is not True:
                r.failure(f"the identifiable rows were not erased: {answer}")
            else:
                LEDGER.erased(self.identified)
        self.granted = ()
        with self.client.get("/", headers=self._headers(Accept="text/html"), name="page (after withdrawal)",
                             catch_response=True) as r:
            if r.status_code != 200 or 'id="cg-banner"' not in (r.text or ""):
                r.failure("the banner did not come back after withdrawal")


class MarketingAnalyst(FastHttpUser):
    """Polls the analytics API with a Bearer token (``CG_ANALYTICS_TOKEN``)."""

    weight = 1
    fixed_count = 1
    wait_time = between(2, 5)
    QUERIES = (
        ("aggregate", "period=7d", "aggregate"),
        ("timeseries", "period=7d&interval=day", "timeseries"),
        ("breakdown", "period=7d&dimension=page&limit=10", "breakdown"),
        ("consent-rates", "period=30d", "consent-rates"),
    )

    def on_start(self) -> None:
        token = os.environ.get("CG_ANALYTICS_TOKEN", "")
        r = self.client.get(f"{ANALYTICS}/healthz", name=f"{ANALYTICS}/healthz (probe)")
        if r.status_code != 200:
            logger.warning("MarketingAnalyst skipped: no analytics API at %s%s/ (status %s)",
                           self.host, ANALYTICS, r.status_code)
            raise StopUser()
        if not token:
            logger.warning("MarketingAnalyst skipped: set CG_ANALYTICS_TOKEN "
                           "(consent-gateway keys create NAME --data DIR prints one)")
            raise StopUser()
        self.auth = {"Authorization": f"Bearer {token}"}

    @task
    def poll(self) -> None:
        endpoint, query, _ = random.choice(self.QUERIES)
        with self.client.get(f"{ANALYTICS}/api/v1/{endpoint}?{query}", headers=self.auth,
                             name=f"{ANALYTICS}/api/v1/{endpoint}", catch_response=True) as r:
            if (answer := _json(r)) is None:
                return
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {answer}")
            elif not isinstance(answer, dict) or not answer:
                r.failure(f"unexpected body {str(answer)[:120]}")
