"""The per-call record (call_context.py): opened by the outermost stage from the call's peer and
metadata, visible to the stages inside and the servicer for the call only."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import grpc
import pytest
from grpc_interceptor.testing.protos.dummy_pb2 import DummyRequest

from luman.interceptors import call_context
from luman.interceptors.call_context import CallRecord
from luman.interceptors.client_address import Caller, CallerResolver
from luman.interceptors.error_mapping import ErrorMappingInterceptor
from luman.interceptors.errors import UnauthenticatedError
from luman.interceptors.principal import (
    Credential,
    Principal,
    current_principal,
    optional_principal,
)
from luman.interceptors.request_logging import RequestLoggingInterceptor
from luman.interceptors.token_auth import TokenAuthInterceptor
from tests.interceptors.dummy import serve
from tests.support import rich_error


def _principal() -> Principal:
    return Principal(uuid.uuid4(), Credential.ACCESS_TOKEN, uuid.uuid4())


def _refuse(token: str) -> Principal:
    raise UnauthenticatedError("TOKEN_INVALID", "invalid token")


def test_outside_a_call_there_is_no_record_and_no_principal() -> None:
    with pytest.raises(RuntimeError, match="RequestLoggingInterceptor"):
        call_context.current_call()
    assert call_context.optional_call() is None
    assert optional_principal() is None
    with pytest.raises(RuntimeError, match="no authenticated principal"):
        current_principal()


def test_a_record_is_current_between_enter_and_leave_only() -> None:
    principal = _principal()
    record = CallRecord(Caller("198.51.100.7", "agent"), principal=principal)
    token = call_context.enter(record)
    try:
        assert call_context.current_call() is record
        assert current_principal() == principal
    finally:
        call_context.leave(token)
    assert call_context.optional_call() is None


def test_the_record_holds_the_calls_authorization_values_in_order() -> None:
    def authorization(_: str, context: Any) -> str:
        return "|".join(str(v) for v in call_context.current_call().authorization)

    metadata = (("authorization", "Bearer one"), ("authorization", "Bearer two"))
    with serve(
        [RequestLoggingInterceptor(None, CallerResolver())], {"auth": authorization}
    ) as client:
        assert client.Execute(DummyRequest(input="auth"), metadata=metadata).output == (
            "Bearer one|Bearer two"
        )
        assert client.Execute(DummyRequest(input="auth")).output == ""


def test_one_calls_record_never_reaches_the_next_call() -> None:
    # One worker thread serves both calls; the second one has no token, so no principal.
    seen: list[Principal | None] = []

    def who(_: str, context: Any) -> str:
        seen.append(optional_principal())
        return "ok"

    principal = _principal()
    stages = [
        RequestLoggingInterceptor(None, CallerResolver()),
        TokenAuthInterceptor(lambda token: principal, public_methods={"/DummyService/Execute"}),
    ]
    with serve(stages, {"who": who}, max_workers=1) as client:
        client.Execute(DummyRequest(input="who"), metadata=(("authorization", "Bearer t"),))
        client.Execute(DummyRequest(input="who"))
    assert seen == [principal, None]


def test_a_chain_without_request_logging_outermost_fails_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Token authentication reads the record the logging stage opens: a chain built without it
    # must not quietly run calls unauthenticated.
    caplog.set_level(logging.ERROR, logger="luman.interceptors.error_mapping")
    stages = [ErrorMappingInterceptor(), TokenAuthInterceptor(_refuse, public_methods=())]
    with serve(stages) as client, pytest.raises(grpc.RpcError) as caught:
        client.Execute(DummyRequest(input="x"), metadata=(("authorization", "Bearer t"),))
    assert rich_error(caught.value).code == grpc.StatusCode.INTERNAL
    assert "no call record" in caplog.text
