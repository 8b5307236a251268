"""Who a request comes from: the client's address, as the collectors and the per-address
limits see it.

Behind a proxy on another host every connection comes from the proxy. `trusted_proxies`
names the proxies whose `X-Forwarded-For` is believed: when the peer is one of them, the
client is the right-most address of the header that is not a trusted proxy (each proxy
appends the address it received the request from, so what a client writes itself sits to
its left and is ignored). A peer that is not trusted is the client, whatever it sends.

A limit counts an IPv6 client by its /64: one host gets a whole /64, and would otherwise
have 2^64 addresses to spread its attempts over.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> list[Network]:
    """`trusted_proxies`: addresses or CIDR blocks, separated by commas or spaces."""
    return [ipaddress.ip_network(part, strict=False) for part in text.replace(",", " ").split()]


def _ip(address: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:203.0.113.5 is 203.0.113.5
    return ip


def _trusted(ip: Address, trusted: list[Network]) -> bool:
    return any(ip in net for net in trusted)


def _forwarded(headers: Mapping[str, str]) -> list[str]:
    """The addresses of X-Forwarded-For, every occurrence of the header in order (a proxy
    may add its own header line rather than append to the client's)."""
    getlist = getattr(headers, "getlist", None)
    values: list[str] = (
        getlist("x-forwarded-for") if getlist else [headers.get("x-forwarded-for", "")]
    )
    return [a.strip() for value in values for a in value.split(",") if a.strip()]


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted: list[Network]
) -> str | None:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the last
    address of X-Forwarded-For that is not a trusted proxy (X-Real-IP without it); None
    when the peer is no IP address (a Unix socket, a test client)."""
    peer_ip = _ip(peer) if peer is not None else None
    if peer_ip is None:
        return None
    if not trusted or not _trusted(peer_ip, trusted):
        return str(peer_ip)
    forwarded = _forwarded(headers)
    for address in reversed(forwarded):
        ip = _ip(address)
        if ip is None:
            return str(peer_ip)  # junk where the nearest proxy wrote: believe nothing more
        if not _trusted(ip, trusted):
            return str(ip)
    real = _ip(headers.get("x-real-ip", ""))
    if real is not None:
        return str(real)
    first = _ip(forwarded[0]) if forwarded else None  # every hop a trusted proxy
    return str(first or peer_ip)


def limit_key(address: str) -> str:
    """What a per-address limit counts: an IPv4 address, or an IPv6 address's /64."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address if ip is None else str(ip)


class Peers:
    """client_address() of requests, with the `trusted_proxies` setting parsed once."""

    def __init__(self, trusted_proxies: str) -> None:
        self.trusted = parse_networks(trusted_proxies)

    def address(self, conn: HTTPConnection) -> str | None:
        """The client's IP address (None when the connection has none)."""
        peer = conn.client.host if conn.client else None
        return client_address(peer, conn.headers, self.trusted)

    def limit_key(self, conn: HTTPConnection) -> str:
        """The key of the client in per-address limits: its address (an IPv6 /64), else
        the peer as the server names it."""
        address = self.address(conn)
        if address is not None:
            return limit_key(address)
        return conn.client.host if conn.client else "?"
