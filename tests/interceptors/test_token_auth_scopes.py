"""TokenAuthInterceptor and scopes: a token without the scope a method declares is refused
with PERMISSION_DENIED, reason INSUFFICIENT_SCOPE, before the method runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_interceptor.testing.protos.dummy_pb2 import DummyRequest
from grpc_interceptor.testing.protos.dummy_pb2_grpc import DummyServiceStub

from luman.interceptors.client_address import CallerResolver
from luman.interceptors.error_mapping import ErrorMappingInterceptor
from luman.interceptors.principal import Credential, Principal
from luman.interceptors.request_logging import RequestLoggingInterceptor
from luman.interceptors.token_auth import TokenAuthInterceptor
from tests.interceptors.dummy import EXECUTE, serve
from tests.support import rich_error

TOKENS = {
    "read-only": frozenset({"read"}),
    "read-write": frozenset({"read", "write"}),
    "every-scope": None,
}


def _verify(token: str) -> Principal:
    return Principal(uuid.uuid4(), Credential.CLI_TOKEN, uuid.uuid4(), TOKENS[token])


def _served(required: dict[str, str | None], public: tuple[str, ...] = ()) -> Any:
    stages = [
        RequestLoggingInterceptor(None, CallerResolver()),
        ErrorMappingInterceptor(),
        TokenAuthInterceptor(_verify, public, required_scopes=required),
    ]
    return serve(stages, {"ran": lambda _input, _context: "ran"})


@pytest.fixture
def write_method() -> Iterator[DummyServiceStub]:
    with _served({EXECUTE: "write"}) as client:
        yield client


@pytest.mark.parametrize("token", ["read-write", "every-scope"])
def test_a_token_with_the_scope_is_let_through(write_method: DummyServiceStub, token: str) -> None:
    response = write_method.Execute(
        DummyRequest(input="ran"), metadata=(("authorization", f"Bearer {token}"),)
    )
    assert response.output == "ran"


def test_a_token_without_the_scope_is_refused(write_method: DummyServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        write_method.Execute(
            DummyRequest(input="ran"), metadata=(("authorization", "Bearer read-only"),)
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")


def test_a_public_method_ignores_scopes() -> None:
    with _served({EXECUTE: "write"}, public=(EXECUTE,)) as client:
        response = client.Execute(
            DummyRequest(input="ran"), metadata=(("authorization", "Bearer read-only"),)
        )
    assert response.output == "ran"


def test_a_method_declared_without_scope_takes_any_valid_token() -> None:
    with _served({EXECUTE: None}) as client:
        response = client.Execute(
            DummyRequest(input="ran"), metadata=(("authorization", "Bearer read-only"),)
        )
        assert response.output == "ran"
        # Still authenticated: no token, no call.
        with pytest.raises(grpc.RpcError) as caught:
            client.Execute(DummyRequest(input="ran"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_method_missing_from_the_scope_table_fails_closed() -> None:
    # A service nobody listed: restricted tokens need write, rather than passing unchecked.
    with _served({}) as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.Execute(
                DummyRequest(input="ran"), metadata=(("authorization", "Bearer read-only"),)
            )
        response = client.Execute(
            DummyRequest(input="ran"), metadata=(("authorization", "Bearer read-write"),)
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
    assert response.output == "ran"
