"""TokenAuthInterceptor behind the logging stage that opens each call's record: the one place a
token is verified. Non-public methods need a valid token; on public ones a valid token sets the
principal and an invalid one leaves the call anonymous."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import grpc
import pytest
from grpc_interceptor.testing.protos.dummy_pb2 import DummyRequest
from grpc_interceptor.testing.protos.dummy_pb2_grpc import DummyServiceStub

from luman.interceptors.base import MethodInterceptor
from luman.interceptors.client_address import CallerResolver
from luman.interceptors.error_mapping import ErrorMappingInterceptor
from luman.interceptors.errors import UnavailableError
from luman.interceptors.principal import Principal, optional_principal
from luman.interceptors.rate_limit import (
    ClientRateLimitInterceptor,
    Policy,
    SlidingWindowLimiter,
    UserRateLimitInterceptor,
)
from luman.interceptors.request_logging import RequestLogEntry, RequestLoggingInterceptor
from luman.interceptors.token_auth import TokenAuthInterceptor
from tests.interceptors.dummy import EXECUTE, RecordingVerifier, serve
from tests.support import rich_error

USER_ID = uuid.uuid4()
ANONYMOUS = "anonymous"


def _who(_: str, context: Any) -> str:
    principal = optional_principal()
    return ANONYMOUS if principal is None else str(principal.user_id)


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@contextlib.contextmanager
def _served(
    verify: Callable[[str], Principal],
    public_methods: Collection[str] = (),
    *,
    is_infrastructure: Callable[[str], bool] = lambda _: False,
    entries: list[RequestLogEntry] | None = None,
) -> Iterator[DummyServiceStub]:
    sink = entries.append if entries is not None else None
    stages = [
        RequestLoggingInterceptor(sink, CallerResolver()),
        ErrorMappingInterceptor(),
        TokenAuthInterceptor(verify, public_methods, is_infrastructure),
    ]
    with serve(stages, {"who": _who}) as client:
        yield client


def _refusal(client: DummyServiceStub, metadata: Sequence[tuple[str, str]]) -> tuple[Any, str]:
    with pytest.raises(grpc.RpcError) as caught:
        client.Execute(DummyRequest(input="who"), metadata=tuple(metadata))
    error = rich_error(caught.value)
    return error.code, error.reason


def test_a_valid_token_sets_the_principal() -> None:
    entries: list[RequestLogEntry] = []
    with _served(RecordingVerifier(USER_ID), entries=entries) as client:
        assert client.Execute(DummyRequest(input="who"), metadata=_bearer("good")).output == str(
            USER_ID
        )
    assert [e.user_id for e in entries] == [USER_ID]


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "CREDENTIALS_MISSING"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "CREDENTIALS_MALFORMED"),
        ((("authorization", "Bearer "),), "CREDENTIALS_MALFORMED"),
        (
            (("authorization", "Bearer good"), ("authorization", "Bearer good")),
            "CREDENTIALS_MALFORMED",
        ),
        ((("authorization", "Bearer stale"),), "TOKEN_INVALID"),
    ],
    ids=["none", "not bearer", "empty bearer", "two values", "invalid"],
)
def test_a_non_public_method_without_a_valid_token_is_refused(
    metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    entries: list[RequestLogEntry] = []
    with _served(RecordingVerifier(USER_ID), entries=entries) as client:
        assert _refusal(client, metadata) == (grpc.StatusCode.UNAUTHENTICATED, reason)
    assert [(e.status, e.user_id) for e in entries] == [("UNAUTHENTICATED", None)]


def test_a_public_method_with_a_valid_token_sets_the_principal() -> None:
    entries: list[RequestLogEntry] = []
    verifier = RecordingVerifier(USER_ID)
    with _served(verifier, public_methods={EXECUTE}, entries=entries) as client:
        assert client.Execute(DummyRequest(input="who"), metadata=_bearer("good")).output == str(
            USER_ID
        )
    assert verifier.tokens == ["good"]
    assert [e.user_id for e in entries] == [USER_ID]


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer stale"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer good"), ("authorization", "Bearer good")),
    ],
    ids=["none", "invalid", "not bearer", "two values"],
)
def test_a_public_method_without_a_valid_token_runs_anonymously(
    metadata: tuple[tuple[str, str], ...],
) -> None:
    # A stale token sent along with a sign-in must not stop the sign-in.
    entries: list[RequestLogEntry] = []
    with _served(RecordingVerifier(USER_ID), public_methods={EXECUTE}, entries=entries) as client:
        assert client.Execute(DummyRequest(input="who"), metadata=metadata).output == ANONYMOUS
    assert [(e.status, e.user_id) for e in entries] == [("OK", None)]


def test_a_failing_verifier_on_a_public_method_is_not_taken_for_a_bad_token() -> None:
    # Only a rejected token leaves the call anonymous; a verifier that cannot answer (its
    # database is away) fails the call as it would on any other method.
    def unavailable(token: str) -> Principal:
        raise UnavailableError("DATABASE_UNAVAILABLE", "database unavailable", 1.0)

    with _served(unavailable, public_methods={EXECUTE}) as client:
        code, reason = _refusal(client, _bearer("good"))
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")


def test_infrastructure_methods_never_look_at_credentials() -> None:
    verifier = RecordingVerifier(USER_ID)
    with _served(verifier, is_infrastructure=lambda name: name == EXECUTE) as client:
        assert client.Execute(DummyRequest(input="who")).output == ANONYMOUS
        assert client.Execute(DummyRequest(input="who"), metadata=_bearer("good")).output == (
            ANONYMOUS
        )
    assert verifier.tokens == []


def test_a_token_is_verified_once_per_call_through_the_whole_chain() -> None:
    # Both rate-limit stages read what token authentication found; none verifies again.
    verifier = RecordingVerifier(USER_ID)
    stages: list[MethodInterceptor] = [
        RequestLoggingInterceptor(None, CallerResolver()),
        ErrorMappingInterceptor(),
        ClientRateLimitInterceptor(
            policy_of=lambda _: Policy.DEFAULT,
            limiters={Policy.DEFAULT: SlidingWindowLimiter(1000, 60.0, lambda: 0.0)},
        ),
        TokenAuthInterceptor(verifier, public_methods=()),
        UserRateLimitInterceptor(
            policy_of=lambda _: Policy.DEFAULT,
            limiter=SlidingWindowLimiter(1000, 60.0, lambda: 0.0),
        ),
    ]
    with serve(stages, {"who": _who}) as client:
        for _ in range(3):
            client.Execute(DummyRequest(input="who"), metadata=_bearer("good"))
        for _ in range(2):
            with pytest.raises(grpc.RpcError):
                client.Execute(DummyRequest(input="who"), metadata=_bearer("bad"))
    assert verifier.tokens == ["good"] * 3 + ["bad"] * 2
