"""grpc-interceptor's DummyService on a real in-process server, behind an InterceptorChain of the
stages under test.

grpc-interceptor's own `dummy_client` serves with a single worker thread; tests that hold one
call open while another arrives (a sign-in still in flight) need more, so the server is built
here from the same DummyService.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_interceptor.testing.dummy_client import DummyService, SpecialCaseFunction
from grpc_interceptor.testing.protos import dummy_pb2_grpc
from grpc_interceptor.testing.protos.dummy_pb2_grpc import DummyServiceStub

from luman.interceptors.base import MethodInterceptor
from luman.interceptors.chain import InterceptorChain
from luman.interceptors.errors import UnauthenticatedError
from luman.interceptors.principal import Credential, Principal

EXECUTE = "/DummyService/Execute"
SERVER_STREAM = "/DummyService/ExecuteServerStream"
CLIENT_STREAM = "/DummyService/ExecuteClientStream"
BIDI_STREAM = "/DummyService/ExecuteClientServerStream"
# Every call in these tests is answered within a second; a hung one fails instead of hanging.
CALL_TIMEOUT = 10.0


@contextlib.contextmanager
def serve_channel(
    stages: Sequence[MethodInterceptor],
    special_cases: Mapping[str, SpecialCaseFunction] | None = None,
    *,
    generic_handlers: Sequence[grpc.GenericRpcHandler[Any, Any]] = (),
    max_workers: int = 4,
) -> Iterator[grpc.Channel]:
    """A channel to a DummyService (plus `generic_handlers`) served behind
    `InterceptorChain(stages)`, the first stage outermost."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=[InterceptorChain(stages)],
    )
    dummy_pb2_grpc.add_DummyServiceServicer_to_server(  # type: ignore[no-untyped-call]
        DummyService(dict(special_cases or {})), server
    )
    if generic_handlers:
        server.add_generic_rpc_handlers(list(generic_handlers))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        server.stop(None)


@contextlib.contextmanager
def serve(
    stages: Sequence[MethodInterceptor],
    special_cases: Mapping[str, SpecialCaseFunction] | None = None,
    *,
    max_workers: int = 4,
) -> Iterator[DummyServiceStub]:
    """A DummyService client; the service runs behind `InterceptorChain(stages)`."""
    with serve_channel(stages, special_cases, max_workers=max_workers) as channel:
        yield DummyServiceStub(channel)  # type: ignore[no-untyped-call]


class RecordingVerifier:
    """A token verifier that accepts the token "good" (as `user_id`) and records every token
    it was asked about."""

    def __init__(self, user_id: uuid.UUID | None = None) -> None:
        self.user_id = user_id or uuid.uuid4()
        self.tokens: list[str] = []

    def __call__(self, token: str) -> Principal:
        self.tokens.append(token)
        if token != "good":
            raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
        return Principal(self.user_id, Credential.ACCESS_TOKEN, uuid.uuid4())
