"""TokenAuthInterceptor: "authorization: Bearer <token>" -> Principal, for every non-public RPC."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import grpc
from grpc_interceptor import ServerInterceptor

from luman.interceptors.principal import Principal, reset_principal, set_principal
from luman.server.errors import UnauthenticatedError

Verifier = Callable[[str], Principal]


def bearer_token(context: grpc.ServicerContext) -> str:
    """The bearer token on the call.

    Raises:
        UnauthenticatedError: no authorization metadata, or not the Bearer scheme.
    """
    values = [v for k, v in context.invocation_metadata() if k == "authorization"]
    if not values:
        raise UnauthenticatedError("CREDENTIALS_MISSING", "missing authorization metadata")
    value = values[0]
    if isinstance(value, bytes) or len(values) > 1:
        raise UnauthenticatedError(
            "CREDENTIALS_MALFORMED", "expected one 'authorization: Bearer <token>'"
        )
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError(
            "CREDENTIALS_MALFORMED", "expected 'authorization: Bearer <token>'"
        )
    return token.strip()


class TokenAuthInterceptor(ServerInterceptor):
    """Verifies the caller's token and exposes it as `current_principal()`.

    Args:
        verify: turns a token into a Principal or raises UnauthenticatedError.
        public_methods: full method names ("/pkg.Service/Method") that need no token.
        public_prefixes: method-name prefixes that need no token (health, reflection).
    """

    def __init__(
        self,
        verify: Verifier,
        public_methods: Collection[str],
        public_prefixes: tuple[str, ...] = (),
    ) -> None:
        self._verify = verify
        self._public = frozenset(public_methods)
        self._public_prefixes = public_prefixes

    def intercept(
        self,
        method: Callable[[Any, grpc.ServicerContext], Any],
        request_or_iterator: Any,
        context: grpc.ServicerContext,
        method_name: str,
    ) -> Any:
        if method_name in self._public or method_name.startswith(self._public_prefixes):
            return method(request_or_iterator, context)
        principal = self._verify(bearer_token(context))
        token = set_principal(principal)
        try:
            return method(request_or_iterator, context)
        finally:
            reset_principal(token)
