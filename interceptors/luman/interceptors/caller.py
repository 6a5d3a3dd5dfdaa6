"""Who is on the other end of an RPC: client IP, user agent, and (once verified) the user.

The client IP is what rate limiting keys on and what the request log records, so it must not
be something the client can choose:

- `context.peer()` is "ipv4:1.2.3.4:5678", "ipv6:[::1]:5678" or "unix:…". The port is dropped:
  every new connection has a fresh one, so keying on it would give each a fresh bucket.
- `x-forwarded-for` is believed only when the peer is a trusted proxy (TRUSTED_PROXIES), and then
  only up to the right-most address that is not itself a trusted proxy: everything left of that
  was written by the client and can say anything.
- The in-process HTTP gateway calls over loopback, so its peer is always 127.0.0.1. It proves
  itself with `x-luman-gateway: <per-process secret>` and then its `x-forwarded-for` (the one
  browser address it resolved) and `x-luman-user-agent` are used as they are.

The logging interceptor (or `CallScopeInterceptor` when the request log is off) opens a
`CallRecord` for each call; `CallScopedVerifier` fills in the user when the token is verified,
so the outermost interceptor learns who called after the inner ones (which reset their own
ContextVars) have returned.

Per call this is on the hot path of every RPC, so the metadata is scanned once, and a peer
string (one per connection: it carries the client's port) is parsed once and remembered.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hmac
import ipaddress
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import grpc

from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor
from luman.interceptors.errors import DomainError
from luman.interceptors.principal import Principal
from luman.interceptors.token_auth import (
    Verifier,
    authorization_values,
    bearer_from,
    bearer_token,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

GATEWAY_HEADER = "x-luman-gateway"
FORWARDED_FOR_HEADER = "x-forwarded-for"
USER_AGENT_HEADER = "user-agent"
GATEWAY_USER_AGENT_HEADER = "x-luman-user-agent"
AUTHORIZATION_HEADER = "authorization"
# Read from the metadata in one pass per call (_call_headers).
_CALL_HEADERS = frozenset(
    (
        GATEWAY_HEADER,
        FORWARDED_FOR_HEADER,
        USER_AGENT_HEADER,
        GATEWAY_USER_AGENT_HEADER,
        AUTHORIZATION_HEADER,
    )
)
MAX_USER_AGENT_LENGTH = 256
UNIX_PEER = "unix"
UNKNOWN_PEER = "unknown"
# Parsed peer strings remembered; when full the memory is dropped and refilled.
PEER_CACHE_SIZE = 4096


class Caller(NamedTuple):
    """The network identity of a call: `ip` is an address without port, or "unix"/"unknown"."""

    ip: str
    user_agent: str


ResolveCaller = Callable[[grpc.ServicerContext], Caller]


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
    rest = urllib.parse.unquote(rest)
    if scheme == "ipv4":
        host = rest.rpartition(":")[0] or rest
    elif scheme == "ipv6":
        host = rest[1 : rest.find("]")] if rest.startswith("[") else rest.rpartition(":")[0]
    elif scheme.startswith("unix"):
        return UNIX_PEER
    else:
        return UNKNOWN_PEER
    address = _parse_address(host)
    return UNKNOWN_PEER if address is None else str(address)


def forwarded_client(
    peer_ip: str, forwarded_for: Sequence[str], trusted_proxies: Sequence[IPNetwork]
) -> str:
    """The client address, given the peer and its x-forwarded-for values (in header order).

    Walks from the right: each hop that is a trusted proxy vouches for the address to its
    left; the first untrusted one is the client. A trusted proxy that forwarded garbage is
    taken as the client itself rather than letting anything further left count.
    """
    return _forwarded_from(_parse_address(peer_ip), peer_ip, forwarded_for, trusted_proxies)


def _forwarded_from(
    peer: IPAddress | None,
    peer_ip: str,
    forwarded_for: Sequence[str],
    trusted_proxies: Sequence[IPNetwork],
) -> str:
    if peer is None or not _is_trusted(peer, trusted_proxies):
        return peer_ip
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        address = _parse_address(hop)
        if address is None:
            break
        client = address
        if not _is_trusted(address, trusted_proxies):
            break
    return str(client)


def is_gateway_call(context: grpc.ServicerContext, gateway_secret: str | None) -> bool:
    return _vouched(_call_headers(context), gateway_secret)


def client_ip(
    context: grpc.ServicerContext,
    trusted_proxies: Sequence[IPNetwork],
    gateway_secret: str | None,
) -> str:
    """The client's IP address (no port), as rate limiting and the request log see it."""
    return CallerResolver(trusted_proxies, gateway_secret).resolve(context).ip


def user_agent(context: grpc.ServicerContext, gateway_secret: str | None) -> str:
    return CallerResolver((), gateway_secret).resolve(context).user_agent


class CallerResolver:
    """Turns a ServicerContext into a Caller with the server's proxy and gateway settings."""

    def __init__(
        self, trusted_proxies: Sequence[IPNetwork] = (), gateway_secret: str | None = None
    ) -> None:
        self._trusted = tuple(trusted_proxies)
        self._secret = gateway_secret
        self._peers: dict[str, tuple[str, IPAddress | None]] = {}

    def __call__(self, context: grpc.ServicerContext) -> Caller:
        """The current call's Caller, resolved once per call by whoever opened its record."""
        record = _current_call.get()
        if record is not None:
            return record.caller
        return self.resolve(context)

    def resolve(self, context: grpc.ServicerContext) -> Caller:
        return self._caller(context, _call_headers(context))

    def open_record(self, context: grpc.ServicerContext) -> CallRecord:
        """A fresh CallRecord for the call: its Caller, and its authorization values read in
        the same pass over the metadata."""
        headers = _call_headers(context)
        return CallRecord(self._caller(context, headers), headers.get(AUTHORIZATION_HEADER, ()))

    def _caller(self, context: grpc.ServicerContext, headers: dict[str, list[str]]) -> Caller:
        agent_header = USER_AGENT_HEADER
        if GATEWAY_HEADER in headers and _vouched(headers, self._secret):
            agent_header = GATEWAY_USER_AGENT_HEADER
            forwarded = headers.get(FORWARDED_FOR_HEADER)
            address = _parse_address(forwarded[-1]) if forwarded else None
            if address is not None:
                return Caller(str(address), _user_agent(headers, agent_header))
        peer = context.peer()
        parsed = self._peers.get(peer)
        if parsed is None:
            parsed = self._parse_peer(peer)
        ip = parsed[0]
        if self._trusted and FORWARDED_FOR_HEADER in headers:
            ip = _forwarded_from(parsed[1], ip, headers[FORWARDED_FOR_HEADER], self._trusted)
        agents = headers.get(agent_header)
        return Caller(ip, agents[0][:MAX_USER_AGENT_LENGTH] if agents else "")

    def _parse_peer(self, peer: str) -> tuple[str, IPAddress | None]:
        ip = peer_address(peer)
        parsed = (ip, _parse_address(ip))
        if len(self._peers) >= PEER_CACHE_SIZE:
            self._peers.clear()
        self._peers[peer] = parsed
        return parsed


@dataclasses.dataclass(slots=True)
class CallRecord:
    """Mutable per-call slot, opened by the outermost interceptor and read back when it ends."""

    caller: Caller
    # The call's "authorization" metadata values; None when the record was not opened from
    # the call's metadata (CallScopedVerifier then reads them itself).
    authorization: Sequence[str | bytes] | None = None
    user_id: uuid.UUID | None = None
    # (token, outcome) of the one verification this call did, shared by every interceptor.
    verified: tuple[str, Principal | DomainError] | None = None
    # The outcome for the call's own "authorization" metadata (CallScopedVerifier.authenticate).
    authenticated: Principal | DomainError | None = None


_current_call: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "luman_call", default=None
)


def current_call() -> CallRecord | None:
    return _current_call.get()


# open_call(record) -> token makes `record` the current call's; close_call(token) when it ends.
# The ContextVar's own methods: the outermost interceptor calls them on every RPC.
open_call = _current_call.set
close_call = _current_call.reset


@contextlib.contextmanager
def call_scope(record: CallRecord) -> Iterator[CallRecord]:
    # grpcio reuses worker threads; resetting keeps one call's record out of the next.
    token = _current_call.set(record)
    try:
        yield record
    finally:
        _current_call.reset(token)


class CallScopeInterceptor(MethodInterceptor):
    """Opens each call's CallRecord: the outermost interceptor when the request log is off
    (RequestLoggingInterceptor does it otherwise)."""

    def __init__(self, resolver: CallerResolver) -> None:
        super().__init__()
        self._resolver = resolver

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        open_record = self._resolver.open_record
        if method.response_streaming:

            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                with call_scope(open_record(context)):
                    yield from behavior(request, context)

            return streamed

        def scoped(request: Any, context: grpc.ServicerContext) -> Any:
            token = _current_call.set(open_record(context))
            try:
                return behavior(request, context)
            finally:
                _current_call.reset(token)

        return scoped


class CallScopedVerifier:
    """Verifies a bearer token at most once per call and records the user on the CallRecord.

    Rate limiting needs the user before TokenAuthInterceptor runs (the default policy counts
    per user); sharing one verification keeps that at the cost of a single token check.
    """

    def __init__(self, verify: Verifier) -> None:
        self._verify = verify

    def verify(self, token: str) -> Principal:
        record = _current_call.get()
        if record is None:
            return self._verify(token)
        outcome = self._check(record, token)
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        """The principal of the call's own bearer token, checked at most once per call.

        Raises:
            DomainError: the token is missing, malformed or invalid (the same error each time).
        """
        record = _current_call.get()
        if record is None:
            return self._verify(bearer_token(context))
        outcome = record.authenticated
        if outcome is None:
            values = record.authorization
            if values is None:
                values = authorization_values(context)
            try:
                outcome = self._check(record, bearer_from(values))
            except DomainError as exc:  # no token, or not a bearer token
                outcome = exc
            record.authenticated = outcome
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def _check(self, record: CallRecord, token: str) -> Principal | DomainError:
        verified = record.verified
        if verified is None or verified[0] != token:
            try:
                outcome: Principal | DomainError = self._verify(token)
            except DomainError as exc:
                outcome = exc
            record.verified = verified = (token, outcome)
            if isinstance(outcome, Principal):
                record.user_id = outcome.user_id
        return verified[1]

    def principal_of(self, context: grpc.ServicerContext) -> Principal | None:
        """The verified caller, or None for a call without a (valid) token."""
        try:
            return self.authenticate(context)
        except DomainError:
            return None


def _call_headers(context: grpc.ServicerContext) -> dict[str, list[Any]]:
    """The values of the headers a Caller is made of (text only) and of "authorization" (any,
    so that a binary one is refused as malformed), in order, in one pass."""
    found: dict[str, list[Any]] = {}
    for key, value in context.invocation_metadata() or ():
        if key in _CALL_HEADERS and (isinstance(value, str) or key == AUTHORIZATION_HEADER):
            found.setdefault(key, []).append(value)
    return found


def _user_agent(headers: dict[str, list[str]], key: str) -> str:
    values = headers.get(key)
    return values[0][:MAX_USER_AGENT_LENGTH] if values else ""


def _vouched(headers: dict[str, list[str]], gateway_secret: str | None) -> bool:
    """Whether the call carries the gateway's secret (once), so its x-forwarded-for holds."""
    values = headers.get(GATEWAY_HEADER)
    if not gateway_secret or values is None or len(values) != 1:
        return False
    return hmac.compare_digest(values[0].encode(), gateway_secret.encode())


def _parse_address(text: str) -> IPAddress | None:
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
