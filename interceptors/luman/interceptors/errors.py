"""Errors that carry a gRPC status. Servicers, services and the interceptors raise these; only
ErrorMappingInterceptor turns them into a status. They live with the interceptors so that the
chain needs nothing from the server (the server imports them from here).

    DomainError(reason, message, metadata)
    ├── InvalidArgumentError(violations)   INVALID_ARGUMENT + google.rpc.BadRequest
    ├── UnauthenticatedError               UNAUTHENTICATED
    ├── PermissionDeniedError              PERMISSION_DENIED
    ├── NotFoundError                      NOT_FOUND
    ├── AlreadyExistsError                 ALREADY_EXISTS
    ├── FailedPreconditionError(violations) FAILED_PRECONDITION (+ google.rpc.PreconditionFailure)
    ├── AbortedError                       ABORTED (lost to a concurrent change: re-read)
    ├── ResourceExhaustedError(retry_after) RESOURCE_EXHAUSTED + google.rpc.RetryInfo
    │   └── OverloadedError                 (load shed: not counted by the rate limiter)
    └── UnavailableError(retry_after)       UNAVAILABLE + google.rpc.RetryInfo

Anything else becomes INTERNAL with the message "internal error".
"""

from __future__ import annotations

import dataclasses

import grpc


@dataclasses.dataclass(frozen=True)
class FieldViolation:
    """One bad field: `field` is the request field path, `description` says what is wrong."""

    field: str
    description: str


class DomainError(Exception):
    """Base of errors that carry a gRPC status and an UPPER_SNAKE `reason`."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, reason: str, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = metadata or {}


class InvalidArgumentError(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation], reason: str = "INVALID_ARGUMENT") -> None:
        fields = ", ".join(v.field for v in violations)
        detail = violations[0].description if len(violations) == 1 else "several fields are invalid"
        super().__init__(reason, f"invalid {fields}: {detail}")
        self.violations = violations

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgumentError:
        return cls([FieldViolation(field, description)])


class UnauthenticatedError(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFoundError(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(
        self,
        reason: str,
        message: str,
        metadata: dict[str, str] | None = None,
        violations: list[PreconditionViolation] | None = None,
    ) -> None:
        super().__init__(reason, message, metadata)
        self.violations = violations or []


@dataclasses.dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition, sent as a google.rpc.PreconditionFailure violation: `type` says
    which kind ("LAST_OWNER"), `subject` what it is about ("organizations/acme")."""

    type: str
    subject: str
    description: str


class AbortedError(DomainError):
    """A conflict with a concurrent change (AIP-154: a stale etag); re-read and try again."""

    code = grpc.StatusCode.ABORTED


class RetryableError(DomainError):
    """An error the client should retry after `retry_after_seconds` (sent as RetryInfo)."""

    def __init__(self, reason: str, message: str, retry_after_seconds: float) -> None:
        super().__init__(reason, message)
        self.retry_after_seconds = retry_after_seconds


class ResourceExhaustedError(RetryableError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class OverloadedError(ResourceExhaustedError):
    """The server shed the call before doing its work (load shedding): it did not happen, so
    the rate limiter gives back what it counted for it."""


class UnavailableError(RetryableError):
    """A dependency (the database) is away: nothing about the request is wrong."""

    code = grpc.StatusCode.UNAVAILABLE
