"""Exit codes, and the one line (or JSON object) each ClientError becomes.

0  success
1  error (the server refused the request, a corrupt auth file, a server failure)
2  usage error (click's own code: a bad option or argument)
3  not logged in, or the credentials or saved token were rejected (CREDENTIAL_REASONS; a
   wrong emailed code, EMAIL_CODE_INVALID, is 1: logging in again would not help)
4  the backend cannot be reached or did not answer in time
130  cancelled with Ctrl-C (`luman login` while it waits for the browser; 128 + SIGINT)
"""

from __future__ import annotations

import enum
import math
from typing import IO, Any

import click
import grpc

from luman.cli import output
from luman.client import (
    AuthFileError,
    ClientError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    RateLimited,
    ServerError,
    Unauthenticated,
    Unavailable,
)

# The UNAUTHENTICATED reasons that are about the caller's own credentials: the saved login
# (or token) was missing, malformed or rejected, or `luman login` got a wrong password. Only
# these mean exit 3 and "run `luman login`". An answer without a reason counts as one, as
# before reasons existed.
CREDENTIAL_REASONS = frozenset(
    {
        "",
        "NOT_LOGGED_IN",
        "INVALID_CREDENTIALS",
        "CREDENTIALS_MISSING",
        "CREDENTIALS_MALFORMED",
        "TOKEN_INVALID",
        "TOKEN_EXPIRED",
        "TOKEN_REVOKED",
        "REFRESH_TOKEN_REUSED",
    }
)

# What to do about FAILED_PRECONDITION EMAIL_NOT_VERIFIED (inviting, listing or answering
# invitations): the verification message holds the code.
VERIFY_NEXT_STEP = (
    "enter the code from the verification email with `luman account verify CODE` "
    "(`luman account verify-email` sends a new one)"
)


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    UNAUTHENTICATED = 3
    UNREACHABLE = 4
    CANCELLED = 130


class CliFailure(click.ClickException):
    """A failure shown as "error: <message>" (or a JSON object with --json) on stderr."""

    def __init__(
        self,
        message: str,
        exit_code: int = ExitCode.ERROR,
        *,
        as_json: bool = False,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        # click declares exit_code a ClassVar but reads it from the instance.
        self.exit_code = int(exit_code)  # type: ignore[misc]
        self.as_json = as_json
        self.details = details or {}

    def show(self, file: IO[Any] | None = None) -> None:
        output.error(self.message, as_json=self.as_json, exit_code=self.exit_code, **self.details)


def is_credential_failure(exc: ClientError) -> bool:
    """Whether `exc` says the caller's own credentials were missing or rejected (exit 3),
    rather than some other proof, such as an emailed code (exit 1)."""
    return isinstance(exc, Unauthenticated) and exc.reason in CREDENTIAL_REASONS


def exit_code_for(exc: ClientError) -> ExitCode:
    if is_credential_failure(exc):
        return ExitCode.UNAUTHENTICATED
    if isinstance(exc, Unavailable):
        return ExitCode.UNREACHABLE
    return ExitCode.ERROR


def describe(exc: ClientError, *, address: str, timeout: float) -> str:
    """The human message for `exc`, naming the next step where there is one."""
    relogin = "run `luman login`"
    if isinstance(exc, DeadlineExceeded):
        return f"the Luman backend at {address} did not answer within {timeout:g}s"
    if isinstance(exc, Unavailable):
        return f"cannot reach the Luman backend at {address} ({_unreachable_hint(exc.message)})"
    if is_credential_failure(exc):
        if exc.reason == "NOT_LOGGED_IN":
            return f"not logged in: {relogin}"
        if exc.reason == "INVALID_CREDENTIALS":
            return "invalid email or password"
        if exc.reason == "TOKEN_REVOKED":
            return f"your login has been revoked (logged out elsewhere?): {relogin}"
        return f"the saved login was rejected by {address} ({exc.message}): {relogin}"
    if isinstance(exc, AuthFileError):
        return f"{exc.message}; `luman login` replaces it, `luman logout` removes it"
    if isinstance(exc, InvalidArgument) and exc.field_violations:
        lines = [f"  {field}: {why}" for field, why in exc.field_violations.items()]
        return "\n".join(["invalid input:", *lines])
    if isinstance(exc, RateLimited):
        # The generic limiter's answer says nothing more than "too many"; the others
        # (INVITATION_RECENTLY_SENT, EMAIL_RECENTLY_SENT, a quota) say what was refused.
        what = exc.message if exc.reason not in ("", "RATE_LIMITED") else "too many requests"
        if exc.retry_after is not None:
            return f"{what}: try again in {math.ceil(exc.retry_after)}s"
        return f"{what}: try again later"
    if isinstance(exc, FailedPrecondition) and exc.reason == "EMAIL_NOT_VERIFIED":
        return f"{exc.message}: {VERIFY_NEXT_STEP}"
    if isinstance(exc, PermissionDenied):
        return f"permission denied: {exc.message}"
    if isinstance(exc, ServerError):
        if exc.code == grpc.StatusCode.UNIMPLEMENTED:
            return f"{address} does not answer this call: is it a Luman backend, and up to date?"
        return f"the Luman backend failed: {exc.message}"
    return exc.message


def _unreachable_hint(detail: str) -> str:
    # grpc's text is long and technical; recognise the causes a user can act on.
    lowered = detail.lower()
    if "handshake" in lowered or "certificate" in lowered:
        return "TLS handshake failed: untrusted certificate? see --ca-cert"
    if "dns resolution failed" in lowered:
        return "unknown host"
    return "is it running? set --api-url or LUMAN_API_URL"


def failure_for(exc: ClientError, *, address: str, timeout: float, as_json: bool) -> CliFailure:
    details: dict[str, Any] = {
        "code": exc.code.name if exc.code is not None else None,
        "reason": exc.reason or None,
    }
    if isinstance(exc, InvalidArgument):
        details["field_violations"] = exc.field_violations
    if isinstance(exc, RateLimited):
        details["retry_after"] = exc.retry_after
    return CliFailure(
        describe(exc, address=address, timeout=timeout),
        exit_code_for(exc),
        as_json=as_json,
        details=details,
    )
