"""Client address resolution (client_address.py): peer parsing, x-forwarded-for from trusted
proxies only, the gateway secret, and the key an address is rate limited by."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from grpc_interceptor.testing.protos.dummy_pb2 import DummyRequest

from luman.interceptors import call_context
from luman.interceptors.client_address import (
    CallerResolver,
    IPNetwork,
    forwarded_client,
    limit_key,
    parse_trusted_proxies,
    peer_address,
)
from luman.interceptors.request_logging import RequestLoggingInterceptor
from tests.interceptors.dummy import serve

LOOPBACK = parse_trusted_proxies(["127.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("ipv4:203.0.113.9:51234", "203.0.113.9"),
        ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
        ("ipv6:[::1]:5678", "::1"),
        ("ipv6:%5B::1%5D:55732", "::1"),
        ("ipv6:[::ffff:198.51.100.4]:5678", "198.51.100.4"),
        ("unix:/run/luman.sock", "unix"),
        ("unix-abstract:luman", "unix"),
        ("something-else", "unknown"),
    ],
)
def test_peer_address_drops_the_port(peer: str, expected: str) -> None:
    assert peer_address(peer) == expected


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert forwarded_client("203.0.113.9", ["198.51.100.1"], LOOPBACK) == "203.0.113.9"
    assert forwarded_client("203.0.113.9", ["198.51.100.1"], ()) == "203.0.113.9"


def test_forwarded_for_takes_the_right_most_untrusted_address() -> None:
    proxies = parse_trusted_proxies(["10.0.0.0/8", "127.0.0.1"])
    # The client wrote "1.1.1.1" itself; 198.51.100.7 is who our first proxy saw.
    hops = ["1.1.1.1, 198.51.100.7", "10.0.0.3"]
    assert forwarded_client("127.0.0.1", hops, proxies) == "198.51.100.7"


def test_forwarded_for_through_trusted_proxies_only_is_the_left_most() -> None:
    proxies = parse_trusted_proxies(["10.0.0.0/8", "127.0.0.1"])
    assert forwarded_client("127.0.0.1", ["10.1.1.1, 10.0.0.3"], proxies) == "10.1.1.1"


def test_forwarded_for_garbage_stops_at_the_proxy_that_wrote_it() -> None:
    proxies = parse_trusted_proxies(["10.0.0.0/8", "127.0.0.1"])
    hops = ["198.51.100.7, not-an-ip, 10.0.0.3"]
    assert forwarded_client("127.0.0.1", hops, proxies) == "10.0.0.3"


def test_forwarded_for_accepts_ports_and_brackets() -> None:
    assert forwarded_client("127.0.0.1", ["198.51.100.7:4431"], LOOPBACK) == "198.51.100.7"
    assert forwarded_client("127.0.0.1", ["[2001:db8::1]:80"], LOOPBACK) == "2001:db8::1"


def test_parse_trusted_proxies_rejects_what_is_not_an_address() -> None:
    with pytest.raises(ValueError, match=r"'example\.com' is not an IP address or CIDR"):
        parse_trusted_proxies(["10.0.0.0/8", "example.com"])


# --- limit_key --------------------------------------------------------------------------------


def test_limit_key_counts_an_ipv4_address_alone() -> None:
    assert limit_key("198.51.100.4", 64) == "198.51.100.4"
    assert limit_key("198.51.100.4", 64) != limit_key("198.51.100.5", 64)


def test_limit_key_counts_an_ipv6_address_with_its_64_by_default() -> None:
    # One subscriber typically holds a whole /64: per-address budgets would be unlimited.
    first = limit_key("2001:db8:0:7::1", 64)
    assert first == "2001:db8:0:7::/64"
    assert limit_key("2001:db8:0:7:ffff:ffff:ffff:ffff", 64) == first
    assert limit_key("2001:db8:0:8::1", 64) != first


def test_limit_key_prefix_is_configurable() -> None:
    assert limit_key("2001:db8:aa:bb::1", 48) == "2001:db8:aa::/48"
    assert limit_key("2001:db8:aa:ff::1", 48) == limit_key("2001:db8:aa:bb::1", 48)
    assert limit_key("2001:db8:aa:bb12::1", 56) == "2001:db8:aa:bb00::/56"


def test_limit_key_with_prefix_128_counts_each_ipv6_address_alone() -> None:
    assert limit_key("2001:db8::1", 128) == "2001:db8::1"
    assert limit_key("2001:db8::2", 128) != limit_key("2001:db8::1", 128)


def test_limit_key_leaves_unix_and_unknown_peers_as_they_are() -> None:
    assert limit_key("unix", 64) == "unix"
    assert limit_key("unknown", 64) == "unknown"


@pytest.mark.parametrize("prefix", [64, 128])
def test_limit_key_counts_an_ipv4_mapped_address_as_its_ipv4_address(prefix: int) -> None:
    assert limit_key("::ffff:198.51.100.4", prefix) == limit_key("198.51.100.4", prefix)


# --- Through a server: what the call record says ----------------------------------------------


def _seen_by_server(
    metadata: Sequence[tuple[str, str]],
    trusted: Sequence[IPNetwork] = (),
) -> tuple[str, str]:
    """(client IP, user agent) of a call with `metadata`, as its call record holds them."""
    resolver = CallerResolver(trusted)

    def describe(_: str, context: Any) -> str:
        caller = call_context.current_call().caller
        return f"{caller.ip}|{caller.user_agent}"

    with serve([RequestLoggingInterceptor(None, resolver)], {"who": describe}) as client:
        response = client.Execute(DummyRequest(input="who"), metadata=tuple(metadata))
    ip, _, agent = str(response.output).partition("|")
    return ip, agent


def test_client_ip_is_the_peer_without_port() -> None:
    ip, agent = _seen_by_server([])
    assert ip in ("127.0.0.1", "::1")
    assert "grpc-python" in agent


def test_client_ip_ignores_forwarded_for_from_untrusted_peer() -> None:
    ip, _ = _seen_by_server([("x-forwarded-for", "198.51.100.7")])
    assert ip in ("127.0.0.1", "::1")


def test_client_ip_honours_forwarded_for_from_trusted_proxy() -> None:
    ip, _ = _seen_by_server([("x-forwarded-for", "1.1.1.1, 198.51.100.7")], trusted=LOOPBACK)
    assert ip == "198.51.100.7"
