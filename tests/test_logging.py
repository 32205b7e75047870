"""Structured logs: one JSON line per event with a request id, and no personal data or secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from consent_gateway.cli import DEMO_CONFIG
from consent_gateway.logs import JsonFormatter, RequestLogMiddleware, log_config, register_secrets, scrub
from tests.conftest import PSEUDONYM_KEY, SECRET
from tests.support import free_port, wait_healthy

CONSENT_GATEWAY = str(Path(sys.executable).parent / "consent-gateway")
VISITOR_IP = "203.0.113.77"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0 PrivateBuild/4242"
EMAIL = "kim.minsu@example.com"
PHONE = "010-1234-5678"
CLICKHOUSE_PASSWORD = "ch-password-that-must-not-leak"


def test_a_scenario_logs_no_ip_consent_id_token_or_secret(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONSENT_GATEWAY_")},
        "CONSENT_GATEWAY_SECRET_KEYS": SECRET,
        "CONSENT_GATEWAY_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "CONSENT_GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "CONSENT_GATEWAY_TRUSTED_PROXIES": "127.0.0.1",
        "CONSENT_GATEWAY_LOG_LEVEL": "debug",  # the most talkative level must still be clean
        "CONSENT_GATEWAY_LOG_FORMAT": "json",  # the demo's settings print text for people; operators get JSON
        "CONSENT_GATEWAY_FLUSH_INTERVAL": "0.1",
    }
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [CONSENT_GATEWAY, "serve", "consent_gateway.demo:create_demo_app", "--factory",
             "--config", str(DEMO_CONFIG), "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(f"{base}/_consent/healthz", proc, 120)
            headers = {"X-Forwarded-For": VISITOR_IP, "User-Agent": USER_AGENT}
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                # choose
                chosen = client.post("/_consent/", json={"action": "accept_all", "locale": "ko"},
                                     headers={"X-Request-ID": "proxy-req-0001"})
                assert chosen.status_code == 200
                assert chosen.headers["x-request-id"] == "proxy-req-0001"
                consent_id = chosen.json()["receipt"]["consent_id"]
                token = client.cookies["cg_consent"]
                # browse and collect, with personal data in paths, queries and referrers
                assert client.get(f"/?email={EMAIL}&utm_source=news&gclid=Cj0KCQiwZ_click").status_code == 200
                assert client.get(f"/students/{EMAIL}").status_code in (200, 404)
                assert client.get(f"/students/{PHONE}").status_code in (200, 404)
                collected = client.post("/_consent/collect", json=[
                    {"name": "pageview", "url": f"/portfolio?email={EMAIL}",
                     "referrer": f"https://mail.example.com/?to={EMAIL}"},
                    {"name": "signup", "url": "/trial", "props": {"phone": PHONE}},
                ])
                assert collected.status_code == 202
                assert client.get("/_consent/receipts").json()["consent_id"] == consent_id
                # errors
                bad_json = {"Content-Type": "application/json"}
                assert client.post("/_consent/", content=b"{not json", headers=bad_json).status_code == 400
                assert client.post("/_consent/", json={"action": "save", "categories": [EMAIL]}).status_code == 400
                smuggled = {"name": "pageview", "url": "/", "ip": VISITOR_IP}
                assert client.post("/_consent/collect", json=smuggled).status_code == 400
                assert client.post("/_consent/", json={"action": "accept_all"},
                                   headers={"Origin": "https://evil.example"}).status_code == 403
                assert client.get(f"/_consent/nope/{EMAIL}").status_code == 404
                png = {"Content-Type": "image/png"}
                assert client.post("/_consent/collect", content=b"x", headers=png).status_code == 415
                # withdraw
                withdrawn = client.post("/_consent/withdraw", json={})
                assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "unset"
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete: -15 is a clean stop.
    assert code in (0, -signal.SIGTERM)
    log = stderr_path.read_text("utf-8")
    lines = [line for line in log.splitlines() if line.strip()]

    # One JSON object a line, every line.
    entries = [json.loads(line) for line in lines]
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)
    access = [e for e in entries if e["logger"] == "consent_gateway.access"]
    assert len(access) >= 14
    assert all(len(e["request_id"]) >= 8 and isinstance(e["status"], int) for e in access)
    assert {e["status"] for e in access} >= {200, 202, 400, 403, 404, 415}
    assert any(e["request_id"] == "proxy-req-0001" and e["path"] == "/_consent/" for e in access)
    assert len({e["request_id"] for e in access}) == len(access)  # one id per request
    assert [e["path"] for e in access].count("/students/[redacted]") == 2  # email and phone segments
    assert not any("?" in e["path"] for e in access)  # never a query string
    # log_level = debug took effect: the writer reports each insert at that level
    assert any(e["level"] == "debug" and e["logger"] == "consent_gateway.pipeline" for e in entries)

    # Nothing personal, nothing secret.
    forbidden = {
        "visitor IP": VISITOR_IP,
        "visitor IP prefix": "203.0.113",
        "consent id": consent_id,
        "consent cookie (token)": token,
        "cookie signature": token.rsplit(".", 1)[-1],
        "signing key": SECRET,
        "pseudonymisation key": PSEUDONYM_KEY,
        "email": EMAIL,
        "phone": PHONE,
        "user agent": "PrivateBuild/4242",
        "click id": "Cj0KCQiwZ_click",
    }
    for what, value in forbidden.items():
        assert value not in log, f"the log shows the {what}"


def test_log_level_comes_from_settings(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONSENT_GATEWAY_")},
        "CONSENT_GATEWAY_SECRET_KEYS": SECRET,
        "CONSENT_GATEWAY_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "CONSENT_GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "CONSENT_GATEWAY_LOG_LEVEL": "warning",
    }
    port = free_port()
    proc = subprocess.Popen(
        [CONSENT_GATEWAY, "serve", "consent_gateway.demo:create_demo_app", "--factory", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/_consent/healthz", proc, 120)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    levels = {json.loads(line)["level"] for line in err.splitlines() if line.strip()}
    assert proc.returncode in (0, -signal.SIGTERM)
    assert levels <= {"warning", "error", "critical"}  # no info lines: not even startup or access


def test_invalid_log_settings_are_refused() -> None:
    from consent_gateway import Settings, SettingsError

    with pytest.raises(SettingsError, match="log_level"):
        Settings(log_level="verbose")
    with pytest.raises(SettingsError, match="log_format"):
        Settings(log_format="xml")


def _format(record_msg: str, *args: object, exc: BaseException | None = None) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("consent_gateway.test_logging")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc is not None:
            try:
                raise exc
            except BaseException:
                logger.exception(record_msg, *args)
        else:
            logger.warning(record_msg, *args)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("\n") == 1  # tracebacks included: still one line
    return dict(json.loads(text))


def test_formatter_masks_registered_secrets_and_url_passwords() -> None:
    register_secrets([SECRET, PSEUDONYM_KEY])
    entry = _format("connecting to %s with %s", f"http://gateway:{CLICKHOUSE_PASSWORD}@ch:8123", SECRET)
    assert CLICKHOUSE_PASSWORD not in entry["msg"] and SECRET not in str(entry["msg"])
    assert entry["msg"] == "connecting to http://gateway:***@ch:8123 with ***"
    failed = _format("insert failed", exc=RuntimeError(f"key {PSEUDONYM_KEY} rejected"))
    assert failed["exc_type"] == "RuntimeError"
    assert PSEUDONYM_KEY not in str(failed["exc"]) and "***" in str(failed["exc"])
    assert scrub("https://u:p%40ss@host/") == "https://u:***@host/"


def test_request_ids_from_proxies_are_kept_only_when_harmless() -> None:
    """A forwarded X-Request-ID is reused only if it is short and plain; otherwise a new one is made."""
    seen: list[str] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        from consent_gateway.logs import REQUEST_ID

        seen.append(str(REQUEST_ID.get()))
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    import asyncio

    middleware = RequestLogMiddleware(app)
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    for value in (b"good-id-12345678", b"bad id\n{\"level\":\"error\"}"):
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-request-id", value)]}
        asyncio.run(middleware(scope, receive, send))
    assert seen[0] == "good-id-12345678"
    assert seen[1] != "bad id" and "\n" not in seen[1] and len(seen[1]) == 16
    start = [m for m in sent if m["type"] == "http.response.start"]
    assert (b"x-request-id", b"good-id-12345678") in start[0]["headers"]  # type: ignore[operator]


def test_uvicorn_access_log_is_off_in_the_config() -> None:
    """uvicorn's access log prints client addresses; the config silences it for every worker."""
    config = log_config("info", "json")
    assert config["loggers"]["uvicorn.access"]["level"] == "CRITICAL"
    assert config["loggers"]["uvicorn.access"]["propagate"] is False


def _run_through_log_middleware(
    app: object, scope: dict[str, object]
) -> tuple[list[logging.LogRecord], list[dict[str, object]]]:
    """One request through RequestLogMiddleware: the access records logged and the messages sent."""
    import asyncio

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    access = logging.getLogger("consent_gateway.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    try:
        asyncio.run(RequestLogMiddleware(app)(scope, receive, send))
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    return records, sent


def test_the_text_access_line_shows_method_path_status_and_duration() -> None:
    """The terminal line promised by docs/operations.md: method, path without its query, status, duration."""
    from consent_gateway.logs import TextFormatter

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"no"})  # type: ignore[operator]

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/students/kim.minsu@example.com",
        "query_string": b"token=SECRET-IN-QUERY",
        "headers": [],
    }
    records, _ = _run_through_log_middleware(app, scope)
    assert len(records) == 1
    line = TextFormatter().format(records[0])
    assert " POST /students/" in line and " 404 " in line
    assert line.split(" 404 ", 1)[1].split(" ms", 1)[0].replace(".", "").isdigit()  # a duration in ms
    assert "SECRET-IN-QUERY" not in line and "token=" not in line and "?" not in line
    assert EMAIL not in line  # the path's email-like segment is redacted
    assert "[request_id=" in line


def test_an_app_set_request_id_is_kept_and_logged() -> None:
    """An app that sets its own X-Request-ID keeps it; the access line carries the same id."""

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        headers = [(b"x-request-id", b"app-made-id-0042")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-request-id", b"proxy-id-00000001")]}
    records, sent = _run_through_log_middleware(app, scope)
    headers = sent[0]["headers"]
    assert [v for n, v in headers if n == b"x-request-id"] == [b"app-made-id-0042"]  # type: ignore[union-attr]
    assert records[0].request_id == "app-made-id-0042"
    entry = json.loads(JsonFormatter().format(records[0]))
    assert entry["request_id"] == "app-made-id-0042" and entry["status"] == 200 and entry["method"] == "GET"
