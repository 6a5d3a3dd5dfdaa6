"""Client fixtures: the real server (`app`, from tests/conftest.py) and a scripted one.

The scripted server is a real grpc server on a loopback port with the production
ErrorMappingInterceptor; only GetMe's behaviour is scripted, so that statuses the real
service never produces on demand (INTERNAL, DATA_LOSS, a stall past the deadline, a
bare retry-after header) reach the client exactly as they would on the wire.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from luman.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.chain import InterceptorChain
from luman.interceptors.error_mapping import ErrorMappingInterceptor

Behaviour = Callable[[grpc.ServicerContext], None]


class ScriptedAuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    """Only GetMe is scripted; the other RPCs keep grpc's UNIMPLEMENTED default."""

    def __init__(self) -> None:
        self.behaviour: Behaviour = lambda context: None
        self.released = threading.Event()

    def GetMe(  # noqa: N802 - grpc method name
        self, request: auth_service_pb2.GetMeRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.GetMeResponse:
        self.behaviour(context)
        return auth_service_pb2.GetMeResponse(
            user=auth_pb2.User(id="scripted", email="scripted@example.com", name="Scripted")
        )


@dataclasses.dataclass
class Scripted:
    port: int
    servicer: ScriptedAuthServicer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    servicer = ScriptedAuthServicer()  # type: ignore[abstract]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=4),
        interceptors=[InterceptorChain([ErrorMappingInterceptor()])],
    )
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield Scripted(port, servicer)
    servicer.released.set()
    server.stop(None)


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
