"""InterceptorChain through a real server: stages run in list order (the first outermost), each
method is wrapped once however many calls it gets, stages that do not apply stay out of the
call, and every arity of method (the health service's Watch is unary-stream, reflection is
stream-stream) runs through the whole chain."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_interceptor.testing.protos.dummy_pb2 import DummyRequest

from luman.interceptors import chain
from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor
from luman.interceptors.client_address import CallerResolver
from luman.interceptors.error_mapping import ErrorMappingInterceptor
from luman.interceptors.errors import NotFoundError, UnauthenticatedError
from luman.interceptors.principal import Credential, Principal, current_principal
from luman.interceptors.request_logging import RequestLogEntry, RequestLoggingInterceptor
from luman.interceptors.token_auth import TokenAuthInterceptor
from tests.interceptors.dummy import (
    BIDI_STREAM,
    CALL_TIMEOUT,
    CLIENT_STREAM,
    EXECUTE,
    SERVER_STREAM,
    serve,
    serve_channel,
)
from tests.support import rich_error

USER_ID = uuid.uuid4()


class _Recording(MethodInterceptor):
    """Appends its name to `trace` around each call; records each method it was asked to wrap."""

    def __init__(self, name: str, trace: list[str], applies: bool = True) -> None:
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


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


class _AnyMethod(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Answers every method under /Any/ (as a generic handler may), with one handler for all of
    them, or with a new handler on every call when `per_call`."""

    def __init__(self, per_call: bool = False) -> None:
        self._per_call = per_call
        self._handler = grpc.unary_unary_rpc_method_handler(_echo)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        if not handler_call_details.method.startswith("/Any/"):
            return None
        if self._per_call:
            return grpc.unary_unary_rpc_method_handler(_echo)
        return self._handler


def _raw_call(channel: grpc.Channel, method: str, request: bytes = b"x") -> bytes:
    """One unary call of `method` with the bytes as they are (no serializers)."""
    response: bytes = channel.unary_unary(method, None, None)(request, timeout=CALL_TIMEOUT)
    return response


def test_stages_run_in_list_order_outermost_first() -> None:
    trace: list[str] = []
    stages = [_Recording("outer", trace), _Recording("skipped", trace, False)]
    stages.append(_Recording("inner", trace))
    with serve(stages) as client:
        client.Execute(DummyRequest(input="x"))
        client.Execute(DummyRequest(input="x"))
    assert trace == ["outer in", "inner in", "inner out", "outer out"] * 2
    assert [s.wrapped for s in stages] == [[EXECUTE]] * 3


def test_each_method_is_wrapped_once_however_many_calls_it_gets() -> None:
    stage = _Recording("a", [])
    with serve([stage]) as client:
        for _ in range(3):
            assert client.Execute(DummyRequest(input="x")).output == "x"
            assert "".join(r.output for r in client.ExecuteServerStream(DummyRequest(input="ab")))
    assert stage.wrapped == [EXECUTE, SERVER_STREAM]


def test_a_handler_built_per_call_is_wrapped_afresh() -> None:
    # Something upstream building handlers per call gets correct (only slower) wrapping.
    stage = _Recording("a", [])
    with serve_channel([stage], generic_handlers=[_AnyMethod(per_call=True)]) as channel:
        assert _raw_call(channel, "/Any/Echo", b"one") == b"one"
        assert _raw_call(channel, "/Any/Echo", b"two") == b"two"
    assert stage.wrapped == ["/Any/Echo", "/Any/Echo"]


def test_an_unknown_method_is_left_to_grpcio() -> None:
    stage = _Recording("a", [])
    with serve_channel([stage]) as channel, pytest.raises(grpc.RpcError) as caught:
        _raw_call(channel, "/No.Such/Method")
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert stage.wrapped == []


def test_the_cache_is_bounded_when_any_method_name_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chain, "MAX_CACHED_METHODS", 3)
    trace: list[str] = []
    stage = _Recording("a", trace)
    with serve_channel([stage], generic_handlers=[_AnyMethod()]) as channel:
        for n in range(10):
            assert _raw_call(channel, f"/Any/Method{n}") == b"x"
        # Within the bound, methods stay wrapped; past it, they still work, wrapped per call.
        assert _raw_call(channel, "/Any/Method0") == b"x"
        assert _raw_call(channel, "/Any/Method9") == b"x"
    assert stage.wrapped.count("/Any/Method0") == 1
    assert stage.wrapped.count("/Any/Method9") == 2
    assert trace == ["a in", "a out"] * 12


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
    stages = [
        RequestLoggingInterceptor(entries.append, CallerResolver()),
        ErrorMappingInterceptor(),
        TokenAuthInterceptor(_verify, public_methods=()),
    ]
    with serve(stages, {"who": _who, "missing": _missing}) as client:
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
