"""Set-Cookie and Cookie header handling: names, and the headers that delete cookies."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

_EXPIRED = "Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0"


def set_cookie_name(header_value: bytes | str) -> str:
    """The cookie name of a Set-Cookie header value, stripped of whitespace."""
    if isinstance(header_value, bytes):
        header_value = header_value.decode("latin-1")
    first = header_value.split(";", 1)[0]
    name, sep, _ = first.partition("=")
    # A Set-Cookie without '=' names a cookie with an empty name (RFC 6265 5.2); treat the whole
    # pair as the name so it is still classified, never passed through unchecked.
    # Only SP and HTAB are trimmed, as browsers do (RFC 6265 5.2): str.strip() would also drop
    # \xa0 or \x85 and classify "\xa0palette_session" as the necessary cookie it is not.
    return name.strip(" \t") if sep else first.strip(" \t")


def set_cookie_names(header_value: bytes | str) -> tuple[str, ...]:
    """Every name a Set-Cookie may be read back under: a pair without '=' is stored by browsers
    as a cookie with an empty name, and sent back as a bare token that servers read as a name.
    A nameless pair (``=_mk_d=1``) is stored with an empty name too and sent back as its value
    alone (``_mk_d=1``), which servers read as the cookie ``_mk_d``: that name counts as well."""
    if isinstance(header_value, bytes):
        header_value = header_value.decode("latin-1")
    first = header_value.split(";", 1)[0]
    name = set_cookie_name(header_value)
    if "=" not in first:
        return (name, "")
    if name:
        return (name,)
    value = first.partition("=")[2]
    return ("", value.partition("=")[0].strip(" \t"))


def request_cookie_names(cookie_header: str) -> list[str]:
    """Names in a request's Cookie header, in order, without values."""
    names = []
    for part in cookie_header.split(";"):
        name, sep, _ = part.partition("=")
        name = name.strip(" \t")
        if sep and name:
            names.append(name)
    return names


def expire_headers(names: Iterable[str], *, domain: str = "", secure: bool = False) -> list[bytes]:
    """Set-Cookie values that delete each named cookie (HttpOnly ones too: the server can)."""
    out = []
    for name in dict.fromkeys(names):
        parts = [f"{name}=", _EXPIRED, "Path=/"]
        if domain:
            parts.append(f"Domain={domain}")
        if secure:
            parts.append("Secure")
        out.append("; ".join(parts).encode("latin-1"))
        if domain:
            # A cookie set without Domain is host-only and needs a deletion without Domain too.
            out.append(f"{name}=; {_EXPIRED}; Path=/".encode("latin-1"))
    return out


@dataclass(frozen=True, slots=True)
class ConsentCookie:
    """How the signed consent cookie is set: its name, lifetime, domain and Secure flag."""

    name: str
    max_age: int
    domain: str = ""
    secure: bool = True
    _attributes: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = [f"Max-Age={self.max_age}", "Path=/", "HttpOnly", "SameSite=Lax"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if self.secure:
            parts.append("Secure")
        # The attributes are the same on every header: joined once here.
        object.__setattr__(self, "_attributes", "; ".join(parts))

    def header(self, value: str) -> bytes:
        """The Set-Cookie value that stores the signed ``value`` in the browser."""
        return f"{self.name}={value}; {self._attributes}".encode("latin-1")
