"""The visitor's IP address: the connection's peer, or the hop before the gateway's own proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .asgi import Scope


class TrustedProxies:
    """Reads ``X-Forwarded-For`` only when the connection comes from one of ``networks``.

    Without trusted proxies the peer address is the visitor's, whatever the header says: a
    visitor could otherwise send any address they like.
    """

    __slots__ = ("_networks",)

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._networks]!r})"

    def client_ip(self, scope: Scope, forwarded_for: str) -> str:
        """The visitor's address for a request with this ASGI scope and X-Forwarded-For value."""
        client = scope.get("client")
        ip: str = client[0] if client else ""
        if not self._networks or not forwarded_for or not self.trusts(ip):
            return ip
        # Walk right to left past our own proxies; the first untrusted hop is the visitor.
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            if not self.trusts(hop):
                return hop
        return ip

    def trusts(self, ip: str) -> bool:
        """True when ``ip`` is an address inside one of the trusted proxy networks."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._networks)
