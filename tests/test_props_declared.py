"""Audit finding 8: free-text props on pseudonymised rows.

With ``[event_props]`` a pseudonymised row keeps only the keys the site declares for the event (the
rest are dropped and counted); the text that remains has emails and phone numbers redacted (a value
with nine digits or more is redacted whole). An identified row keeps its props as sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from consent_gateway import ConsentGateway, Settings
from consent_gateway.store import Store

from .conftest import SECRET
from .support.driver import client_for
from .support.flush import flush
from .support.site import sign_cookie, site_app

PROPS = {"plan": "pro", "name": "Bob Kim", "note": "call me on 010-1234-5678"}


def _stored_props(store: Store, consented: bool) -> list[dict[str, object]]:
    rows = store.query_rows(
        f"SELECT props FROM {store.table('events')} WHERE kind = 'event' AND name = 'portfolio_view'"
        f" AND identified = {1 if consented else 0}"
    )
    return [json.loads(r[0]) if r[0] else {} for r in rows]


def test_pseudonymised_rows_keep_only_declared_props(make_settings: Callable[..., Settings], store: Store) -> None:
    gateway = ConsentGateway(site_app(), make_settings(event_props=(("portfolio_view", ("plan", "note")),)))
    with client_for(gateway) as client:
        refused = client.post("/_consent/collect", json={"name": "portfolio_view", "props": PROPS})
        assert refused.status_code == 202 and refused.json()["pseudonymised"] == 1
        client.cookies.set("cg_consent", sign_cookie(SECRET))
        kept = client.post("/_consent/collect", json={"name": "portfolio_view", "props": PROPS})
        assert kept.status_code == 202 and kept.json()["kept"] == 1
        flush(client, gateway)
        metrics = client.get("/_consent/metrics").text
    assert _stored_props(store, consented=False) == [{"plan": "pro", "note": "[redacted]"}]
    assert _stored_props(store, consented=True) == [PROPS]
    assert "cg_pseudonymised_props_dropped_total 1.0" in metrics


def test_without_a_declaration_pseudonymised_props_are_redacted_not_cut(
    make_settings: Callable[..., Settings], store: Store
) -> None:
    gateway = ConsentGateway(site_app(), make_settings())
    with client_for(gateway) as client:
        client.post("/_consent/collect", json={"name": "portfolio_view", "props": {**PROPS, "mail": "bob@example.com"}})
        flush(client, gateway)
    [props] = _stored_props(store, consented=False)
    assert props["note"] == "[redacted]" and props["mail"] == "[redacted]" and props["plan"] == "pro"
    assert props["name"] == "Bob Kim"  # undeclared free text stays unless the site declares its props
