"""TokenAuthInterceptor: the one place a bearer token is verified.

Every call that carries `authorization: Bearer <token>` has it verified here; a valid token
sets the call's principal (`current_principal()`, the per-user limit, the request log). A
non-public RPC without a valid token is refused with UNAUTHENTICATED. A public RPC runs either
way: a stale token sent along with Login must not stop the sign-in, so a token that fails
there only leaves the call anonymous.

Scopes: a non-public RPC names the scope it needs in the contract (`(luman.api.v1.access)`);
a valid token without it is refused here with PERMISSION_DENIED, reason INSUFFICIENT_SCOPE and
the scope in the ErrorInfo metadata. This only narrows: the servicer still applies the caller's
own permissions on every call. A method may need no scope (declared `no_scope`, any valid token);
a non-public method the scope table does not know at all (a service nobody listed) needs
UNKNOWN_METHOD_SCOPE: the check fails closed, never open. Infrastructure (health, reflection)
never looks at credentials.

Client certificates: a call without a bearer token whose TLS connection carried a verified
client certificate (`verify_certificate` set: TLS_CLIENT_CA_FILE) is authenticated by it, as the
service account it names; the same scope and service-method rules then apply.

Service accounts: a service token is accepted only by RPCs the contract opens to service
accounts (`service_accounts: true`); every other non-public RPC acts for a user and refuses it
with PERMISSION_DENIED, reason USER_REQUIRED (Principal.user_id refuses it too, as a backstop).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc

from luman.interceptors import call_context
from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor
from luman.interceptors.call_context import CallRecord
from luman.interceptors.errors import PermissionDeniedError, UnauthenticatedError
from luman.interceptors.malformed import MalformedRequest
from luman.interceptors.principal import Principal, UserRequiredError

Verifier = Callable[[str], Principal]
# A verified client certificate (PEM) -> the Principal it proves.
CertificateVerifier = Callable[[bytes], Principal]

# Where grpcio's auth_context() holds the peer's verified certificate (the gateway's too).
PEM_CERT_PROPERTY = "x509_pem_cert"

# What a non-public method missing from the scope table needs: a restricted token is refused
# rather than let through (a sign-in's access token, with every scope, still passes).
UNKNOWN_METHOD_SCOPE = "write"


class TokenAuthRefusedError(PermissionDeniedError):
    """A valid token that token authentication itself turned down. These refusals never reach
    the per-user stage, so the per-IP stage counts them (rate_limit.py), as it counts invalid
    tokens: a client cannot call for free by presenting a credential the method refuses."""


class InsufficientScopeError(TokenAuthRefusedError):
    """A valid token without the scope the method declares."""

    def __init__(self, scope: str) -> None:
        super().__init__(
            "INSUFFICIENT_SCOPE",
            f"this token lacks the {scope!r} scope this method needs",
            {"required_scope": scope},
        )


class ServiceCallerRefusedError(TokenAuthRefusedError, UserRequiredError):
    """A service account's token on a method that acts for a user: USER_REQUIRED, raised by
    token authentication (the same error raised deeper, by Principal.user_id, comes after the
    per-user stage counted the call, and is not a TokenAuthRefusedError)."""


def bearer_from(values: Sequence[str | bytes]) -> str:
    """The bearer token in a call's "authorization" values.

    Raises:
        UnauthenticatedError: CREDENTIALS_MISSING (no values) or CREDENTIALS_MALFORMED (several,
            binary, or not the Bearer scheme).
    """
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
    """Verifies the call's token and records the principal on the call.

    Args:
        verify: turns a token into a Principal or raises UnauthenticatedError.
        public_methods: full method names ("/pkg.Service/Method") that need no token.
        is_infrastructure: methods that never look at credentials (health, reflection).
        required_scopes: full method name -> the scope a token needs to call it, None for
            none; a non-public method missing here needs UNKNOWN_METHOD_SCOPE.
        service_methods: full method names a service account's token may call.
        verify_certificate: turns the connection's verified client certificate into a
            Principal, for calls without a bearer token; None: certificates are not read.
    """

    def __init__(
        self,
        verify: Verifier,
        public_methods: Collection[str],
        is_infrastructure: Callable[[str], bool] = lambda _: False,
        required_scopes: Mapping[str, str | None] | None = None,
        service_methods: Collection[str] = (),
        verify_certificate: CertificateVerifier | None = None,
    ) -> None:
        self._verify = verify
        self._verify_certificate = verify_certificate
        self._public = frozenset(public_methods)
        self._is_infrastructure = is_infrastructure
        self._scopes = dict(required_scopes or {})
        self._service_methods = frozenset(service_methods)

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        if self._is_infrastructure(method.name):
            return behavior
        public = method.name in self._public
        scope = None if public else self._scopes.get(method.name, UNKNOWN_METHOD_SCOPE)
        # A public RPC serves anyone; it never acts for the principal.
        services = public or method.name in self._service_methods
        if method.response_streaming:

            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                self._authenticate(
                    call_context.current_call(), context, request, public, scope, services
                )
                yield from behavior(request, context)

            return streamed

        def authenticated(request: Any, context: grpc.ServicerContext) -> Any:
            self._authenticate(
                call_context.current_call(), context, request, public, scope, services
            )
            return behavior(request, context)

        return authenticated

    def _authenticate(
        self,
        record: CallRecord,
        context: grpc.ServicerContext,
        request: Any,
        public: bool,
        scope: str | None,
        services: bool,
    ) -> None:
        if isinstance(request, MalformedRequest):
            return  # refused innermost; a request that cannot be read is not worth a token check
        if not record.authorization and public:
            # A public RPC serves anyone: a client certificate changes nothing there (a service
            # on MTLS_PORT must still reach GetJwks and CreateServiceToken).
            return
        try:
            if record.authorization:
                record.principal = self._verify(bearer_from(record.authorization))
            else:
                record.principal = self._certificate_principal(context)
        except UnauthenticatedError:
            if not public:
                raise
            return
        if record.principal.is_service and not services:
            raise ServiceCallerRefusedError()
        if scope is not None and not record.principal.has_scope(scope):
            raise InsufficientScopeError(scope)

    def _certificate_principal(self, context: grpc.ServicerContext) -> Principal:
        """The principal of the connection's verified client certificate, if certificates are
        read (TLS_CLIENT_CA_FILE) and one was presented.

        Raises:
            UnauthenticatedError: CREDENTIALS_MISSING (no certificate), or the verifier's.
        """
        if self._verify_certificate is not None:
            certificate = client_certificate(context)
            if certificate is not None:
                return self._verify_certificate(certificate)
        raise UnauthenticatedError("CREDENTIALS_MISSING", "missing authorization metadata")


def client_certificate(context: grpc.ServicerContext) -> bytes | None:
    """The connection's verified client certificate (PEM): on MTLS_PORT, or an HTTPS client's
    (the gateway's context gives it where grpcio does); None without one."""
    # grpcio gives each property as a list of values; its stubs say bytes.
    values: Iterable[bytes] = context.auth_context().get(PEM_CERT_PROPERTY, ())  # type: ignore[assignment]
    return next(iter(values), None)
