"""Client IP resolution: peer parsing, x-forwarded-for from trusted proxies only, the gateway
secret, and the per-call verification shared by rate limiting and token auth."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from grpc_interceptor.testing import dummy_client
from grpc_interceptor.testing.protos.dummy_pb2 import DummyRequest

from luman.interceptors import caller
from luman.interceptors.caller import (
    Caller,
    CallerResolver,
    CallRecord,
    CallScopedVerifier,
    CallScopeInterceptor,
    IPNetwork,
    call_scope,
    client_ip,
    current_call,
    forwarded_client,
    parse_trusted_proxies,
    peer_address,
    user_agent,
)
from luman.interceptors.errors import UnauthenticatedError
from luman.interceptors.principal import Credential, Principal
from tests.interceptors.dummy import serve

LOOPBACK = parse_trusted_proxies(["127.0.0.0/8", "::1"])
SECRET = "gateway-secret-for-tests"


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
        ("ipv4:not-an-ip:1", "unknown"),
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


def _seen_by_server(
    metadata: Sequence[tuple[str, str]],
    trusted: Sequence[IPNetwork] = (),
    secret: str | None = None,
) -> tuple[str, str]:
    """(client_ip, user_agent) as the server computes them for a call with `metadata`."""

    def describe(_: str, context: Any) -> str:  # dummy_client also serves grpc.aio
        return f"{client_ip(context, trusted, secret)}|{user_agent(context, secret)}"

    with dummy_client(special_cases={"who": describe}) as client:
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


def test_gateway_secret_vouches_for_forwarded_address_and_user_agent() -> None:
    metadata = [
        ("x-luman-gateway", SECRET),
        ("x-forwarded-for", "198.51.100.7"),
        ("x-luman-user-agent", "Mozilla/5.0 (X11)"),
    ]
    assert _seen_by_server(metadata, secret=SECRET) == ("198.51.100.7", "Mozilla/5.0 (X11)")


def test_wrong_gateway_secret_is_an_ordinary_call() -> None:
    metadata = [
        ("x-luman-gateway", SECRET + "x"),
        ("x-forwarded-for", "198.51.100.7"),
        ("x-luman-user-agent", "Mozilla/5.0 (X11)"),
    ]
    ip, agent = _seen_by_server(metadata, secret=SECRET)
    assert ip in ("127.0.0.1", "::1")
    assert "grpc-python" in agent


class _CountingVerifier:
    def __init__(self) -> None:
        self.calls = 0
        self.user_id = uuid.uuid4()

    def __call__(self, token: str) -> Principal:
        self.calls += 1
        if token != "good":
            raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
        return Principal(self.user_id, Credential.ACCESS_TOKEN, uuid.uuid4())


def test_call_scoped_verifier_verifies_once_per_call_and_records_the_user() -> None:
    counting = _CountingVerifier()
    verifier = CallScopedVerifier(counting)
    with call_scope(CallRecord(Caller("198.51.100.7", ""))) as record:
        assert verifier.verify("good").user_id == counting.user_id
        assert verifier.verify("good").user_id == counting.user_id
        assert record.user_id == counting.user_id
    assert counting.calls == 1
    assert current_call() is None


def test_call_scoped_verifier_remembers_a_rejection_too() -> None:
    counting = _CountingVerifier()
    verifier = CallScopedVerifier(counting)
    with call_scope(CallRecord(Caller("198.51.100.7", ""))) as record:
        for _ in range(2):
            with pytest.raises(UnauthenticatedError):
                verifier.verify("bad")
        assert record.user_id is None
    assert counting.calls == 1


def test_parsed_peers_are_remembered_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caller, "PEER_CACHE_SIZE", 4)
    resolver = CallerResolver()
    for port in range(1000, 1010):
        assert resolver._parse_peer(f"ipv4:203.0.113.9:{port}")[0] == "203.0.113.9"
        assert len(resolver._peers) <= 4
    assert resolver._parse_peer("ipv6:%5B::1%5D:5") == ("::1", ipaddress.ip_address("::1"))
    assert resolver._parse_peer("unix:/run/luman.sock") == ("unix", None)


def test_call_scope_interceptor_shares_one_verification_per_call() -> None:
    # With the request log off, this stage opens the record the verifier caches in.
    counting = _CountingVerifier()
    verifier = CallScopedVerifier(counting)
    seen: list[str] = []

    def twice(_: str, context: Any) -> str:
        seen.append(verifier.verify("good").user_id.hex)
        seen.append(verifier.verify("good").user_id.hex)
        record = current_call()
        assert record is not None
        return f"{record.caller.ip}|{record.user_id}"

    resolver = CallerResolver()
    with serve([CallScopeInterceptor(resolver)], {"twice": twice}) as client:
        ip, _, user = client.Execute(DummyRequest(input="twice")).output.partition("|")
    assert ip in ("127.0.0.1", "::1")
    assert user == str(counting.user_id)
    assert counting.calls == 1
    assert seen == [counting.user_id.hex] * 2
