"""7. 기타사항 — 이용자의 권리: consent can be withdrawn at any time, as easily as it was given, and
"삭제의 경우 요청 즉시 개인정보를 삭제합니다" (deletion takes effect at once)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from consent_gateway.pipeline import journal as journal_format
from consent_gateway.store import Store

from .support import FORM, JSON, VISITOR_IP, choose, deleted_cookie_names, flush, page


def _journal_rows_of(data_dir: Any, visitor: int) -> tuple[int, int]:
    """(identified rows of ``visitor`` a replay would insert, tombstones for it) in the journal."""
    rows, tombstoned = 0, 0
    for directory in (data_dir / "journal").glob("*"):
        entries = [
            e for _, path in journal_format._segment_files(directory) for e in journal_format._read_entries(path)
        ]
        tombs = {int(e["v"]) for e, _ in entries if e["k"] == "t"}
        tombstoned += visitor in tombs
        for entry, lines in entries:
            if entry["k"] == "G" and visitor not in tombs:
                # The rows themselves, not only the erasure keys beside them.
                decoded = [json.loads(line) for line in lines[: entry["e"]]]
                rows += sum(
                    1
                    for r in decoded
                    if r[journal_format.IDENTIFIED] == 1 and r[journal_format.VISITOR] == visitor
                )
    return rows, tombstoned


def test_7_deletion_on_request_takes_effect_at_once(
    make_gateway: Callable[..., Any], make_settings: Callable[..., Any], store: Store
) -> None:
    driver, _ = make_gateway(flush_interval=60.0)  # nothing reaches ClickHouse unless flushed
    runtime = driver.app.runtime
    _, cookie = choose(driver, {"action": "accept_all"})
    consent_id = json.loads(driver.request("GET", "/_consent/receipts", headers=[(b"cookie", cookie)]).body)[
        "consent_id"
    ]
    visitor = runtime.rows.visitor_of(consent_id)
    for path in ("/stored-1", "/stored-2"):
        page(driver, path, cookie=cookie)
    flush(driver)  # these are in ClickHouse …
    for path in ("/queued-1", "/queued-2"):
        page(driver, path, cookie=cookie)  # … these still wait in the queue and journal
    collect = driver.request(
        "POST",
        "/_consent/collect",
        headers=[*JSON, (b"cookie", cookie)],
        body=b'{"name":"portfolio_view","url":"/queued-3"}',
        client=VISITOR_IP,
    )
    assert json.loads(collect.body)["kept"] == 1
    events = store.table("events")
    # two pages and the link row the choice wrote (it granted analytics): all erased below
    assert store.query_rows(f"SELECT count() FROM {events} WHERE visitor = {{v:UInt64}}", {"v": visitor}) == [(3,)]

    reply = driver.request(
        "POST", "/_consent/withdraw", headers=[*JSON, (b"cookie", cookie)], body=b"{}", client=VISITOR_IP
    )
    assert reply.status == 200
    assert json.loads(reply.body)["erased"] is True
    # At once: the answer came after the DELETE; no further flush or merge is needed.
    assert store.query_rows(
        f"SELECT count() FROM {events} WHERE identified = 1 AND visitor = {{v:UInt64}}", {"v": visitor}
    ) == [(0,)]
    assert _journal_rows_of(make_settings().data_dir, visitor)[0] == 0
    flush(driver)  # what was queued arrives without the identity
    assert store.query_rows(f"SELECT count() FROM {events} WHERE visitor = {{v:UInt64}}", {"v": visitor}) == [(0,)]
    assert store.query_rows(f"SELECT count() FROM {events} WHERE identified = 1") == [(0,)]
    # The consent cookie is gone too, and the receipts (proof of consent) remain.
    assert "cg_consent" in deleted_cookie_names(reply)
    methods = [
        r[0]
        for r in store.query_rows(
            f"SELECT method FROM {store.table('consent_receipts')} WHERE consent_id = {{c:String}} ORDER BY ts",
            {"c": consent_id},
        )
    ]
    assert methods == ["accept_all", "withdraw"]


def test_7_withdrawal_is_as_easy_as_giving_consent(make_gateway: Callable[..., Any]) -> None:
    """Same page, same kind of control, one POST without fields: as many steps as 'accept all'."""
    driver, _ = make_gateway()
    _, cookie = choose(driver, {"action": "accept_all"})
    settings_page = driver.request("GET", "/_consent/", headers=[(b"cookie", cookie)]).body.decode()
    forms = re.findall(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', settings_page, re.S)
    actions = {action: body for action, body in forms}
    assert set(actions) == {"/_consent/", "/_consent/withdraw"}, actions
    accept = re.search(r'<button([^>]*)value="accept_all"[^>]*>', actions["/_consent/"])
    withdraw = re.search(r"<button([^>]*)>", actions["/_consent/withdraw"])
    assert accept and withdraw
    classes = lambda attrs: set(re.search(r'class="([^"]*)"', attrs).group(1).split())  # noqa: E731
    assert "cg-button" in classes(accept.group(1)) and "cg-button" in classes(withdraw.group(1))
    assert "disabled" not in withdraw.group(1)
    # Giving consent takes one form POST; so does withdrawing it.
    reply = driver.request("POST", "/_consent/withdraw", headers=[*FORM, (b"cookie", cookie)], body=b"")
    assert reply.status == 303
    assert "cg_consent" in deleted_cookie_names(reply)
    after = driver.request("GET", "/_consent/state", headers=[(b"cookie", b"")])
    assert json.loads(after.body)["status"] == "unset"


def test_7_withdrawal_can_be_reached_from_every_page(make_gateway: Callable[..., Any]) -> None:
    """The banner's settings link (on every HTML page, also after a choice) opens the withdrawal page."""
    driver, _ = make_gateway()
    _, cookie = choose(driver, {"action": "accept_all"})
    body = page(driver, "/students", cookie=cookie).body.decode()
    assert 'href="/_consent/?return_to=' in body
