"""Structured logs: one JSON object a line, each with the request id, nothing personal, no secrets.

The gateway sees IP addresses, consent ids and keys; none of them may reach a log line, because
logs are kept and copied far more freely than the ClickHouse tables. So:

- uvicorn's access log (it prints the client address) is replaced by :class:`RequestLogMiddleware`,
  which logs method, redacted path, status, duration and a request id, never the client, the
  query string, headers or cookies;
- :class:`JsonFormatter` masks every registered secret and URL password as a last line of defence,
  should a message or traceback ever carry one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.config
import re
import secrets
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from .asgi import ASGIApp, Message, Receive, Scope, Send
from .pseudonymize import redact_path

REQUEST_ID: ContextVar[str | None] = ContextVar("consent_gateway_request_id", default=None)
REQUEST_ID_HEADER = b"x-request-id"
# A request id from a proxy is kept only if it cannot smuggle anything into a log line.
_INCOMING_ID = re.compile(rb"^[A-Za-z0-9._\-]{8,64}$")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.IGNORECASE)
_MASK = "***"
# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged as a field.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}

# Secrets the formatter masks. Filled by register_secrets() when a gateway is built; process-wide
# because the formatter is built by logging.config, not by us.
_secrets: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Mask these values (signing keys, pseudonymisation key, passwords) in every log line."""
    _secrets.update(v for v in values if v and len(v) >= 8)


def scrub(text: str) -> str:
    """``text`` with registered secrets and URL passwords masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg, request_id, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
            "pid": record.process,  # tells the workers of one host apart
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in entry and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool | None) else scrub(str(value))
        if record.exc_info:
            entry["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Human-readable lines for local runs, with the same masking and the request id."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = scrub(super().format(record))
        if getattr(record, "method", None) and hasattr(record, "status"):
            # An access line: what happened, in the words docs/operations.md promises.
            fields = record.__dict__
            line += f" {fields['method']} {scrub(str(fields.get('path', '')))} {fields['status']}"
            if "duration_ms" in fields:
                line += f" {fields['duration_ms']} ms"
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        return f"{line} [request_id={request_id}]" if request_id else line


def log_config(level: str = "info", fmt: str = "json") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict; also handed to uvicorn so every worker process uses it."""
    formatter = "consent_gateway.logs.JsonFormatter" if fmt == "json" else "consent_gateway.logs.TextFormatter"
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": formatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "structured", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": upper},
        "loggers": {
            # uvicorn's own loggers propagate to the root handler so they come out as JSON too.
            "uvicorn": {"handlers": [], "level": upper, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": upper, "propagate": True},
            # Its access log prints client addresses: RequestLogMiddleware logs requests instead.
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
    }


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send every log record to stderr as one structured line at ``level``."""
    logging.config.dictConfig(log_config(level, fmt))


access_logger = logging.getLogger("consent_gateway.access")


class RequestLogMiddleware:
    """Give each HTTP request an id (echoed as ``X-Request-ID``) and log one line when it ends.

    The line names method, path (email- and phone-like segments redacted, no query string),
    status and duration; never the client address, headers or cookies.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __repr__(self) -> str:
        return f"RequestLogMiddleware({self.app!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope.get("headers", ())) or secrets.token_hex(8)
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 0
        logged_id = request_id

        async def send_with_id(message: Message) -> None:
            nonlocal status, logged_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                # The app's own id wins (it may already have logged it); ours fills the gap.
                own = _incoming_id(headers)
                if own is None:
                    headers = [h for h in headers if h[0].lower() != REQUEST_ID_HEADER]
                    headers.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
                    message["headers"] = headers
                else:
                    logged_id = own
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            failed = True
            access_logger.exception("request failed", extra=_request_fields(scope, status or 500, started, logged_id))
            raise
        finally:
            if not failed:
                level = logging.INFO if status < 500 else logging.WARNING
                access_logger.log(level, "request", extra=_request_fields(scope, status, started, logged_id))
            REQUEST_ID.reset(token)


def _incoming_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER and _INCOMING_ID.match(value):
            return value.decode("ascii")
    return None


def _request_fields(scope: Scope, status: int, started: float, request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "method": scope.get("method", ""),
        "path": redact_path(scope.get("path", "")),
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
