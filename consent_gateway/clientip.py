"""The visitor's IP address: the connection's peer, or the hop before the gateway's own proxies."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from .asgi import Scope

logger = logging.getLogger("consent_gateway.clientip")


class TrustedProxies:
    """Reads ``X-Forwarded-For`` only when the connection comes from one of ``networks``.

    Without trusted proxies the peer address is the visitor's, whatever the header says: a
    visitor could otherwise send any address they like.
    """

    __slots__ = ("_networks", "_warned")

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in networks)
        self._warned = False

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._networks]!r})"

    def client_ip(self, scope: Scope, forwarded_for: str) -> str:
        """The visitor's address for a request with this ASGI scope and X-Forwarded-For value."""
        client = scope.get("client")
        ip: str = client[0] if client else ""
        if client and client[1] == 0 and forwarded_for and not self._warned:
            self._warn_if_rewritten(ip, forwarded_for)
        if not self._networks or not forwarded_for or not self.trusts(ip):
            return ip
        # Walk right to left past our own proxies; the first untrusted hop is the visitor.
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            if not self.trusts(hop):
                return hop
        return ip

    def _warn_if_rewritten(self, ip: str, forwarded_for: str) -> None:
        # uvicorn's own proxy handling (on unless --no-proxy-headers) replaces the peer by the last
        # X-Forwarded-For hop with port 0 before the gateway looks: the gateway cannot undo it.
        if forwarded_for.rpartition(",")[2].strip() == ip:
            self._warned = True
            logger.warning(
                "the server replaced the client address by the X-Forwarded-For one (port 0) before the "
                "gateway saw it, so proxies other than trusted_proxies are believed; run uvicorn with "
                "--no-proxy-headers (consent-gateway serve does) and list your proxies in trusted_proxies"
            )

    def trusts(self, ip: str) -> bool:
        """True when ``ip`` is an address inside one of the trusted proxy networks."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._networks)
