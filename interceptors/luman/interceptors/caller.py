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

The logging interceptor opens a `CallRecord` for each call; `CallScopedVerifier` fills in the
user when the token is verified, so the outermost interceptor learns who called after the inner
ones (which reset their own ContextVars) have returned.
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

import grpc

from luman.interceptors.principal import Principal
from luman.interceptors.token_auth import Verifier, bearer_token
from luman.server.errors import DomainError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

GATEWAY_HEADER = "x-luman-gateway"
FORWARDED_FOR_HEADER = "x-forwarded-for"
GATEWAY_USER_AGENT_HEADER = "x-luman-user-agent"
MAX_USER_AGENT_LENGTH = 256
UNIX_PEER = "unix"
UNKNOWN_PEER = "unknown"


@dataclasses.dataclass(frozen=True)
class Caller:
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
    peer = _parse_address(peer_ip)
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
    if not gateway_secret:
        return False
    values = _metadata(context, GATEWAY_HEADER)
    return len(values) == 1 and hmac.compare_digest(values[0].encode(), gateway_secret.encode())


def client_ip(
    context: grpc.ServicerContext,
    trusted_proxies: Sequence[IPNetwork],
    gateway_secret: str | None,
) -> str:
    """The client's IP address (no port), as rate limiting and the request log see it."""
    if is_gateway_call(context, gateway_secret):
        forwarded = _metadata(context, FORWARDED_FOR_HEADER)
        address = _parse_address(forwarded[-1]) if forwarded else None
        if address is not None:
            return str(address)
    return forwarded_client(
        peer_address(context.peer()),
        _metadata(context, FORWARDED_FOR_HEADER),
        trusted_proxies,
    )


def user_agent(context: grpc.ServicerContext, gateway_secret: str | None) -> str:
    header = "user-agent"
    if is_gateway_call(context, gateway_secret):
        header = GATEWAY_USER_AGENT_HEADER
    values = _metadata(context, header)
    return values[0][:MAX_USER_AGENT_LENGTH] if values else ""


class CallerResolver:
    """Turns a ServicerContext into a Caller with the server's proxy and gateway settings."""

    def __init__(
        self, trusted_proxies: Sequence[IPNetwork] = (), gateway_secret: str | None = None
    ) -> None:
        self._trusted = tuple(trusted_proxies)
        self._secret = gateway_secret

    def __call__(self, context: grpc.ServicerContext) -> Caller:
        record = current_call()
        if record is not None:
            return record.caller
        return Caller(
            ip=client_ip(context, self._trusted, self._secret),
            user_agent=user_agent(context, self._secret),
        )


@dataclasses.dataclass
class CallRecord:
    """Mutable per-call slot, opened by the outermost interceptor and read back when it ends."""

    caller: Caller
    user_id: uuid.UUID | None = None
    # (token, outcome) of the one verification this call did, shared by every interceptor.
    verified: tuple[str, Principal | DomainError] | None = None


_current_call: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "luman_call", default=None
)


def current_call() -> CallRecord | None:
    return _current_call.get()


@contextlib.contextmanager
def call_scope(record: CallRecord) -> Iterator[CallRecord]:
    # grpcio reuses worker threads; resetting keeps one call's record out of the next.
    token = _current_call.set(record)
    try:
        yield record
    finally:
        _current_call.reset(token)


class CallScopedVerifier:
    """Verifies a bearer token at most once per call and records the user on the CallRecord.

    Rate limiting needs the user before TokenAuthInterceptor runs (the default policy counts
    per user); sharing one verification keeps that at the cost of a single token check.
    """

    def __init__(self, verify: Verifier) -> None:
        self._verify = verify

    def verify(self, token: str) -> Principal:
        record = current_call()
        if record is None:
            return self._verify(token)
        if record.verified is None or record.verified[0] != token:
            try:
                outcome: Principal | DomainError = self._verify(token)
            except DomainError as exc:
                outcome = exc
            record.verified = (token, outcome)
            if isinstance(outcome, Principal):
                record.user_id = outcome.user_id
        outcome = record.verified[1]
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def principal_of(self, context: grpc.ServicerContext) -> Principal | None:
        """The verified caller, or None for a call without a (valid) token."""
        try:
            return self.verify(bearer_token(context))
        except DomainError:
            return None


def _metadata(context: grpc.ServicerContext, key: str) -> list[str]:
    return [v for k, v in context.invocation_metadata() or () if k == key and isinstance(v, str)]


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


ResolveCaller = Callable[[grpc.ServicerContext], Caller]
