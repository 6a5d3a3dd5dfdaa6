"""grpc-interceptor's DummyService on a real in-process server, with our interceptors.

`dummy_client` is typed for grpc-interceptor's own base class; ours are plain
grpc.ServerInterceptors (MethodInterceptor), which is all the grpc.server behind it needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from grpc_interceptor.testing import dummy_client
from grpc_interceptor.testing.dummy_client import SpecialCaseFunction
from grpc_interceptor.testing.protos.dummy_pb2_grpc import DummyServiceStub

from luman.interceptors.base import MethodInterceptor

EXECUTE = "/DummyService/Execute"
SERVER_STREAM = "/DummyService/ExecuteServerStream"
CLIENT_STREAM = "/DummyService/ExecuteClientStream"
BIDI_STREAM = "/DummyService/ExecuteClientServerStream"


@contextlib.contextmanager
def serve(
    interceptors: Sequence[MethodInterceptor],
    special_cases: Mapping[str, SpecialCaseFunction] | None = None,
) -> Iterator[DummyServiceStub]:
    with dummy_client(
        special_cases=dict(special_cases or {}), interceptors=cast(Any, list(interceptors))
    ) as client:
        yield client
