"""Channels to the backend: plaintext or TLS, with the bearer token attached to every call."""

from __future__ import annotations

import collections
from collections.abc import Callable
from importlib import metadata
from typing import Any

import grpc

from luman.client.address import Address, parse_address

TokenSource = Callable[[], str | None]


def _version() -> str:
    try:
        return metadata.version("luman")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"luman-python/{_version()}"


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """A ClientCallDetails with replaced metadata (grpc gives no public constructor)."""


class BearerTokenInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds "authorization: Bearer <token>" to each call while `token()` returns a token.

    An interceptor rather than call credentials because grpc only sends call credentials over
    TLS, and a local backend is plaintext.
    """

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        token = self._token()
        if token:
            metadata = [
                (k, v) for k, v in (client_call_details.metadata or ()) if k != "authorization"
            ]
            metadata.append(("authorization", f"Bearer {token}"))
            client_call_details = _CallDetails(
                client_call_details.method,
                client_call_details.timeout,
                tuple(metadata),
                client_call_details.credentials,
                client_call_details.wait_for_ready,
                client_call_details.compression,
            )
        return continuation(client_call_details, request)


def open_channel(
    address: str | Address,
    token: str | TokenSource | None = None,
    *,
    root_certificates: bytes | None = None,
    user_agent: str = USER_AGENT,
) -> grpc.Channel:
    """Open a channel to `address` that sends `token` (a string, or a callable returning one).

    Args:
        address: "host:port", "grpc://host:port" or "grpcs://host[:port]" (TLS).
        token: the bearer token; a callable is asked on every call, so it may change.
        root_certificates: PEM CA bundle for grpcs; None uses the system's trust store.
        user_agent: sent as the primary user agent, which the server logs.

    Raises:
        InvalidAddress: `address` cannot be parsed.
    """
    parsed = parse_address(address)
    options = [("grpc.primary_user_agent", user_agent)]
    if parsed.tls:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        channel = grpc.secure_channel(parsed.target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(parsed.target, options=options)
    source: TokenSource = token if callable(token) else (lambda: token)
    return grpc.intercept_channel(channel, BearerTokenInterceptor(source))
