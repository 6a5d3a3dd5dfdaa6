"""TokenAuthInterceptor: "authorization: Bearer <token>" -> Principal, for every non-public RPC."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import grpc

from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor
from luman.interceptors.errors import UnauthenticatedError
from luman.interceptors.principal import Principal, reset_principal, set_principal

Verifier = Callable[[str], Principal]


def bearer_token(context: grpc.ServicerContext) -> str:
    """The bearer token on the call.

    Raises:
        UnauthenticatedError: no authorization metadata, or not the Bearer scheme.
    """
    return bearer_from(authorization_values(context))


def authorization_values(context: grpc.ServicerContext) -> list[str | bytes]:
    return [v for k, v in context.invocation_metadata() or () if k == "authorization"]


def bearer_from(values: Sequence[str | bytes]) -> str:
    """The bearer token in a call's "authorization" values (see bearer_token)."""
    if not values:
        raise UnauthenticatedError("CREDENTIALS_MISSING", "missing authorization metadata")
    value = values[0]
    if isinstance(value, bytes) or len(values) > 1:
        raise UnauthenticatedError(
            "CREDENTIALS_MALFORMED", "expected one 'authorization: Bearer <token>'"
        )
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthenticatedError(
            "CREDENTIALS_MALFORMED", "expected 'authorization: Bearer <token>'"
        )
    return token


class TokenAuthInterceptor(MethodInterceptor):
    """Verifies the caller's token and exposes it as `current_principal()`.

    Args:
        verify: turns a token into a Principal or raises UnauthenticatedError.
        public_methods: full method names ("/pkg.Service/Method") that need no token.
        public_prefixes: method-name prefixes that need no token (health, reflection).
        authenticate: the call's context -> Principal, in place of `verify(bearer_token(…))`;
            the server passes CallScopedVerifier.authenticate, which reuses the check that
            rate limiting already made for the call.
    """

    def __init__(
        self,
        verify: Verifier,
        public_methods: Collection[str],
        public_prefixes: tuple[str, ...] = (),
        *,
        authenticate: Callable[[grpc.ServicerContext], Principal] | None = None,
    ) -> None:
        super().__init__()
        self._authenticate = authenticate or (lambda context: verify(bearer_token(context)))
        self._public = frozenset(public_methods)
        self._public_prefixes = public_prefixes

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        if method.name in self._public or method.name.startswith(self._public_prefixes):
            return behavior
        authenticate = self._authenticate
        if method.response_streaming:

            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                # The principal must stay visible while grpcio iterates the responses.
                token = set_principal(authenticate(context))
                try:
                    yield from behavior(request, context)
                finally:
                    reset_principal(token)

            return streamed

        def authenticated(request: Any, context: grpc.ServicerContext) -> Any:
            token = set_principal(authenticate(context))
            try:
                return behavior(request, context)
            finally:
                reset_principal(token)

        return authenticated
