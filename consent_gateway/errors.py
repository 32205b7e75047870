"""The package's exceptions, drawn in one place.

ConsentGatewayError
 ├── SettingsError        invalid configuration; names the key, the value and the fix
 ├── RequestError         a visitor's request that cannot be honoured; carries the HTTP status
 └── StoreError           ClickHouse could not be reached or refused a statement
"""

from __future__ import annotations


class ConsentGatewayError(Exception):
    """Base class of every error raised by consent-gateway."""


class SettingsError(ConsentGatewayError):
    """A setting has an invalid value."""

    def __init__(self, key: str, value: object, fix: str) -> None:
        self.key = key
        self.value = value
        self.fix = fix
        super().__init__(f"setting {key!r} = {value!r} is invalid: {fix}")


class RequestError(ConsentGatewayError):
    """A request that gets a 4xx answer; ``field`` names the offending part when there is one."""

    def __init__(self, message: str, *, status: int = 400, field: str | None = None) -> None:
        self.message = message
        self.status = status
        self.field = field
        super().__init__(message)

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class StoreError(ConsentGatewayError):
    """ClickHouse failed; the message says which statement and where."""
