"""Who is on the other end of a call: client IP and user agent, from the peer and the metadata.

The client IP is what rate limiting keys on and what the request log records, so it must not
be something the client can choose:

- `context.peer()` is "ipv4:1.2.3.4:5678", "ipv6:[::1]:5678" or "unix:…". The port is dropped:
  every new connection has a fresh one, so keying on it would give each a fresh bucket.
- `x-forwarded-for` is believed only when the peer is a trusted proxy (TRUSTED_PROXIES), and then
  only up to the right-most address that is not itself a trusted proxy: everything left of that
  was written by the client and can say anything.
- The HTTP gateway calls the methods in process: it resolves the HTTP client's address by the
  same rules (gateway/policy.py) and hands it over as the call's peer.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from luman.interceptors import metadata_keys

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_USER_AGENT_LENGTH = 256
UNIX_PEER = "unix"
UNKNOWN_PEER = "unknown"
# The metadata a Caller is made of.
CALLER_KEYS = frozenset((metadata_keys.FORWARDED_FOR, metadata_keys.USER_AGENT))


class Caller(NamedTuple):
    """The network identity of a call: `ip` is an address without port, or "unix"/"unknown"."""

    ip: str
    user_agent: str


def parse_trusted_proxies(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse IPs or CIDRs ("10.0.0.0/8", "192.0.2.7", "::1").

    Raises:
        ValueError: naming the first value that is neither.
    """
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR") from None
    return tuple(networks)


def peer_address(peer: str) -> str:
    """'ipv4:1.2.3.4:5678' -> '1.2.3.4'; 'ipv6:[::1]:5678' -> '::1'; 'unix:…' -> 'unix'.

    grpcio writes the peer as a URI, so the brackets may arrive as "%5B::1%5D".
    """
    scheme, _, rest = peer.partition(":")
    if scheme == "ipv4":
        # grpcio's core formats an IPv4 peer itself, always as a dotted quad: nothing to parse
        # (ipaddress took 3 µs of a GetMe's ~50 µs in the chain, every call).
        return rest.rpartition(":")[0] or rest
    rest = urllib.parse.unquote(rest)
    if scheme == "ipv6":
        host = rest[1 : rest.find("]")] if rest.startswith("[") else rest.rpartition(":")[0]
    elif scheme.startswith("unix"):
        return UNIX_PEER
    else:
        return UNKNOWN_PEER
    address = parse_address(host)
    return UNKNOWN_PEER if address is None else str(address)


def forwarded_client(
    peer_ip: str, forwarded_for: Sequence[str], trusted_proxies: Sequence[IPNetwork]
) -> str:
    """The client address, given the peer and its x-forwarded-for values (in header order).

    Walks from the right: each hop that is a trusted proxy vouches for the address to its
    left; the first untrusted one is the client. A trusted proxy that forwarded garbage is
    taken as the client itself rather than letting anything further left count.
    """
    peer = parse_address(peer_ip)
    if peer is None or not _is_trusted(peer, trusted_proxies):
        return peer_ip
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            break
        client = address
        if not _is_trusted(address, trusted_proxies):
            break
    return str(client)


def limit_key(ip: str, ipv6_prefix: int) -> str:
    """The rate-limit key of a client address: an IPv4 address counts alone, an IPv6 address
    with every address of its /`ipv6_prefix` network (one subscriber typically holds a whole
    /64, so per-address budgets would be unlimited). "unix" and "unknown" stay as they are."""
    address = parse_address(ip)
    if address is None:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and ipv6_prefix < 128:
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)


class CallerResolver:
    """Turns a call's peer and metadata into a Caller with the server's proxy settings."""

    def __init__(self, trusted_proxies: Sequence[IPNetwork] = ()) -> None:
        self._trusted = tuple(trusted_proxies)

    def from_headers(self, peer: str, found: Mapping[str, Sequence[str]]) -> Caller:
        """The Caller of a call from `peer` whose text metadata values are `found`."""
        ip = peer_address(peer)
        forwarded_for = found.get(metadata_keys.FORWARDED_FOR)
        if self._trusted and forwarded_for:
            ip = forwarded_client(ip, forwarded_for, self._trusted)
        return Caller(ip, _first(found, metadata_keys.USER_AGENT))


def _first(found: Mapping[str, Sequence[str]], key: str) -> str:
    values = found.get(key)
    return values[0][:MAX_USER_AGENT_LENGTH] if values else ""


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it ("1.2.3.4", "1.2.3.4:80", "[::1]:80", "::1"), or None."""
    text = text.strip()
    if text.startswith("["):  # "[::1]:8080" as some proxies write it
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # "1.2.3.4:8080"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; one client, one key.
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, trusted_proxies: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted_proxies)
