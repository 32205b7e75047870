"""What a page's Content-Security-Policy asks of the elements the gateway adds to it."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

_NONCE = re.compile(r"'nonce-([A-Za-z0-9+/=_\-]{8,128})'")
_HASH = re.compile(r"'(sha256|sha384|sha512)-[A-Za-z0-9+/=_\-]+'")
# The directive a browser checks for each kind of element, most specific first.
_SCRIPT_DIRECTIVES = ("script-src-elem", "script-src", "default-src")
_STYLE_DIRECTIVES = ("style-src-elem", "style-src", "default-src")


@dataclass(frozen=True, slots=True)
class CspNeeds:
    """The nonce or hash algorithm scripts and stylesheets need to load under the page's policy."""

    script_nonce: str = ""
    style_nonce: str = ""
    script_hash: str = ""  # "sha256", "sha384" or "sha512" when the policy allows scripts by hash
    style_hash: str = ""

    def script_attrs(self, hashes: dict[str, str]) -> str:
        """Attributes for an external script tag (leading space included), ``hashes`` by algorithm."""
        return _attrs(self.script_nonce, self.script_hash, hashes)

    def style_attrs(self, hashes: dict[str, str]) -> str:
        """Attributes for a stylesheet link (leading space included), ``hashes`` by algorithm."""
        return _attrs(self.style_nonce, self.style_hash, hashes)


def _attrs(nonce: str, algorithm: str, hashes: dict[str, str]) -> str:
    out = f' nonce="{html.escape(nonce)}"' if nonce else ""
    if algorithm and algorithm in hashes:
        out += f' integrity="{algorithm}-{hashes[algorithm]}"'
    return out


def _directives(policy: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in policy.split(";"):
        name, _, value = part.strip().partition(" ")
        name = name.lower()
        if name and name not in found:  # the first of a repeated directive counts
            found[name] = value
    return found


def _effective(directives: dict[str, str], order: tuple[str, ...]) -> str | None:
    for name in order:
        if name in directives:
            return directives[name]
    return None


def csp_needs(headers: list[bytes]) -> CspNeeds:
    """Read every Content-Security-Policy header (each may hold several comma-separated policies)."""
    script_nonce = style_nonce = script_hash = style_hash = ""
    for header in headers:
        for policy in header.decode("latin-1").split(","):
            directives = _directives(policy)
            for order, kind in ((_SCRIPT_DIRECTIVES, "script"), (_STYLE_DIRECTIVES, "style")):
                sources = _effective(directives, order)
                if sources is None:
                    continue
                nonce = _NONCE.search(sources)
                digest = _HASH.search(sources)
                if kind == "script":
                    script_nonce = script_nonce or (nonce.group(1) if nonce else "")
                    script_hash = script_hash or (digest.group(1) if digest and not nonce else "")
                else:
                    style_nonce = style_nonce or (nonce.group(1) if nonce else "")
                    style_hash = style_hash or (digest.group(1) if digest and not nonce else "")
    return CspNeeds(script_nonce, style_nonce, script_hash, style_hash)
