"""Each gRPC status, with its rich details, becomes the matching ClientError."""

from __future__ import annotations

import grpc
import pytest

from luman.client import (
    AlreadyExists,
    Client,
    ClientError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from luman.interceptors.errors import (
    AlreadyExistsError,
    DomainError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from tests.client.conftest import Behaviour, Scripted


def _raise(exc: Exception) -> Behaviour:
    def behaviour(context: grpc.ServicerContext) -> None:
        raise exc

    return behaviour


def _get_me_error(scripted: Scripted, timeout: float = 10.0) -> ClientError:
    client = Client(scripted.address, token="any", timeout=timeout)
    with client, pytest.raises(ClientError) as caught:
        client.auth.get_me()
    return caught.value


@pytest.mark.parametrize(
    ("domain_error", "expected", "code"),
    [
        (
            UnauthenticatedError("TOKEN_REVOKED", "token has been revoked"),
            Unauthenticated,
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (
            PermissionDeniedError("PERMISSION_DENIED", "admins cannot grant owner"),
            PermissionDenied,
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            NotFoundError("ORGANIZATION_NOT_FOUND", "organization not found", {"slug": "acme"}),
            NotFound,
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            AlreadyExistsError("SLUG_TAKEN", "slug taken"),
            AlreadyExists,
            grpc.StatusCode.ALREADY_EXISTS,
        ),
        (
            FailedPreconditionError("LAST_OWNER", "keep an owner"),
            FailedPrecondition,
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    ],
)
def test_status_becomes_its_error_class_with_reason_and_domain(
    scripted: Scripted,
    domain_error: DomainError,
    expected: type[ClientError],
    code: grpc.StatusCode,
) -> None:
    scripted.servicer.behaviour = _raise(domain_error)
    error = _get_me_error(scripted)
    assert type(error) is expected
    assert error.code == code
    assert error.reason == domain_error.reason
    assert error.domain == "luman.auth.v1"
    assert error.message == domain_error.message
    assert error.metadata == domain_error.metadata
    # The grpc error is kept as the cause for debugging, but is not what callers catch.
    assert isinstance(error.__cause__, grpc.RpcError)
    assert not isinstance(error, grpc.RpcError)


def test_invalid_argument_carries_every_field_violation(scripted: Scripted) -> None:
    scripted.servicer.behaviour = _raise(
        InvalidArgumentError(
            [
                FieldViolation("email", "must be a valid email address"),
                FieldViolation("name", "is required"),
            ]
        )
    )
    error = _get_me_error(scripted)
    assert isinstance(error, InvalidArgument)
    assert error.field_violations == {
        "email": "must be a valid email address",
        "name": "is required",
    }
    assert error.reason == "INVALID_ARGUMENT"


def test_rate_limited_carries_retry_info_delay(scripted: Scripted) -> None:
    scripted.servicer.behaviour = _raise(
        ResourceExhaustedError("RATE_LIMITED", "too many requests", 12.5)
    )
    error = _get_me_error(scripted)
    assert isinstance(error, RateLimited)
    assert error.retry_after == 12.5
    assert error.reason == "RATE_LIMITED"


def test_rate_limited_falls_back_to_retry_after_metadata(scripted: Scripted) -> None:
    def behaviour(context: grpc.ServicerContext) -> None:
        context.set_trailing_metadata((("retry-after", "7"),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")

    scripted.servicer.behaviour = behaviour
    error = _get_me_error(scripted)
    assert isinstance(error, RateLimited)
    assert error.retry_after == 7.0
    assert error.reason == ""


def test_resource_exhausted_without_a_delay_has_no_retry_after(scripted: Scripted) -> None:
    def behaviour(context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")

    scripted.servicer.behaviour = behaviour
    error = _get_me_error(scripted)
    assert isinstance(error, RateLimited)
    assert error.retry_after is None


def test_unexpected_server_exception_is_server_error_without_its_text(scripted: Scripted) -> None:
    scripted.servicer.behaviour = _raise(RuntimeError("SELECT secret FROM users"))
    error = _get_me_error(scripted)
    assert isinstance(error, ServerError)
    assert error.code == grpc.StatusCode.INTERNAL
    assert error.message == "internal error"


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNKNOWN],
)
def test_other_statuses_are_server_errors(scripted: Scripted, code: grpc.StatusCode) -> None:
    def behaviour(context: grpc.ServicerContext) -> None:
        context.abort(code, "odd")

    scripted.servicer.behaviour = behaviour
    error = _get_me_error(scripted)
    assert type(error) is ServerError
    assert error.code == code


def test_unavailable_status_is_unavailable(scripted: Scripted) -> None:
    def behaviour(context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAVAILABLE, "draining")

    scripted.servicer.behaviour = behaviour
    error = _get_me_error(scripted)
    assert type(error) is Unavailable


def test_no_answer_before_the_deadline_is_deadline_exceeded(scripted: Scripted) -> None:
    def behaviour(context: grpc.ServicerContext) -> None:
        # Hold the call until the test ends; the client's deadline fires first.
        scripted.servicer.released.wait()

    scripted.servicer.behaviour = behaviour
    error = _get_me_error(scripted, timeout=0.2)
    assert isinstance(error, DeadlineExceeded)
    assert isinstance(error, Unavailable)  # callers treating "unreachable" alike catch both


def test_nothing_listening_is_unavailable(closed_port: int) -> None:
    client = Client(f"127.0.0.1:{closed_port}", token="any")
    with client, pytest.raises(Unavailable) as caught:
        client.auth.get_me()
    assert type(caught.value) is Unavailable
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
