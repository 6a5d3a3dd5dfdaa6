"""Client errors. Every failed call raises one of these; a caller never sees a grpc.RpcError.

    ClientError(message, code, reason, domain, metadata)
    ├── Unauthenticated            UNAUTHENTICATED (wrong password, bad, expired or revoked token)
    │   ├── NotLoggedIn            no token to send (raised locally, nothing is contacted)
    │   └── InvalidGrant           device login: INVALID_GRANT (unknown or claimed device code)
    ├── PermissionDenied           PERMISSION_DENIED
    │   └── AccessDenied           device login: ACCESS_DENIED (denied, or approval withdrawn)
    ├── NotFound                   NOT_FOUND
    ├── AlreadyExists              ALREADY_EXISTS
    ├── InvalidArgument            INVALID_ARGUMENT; .field_violations {field: description}
    ├── FailedPrecondition         FAILED_PRECONDITION
    │   ├── AuthorizationPending   device login: AUTHORIZATION_PENDING (poll again)
    │   └── ExpiredToken           device login: EXPIRED_TOKEN (start again)
    ├── Aborted                    ABORTED: a concurrent change won (a stale etag); re-read
    ├── RateLimited                RESOURCE_EXHAUSTED; .retry_after seconds (or None)
    │   └── SlowDown               device login: SLOW_DOWN; .interval, the new poll interval
    ├── Unavailable                UNAVAILABLE: the backend cannot be reached
    │   └── DeadlineExceeded       DEADLINE_EXCEEDED: no answer within the call's deadline
    ├── ServerError                INTERNAL, UNKNOWN and every other status
    ├── AuthFileError              the saved auth file is unreadable, corrupt or not ours
    └── InvalidAddress             a backend address that is not host:port, grpc:// or grpcs://

`reason` and `domain` come from the google.rpc.ErrorInfo detail the server attaches
("ORGANIZATION_NOT_FOUND", "luman.organization.v1"); branch on them, not on message text.
The device-login poll's RFC 8628 answers get their own subclasses (chosen by status and
reason), so a caller tells them apart with `except`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping

import grpc
from google.protobuf import message as protobuf_message
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class ClientError(Exception):
    """Base of every error the client raises.

    Attributes:
        message: what went wrong, in words (the server's status message for RPC errors).
        code: the gRPC status code; None for errors raised locally.
        reason: the UPPER_SNAKE ErrorInfo reason, or "" when the server sent none.
        domain: the ErrorInfo domain, such as "luman.auth.v1".
        metadata: the ErrorInfo metadata.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})

    def __str__(self) -> str:
        return self.message


class Unauthenticated(ClientError):
    """The credentials were missing, wrong, expired or revoked."""


class NotLoggedIn(Unauthenticated):
    """No token is available for a call that needs one."""

    def __init__(self, message: str = "not logged in") -> None:
        super().__init__(message, reason="NOT_LOGGED_IN")


class PermissionDenied(ClientError):
    """The caller is known but may not do this."""


class NotFound(ClientError):
    """The resource does not exist, or the caller may not know that it does."""


class AlreadyExists(ClientError):
    """The resource (an email, a slug, a membership) already exists."""


class InvalidArgument(ClientError):
    """The request had bad fields; `field_violations` maps each field to what is wrong."""

    def __init__(
        self,
        message: str,
        *,
        field_violations: Mapping[str, str] | None = None,
        code: grpc.StatusCode | None = grpc.StatusCode.INVALID_ARGUMENT,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason, domain=domain, metadata=metadata)
        self.field_violations = dict(field_violations or {})


class FailedPrecondition(ClientError):
    """The system is not in a state that allows the call (removing the last owner, say)."""


class Aborted(ClientError):
    """A concurrent change won (AIP-154: the etag sent is stale); re-read and try again. For
    ETAG_MISMATCH, `metadata["etag"]` is the current etag."""


class RateLimited(ClientError):
    """Too many requests; `retry_after` is the seconds to wait, when the server said."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: grpc.StatusCode | None = grpc.StatusCode.RESOURCE_EXHAUSTED,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason, domain=domain, metadata=metadata)
        self.retry_after = retry_after


class Unavailable(ClientError):
    """The backend could not be reached (down, wrong address, network trouble)."""


class DeadlineExceeded(Unavailable):
    """The backend did not answer before the call's deadline."""


class ServerError(ClientError):
    """The server failed (INTERNAL) or answered with a status this client does not expect."""


class AuthFileError(ClientError):
    """The saved auth file cannot be read, is not valid JSON, or is not a Luman auth file."""


class InvalidAddress(ClientError, ValueError):
    """A backend address that cannot be parsed."""


class AuthorizationPending(FailedPrecondition):
    """Device login: nobody has decided yet; poll again after the interval."""


class ExpiredToken(FailedPrecondition):
    """Device login: the device code expired; start a new login."""


class AccessDenied(PermissionDenied):
    """Device login: the person denied it, or the approval was withdrawn."""


class InvalidGrant(Unauthenticated):
    """Device login: an unknown, another client's or already claimed device code."""


class SlowDown(RateLimited):
    """Device login: polled too fast. `interval` is the new poll interval in seconds (the
    metadata "interval", else RetryInfo, else None)."""

    def __init__(
        self,
        message: str,
        *,
        interval: int | None = None,
        retry_after: float | None = None,
        code: grpc.StatusCode | None = grpc.StatusCode.RESOURCE_EXHAUSTED,
        reason: str = "SLOW_DOWN",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            message,
            retry_after=retry_after,
            code=code,
            reason=reason,
            domain=domain,
            metadata=metadata,
        )
        self.interval = interval


_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


# RFC 8628 section 3.5's poll answers, by status and ErrorInfo reason.
_BY_REASON: dict[tuple[grpc.StatusCode, str], type[ClientError]] = {
    (grpc.StatusCode.FAILED_PRECONDITION, "AUTHORIZATION_PENDING"): AuthorizationPending,
    (grpc.StatusCode.FAILED_PRECONDITION, "EXPIRED_TOKEN"): ExpiredToken,
    (grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED"): AccessDenied,
    (grpc.StatusCode.UNAUTHENTICATED, "INVALID_GRANT"): InvalidGrant,
}


def from_rpc_error(exc: grpc.RpcError) -> ClientError:
    """Translate a failed call into the matching ClientError, with its rich details decoded."""
    if not isinstance(exc, grpc.Call):
        # Raised before a call existed (a closed channel, for instance): no status to read.
        return ServerError(str(exc) or "the call failed before reaching the server")
    code = exc.code()
    message = exc.details() or code.name.lower().replace("_", " ")
    info = error_details_pb2.ErrorInfo()
    violations: dict[str, str] = {}
    retry_after: float | None = None
    for detail in _details(exc):
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.update({v.field: v.description for v in bad.field_violations})
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(
            message,
            field_violations=violations,
            code=code,
            reason=reason,
            domain=domain,
            metadata=metadata,
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason == "SLOW_DOWN":
        return SlowDown(
            message,
            interval=_interval(metadata, retry_after),
            retry_after=retry_after,
            code=code,
            reason=reason,
            domain=domain,
            metadata=metadata,
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RateLimited(
            message,
            retry_after=_retry_after_header(exc) if retry_after is None else retry_after,
            code=code,
            reason=reason,
            domain=domain,
            metadata=metadata,
        )
    cls = _BY_REASON.get((code, reason)) or _BY_CODE.get(code, ServerError)
    return cls(message, code=code, reason=reason, domain=domain, metadata=metadata)


def _interval(metadata: Mapping[str, str], retry_after: float | None) -> int | None:
    with contextlib.suppress(ValueError):
        seconds = int(metadata.get("interval", ""))
        if seconds > 0:
            return seconds
    if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
        return math.ceil(retry_after)
    return None


def _details(call: grpc.Call) -> list[protobuf_message.Message]:
    try:
        status = rpc_status.from_call(call)
    except ValueError:
        # The details disagree with the status line (a proxy rewrote one): ignore them.
        return []
    return list(status.details) if status is not None else []


def _retry_after_header(call: grpc.Call) -> float | None:
    # The rate limiter also sends HTTP-style `retry-after: <seconds>`; honour it when a
    # proxy dropped the binary details.
    for key, value in call.trailing_metadata() or ():
        if key == "retry-after" and isinstance(value, str):
            with contextlib.suppress(ValueError):
                seconds = float(value)
                if math.isfinite(seconds) and seconds >= 0:
                    return seconds
    return None
