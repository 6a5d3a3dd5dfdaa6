"""MethodInterceptor and InterceptorChain: handlers wrapped once per method, stages in list
order, stages that do not apply cost nothing, and every arity of method (the health service's
Watch is unary-stream, reflection is stream-stream) through the whole chain."""

from __future__ import annotations

import collections
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_interceptor.testing.protos.dummy_pb2 import DummyRequest

from luman.interceptors import base
from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor
from luman.interceptors.caller import CallerResolver, CallScopedVerifier
from luman.interceptors.chain import InterceptorChain
from luman.interceptors.error_mapping import ErrorMappingInterceptor
from luman.interceptors.errors import NotFoundError, UnauthenticatedError
from luman.interceptors.principal import Credential, Principal, current_principal
from luman.interceptors.request_logging import RequestLogEntry, RequestLoggingInterceptor
from luman.interceptors.token_auth import TokenAuthInterceptor
from tests.interceptors.dummy import BIDI_STREAM, CLIENT_STREAM, EXECUTE, SERVER_STREAM, serve
from tests.support import rich_error

USER_ID = uuid.uuid4()


class _Details(
    collections.namedtuple("_Details", ("method", "invocation_metadata")),
    grpc.HandlerCallDetails,
):
    pass


class _Recording(MethodInterceptor):
    """Appends its name to `trace` around each call; counts how often it wrapped a method."""

    def __init__(self, name: str, trace: list[str], applies: bool = True) -> None:
        super().__init__()
        self.name, self.trace, self.applies = name, trace, applies
        self.wrapped: list[str] = []

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        self.wrapped.append(method.name)
        if not self.applies:
            return behavior

        def recorded(request: Any, context: grpc.ServicerContext) -> Any:
            self.trace.append(f"{self.name} in")
            try:
                return behavior(request, context)
            finally:
                self.trace.append(f"{self.name} out")

        return recorded


def _handler() -> Any:
    return grpc.unary_unary_rpc_method_handler(lambda request, context: request)


def test_a_method_is_wrapped_once_and_the_same_handler_is_handed_back() -> None:
    stage = _Recording("a", [])
    servicer_handler = _handler()
    details = _Details(EXECUTE, ())
    first = stage.intercept_service(lambda _: servicer_handler, details)
    second = stage.intercept_service(lambda _: servicer_handler, details)
    assert first is second
    assert first is not servicer_handler
    assert stage.wrapped == [EXECUTE]


def test_a_new_next_handler_is_wrapped_afresh() -> None:
    stage = _Recording("a", [])
    details = _Details(EXECUTE, ())
    first = stage.intercept_service(lambda _: _handler(), details)
    second = stage.intercept_service(lambda _: _handler(), details)
    assert first is not second
    assert stage.wrapped == [EXECUTE, EXECUTE]


def test_a_stage_that_does_not_apply_hands_back_the_servicer_handler() -> None:
    chain = InterceptorChain([_Recording("a", [], applies=False)])
    servicer_handler = _handler()
    assert chain.intercept_service(lambda _: servicer_handler, _Details(EXECUTE, ())) is (
        servicer_handler
    )


def test_an_unknown_method_is_left_to_grpcio() -> None:
    stage = _Recording("a", [])
    assert stage.intercept_service(lambda _: None, _Details("/No/Such", ())) is None
    assert stage.wrapped == []


def test_the_cache_is_bounded_when_any_method_name_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(base, "MAX_CACHED_METHODS", 3)
    stage = _Recording("a", [])
    handler = _handler()
    for n in range(10):
        stage.intercept_service(lambda _: handler, _Details(f"/Any/Method{n}", ()))
    assert len(stage._handlers) == 3
    # Past the bound, methods still work; they are only wrapped per call.
    stage.intercept_service(lambda _: handler, _Details("/Any/Method9", ()))
    assert stage.wrapped.count("/Any/Method9") == 2


def test_stages_run_in_list_order_outermost_first() -> None:
    trace: list[str] = []
    stages = [_Recording("outer", trace), _Recording("skipped", trace, False)]
    stages.append(_Recording("inner", trace))
    with serve([InterceptorChain(stages)]) as client:
        client.Execute(DummyRequest(input="x"))
        client.Execute(DummyRequest(input="x"))
    assert trace == ["outer in", "inner in", "inner out", "outer out"] * 2
    assert [s.wrapped for s in stages] == [[EXECUTE]] * 3


def _verify(token: str) -> Principal:
    if token != "good":
        raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
    return Principal(USER_ID, Credential.ACCESS_TOKEN, uuid.uuid4())


def _who(_: str, context: Any) -> str:
    return str(current_principal().user_id)


def _missing(_: str, context: Any) -> str:
    raise NotFoundError("THING_NOT_FOUND", "thing not found")


@contextlib.contextmanager
def _product_chain(entries: list[RequestLogEntry]) -> Iterator[Any]:
    """The server's chain shape: logging, error mapping, token auth (no public methods)."""
    caller_of = CallerResolver()
    verifier = CallScopedVerifier(_verify)
    chain = InterceptorChain(
        [
            RequestLoggingInterceptor(entries.append, caller_of),
            ErrorMappingInterceptor(),
            TokenAuthInterceptor(verifier.verify, public_methods=()),
        ]
    )
    with serve([chain], {"who": _who, "missing": _missing}) as client:
        yield client


GOOD = (("authorization", "Bearer good"),)


def test_every_arity_runs_through_the_chain_with_the_principal_set() -> None:
    entries: list[RequestLogEntry] = []
    user = str(USER_ID)
    with _product_chain(entries) as client:
        assert client.Execute(DummyRequest(input="who"), metadata=GOOD).output == user
        stream = client.ExecuteServerStream(DummyRequest(input="who"), metadata=GOOD)
        assert "".join(r.output for r in stream) == user
        requests = iter([DummyRequest(input="who"), DummyRequest(input="who")])
        assert client.ExecuteClientStream(requests, metadata=GOOD).output == user * 2
        requests = iter([DummyRequest(input="who")])
        bidi = client.ExecuteClientServerStream(requests, metadata=GOOD)
        assert [r.output for r in bidi] == [user]
    assert [(e.method, e.status, e.user_id) for e in entries] == [
        (EXECUTE, "OK", USER_ID),
        (SERVER_STREAM, "OK", USER_ID),
        (CLIENT_STREAM, "OK", USER_ID),
        (BIDI_STREAM, "OK", USER_ID),
    ]


def test_a_streaming_call_without_a_token_is_rejected_and_logged() -> None:
    entries: list[RequestLogEntry] = []
    with _product_chain(entries) as client, pytest.raises(grpc.RpcError) as caught:
        list(client.ExecuteServerStream(DummyRequest(input="who")))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "CREDENTIALS_MISSING"
    assert [(e.method, e.status) for e in entries] == [(SERVER_STREAM, "UNAUTHENTICATED")]


def test_an_error_raised_while_streaming_is_mapped_not_leaked() -> None:
    entries: list[RequestLogEntry] = []
    with _product_chain(entries) as client, pytest.raises(grpc.RpcError) as caught:
        list(client.ExecuteServerStream(DummyRequest(input="missing"), metadata=GOOD))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "THING_NOT_FOUND"
    assert error.domain == "DummyService"
    assert [(e.method, e.status) for e in entries] == [(SERVER_STREAM, "NOT_FOUND")]
