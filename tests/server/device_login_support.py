"""Helpers for the device-login tests (RFC 8628): start, poll, approve, and error decoding
that keeps the ErrorInfo metadata and the trailers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from tests.support import RichError, bearer, rich_error

Stub = auth_service_pb2_grpc.AuthServiceStub
Metadata = tuple[tuple[str, str], ...]
CLIENT_ID = "luman-cli"
HOST = "build-box"


@dataclasses.dataclass(frozen=True)
class Failure:
    error: RichError
    metadata: dict[str, str]  # ErrorInfo.metadata
    trailers: dict[str, str]


def failure(call: Callable[[], object]) -> Failure:
    """Make the call, expect it to fail, and decode the error."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    exc = caught.value
    assert isinstance(exc, grpc.Call)
    info: dict[str, str] = {}
    status = rpc_status.from_call(exc)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                unpacked = error_details_pb2.ErrorInfo()
                detail.Unpack(unpacked)
                info = dict(unpacked.metadata)
    trailers = {k: v for k, v in exc.trailing_metadata() or () if isinstance(v, str)}
    return Failure(rich_error(exc), info, trailers)


def start(
    auth: Stub,
    scope: str = "",
    host_name: str = HOST,
    client_id: str = CLIENT_ID,
    metadata: Metadata = (),
    **fields: str,
) -> auth_service_pb2.StartDeviceLoginResponse:
    response: auth_service_pb2.StartDeviceLoginResponse = auth.StartDeviceLogin(
        auth_service_pb2.StartDeviceLoginRequest(
            client_id=client_id,
            scope=scope,
            host_name=host_name,
            client_version=fields.pop("client_version", "1.4.0"),
            os=fields.pop("os", "linux"),
            **fields,
        ),
        metadata=metadata,
    )
    return response


def poll(
    auth: Stub, device_code: str, client_id: str = CLIENT_ID, metadata: Metadata = ()
) -> auth_service_pb2.PollDeviceLoginResponse:
    response: auth_service_pb2.PollDeviceLoginResponse = auth.PollDeviceLogin(
        auth_service_pb2.PollDeviceLoginRequest(device_code=device_code, client_id=client_id),
        metadata=metadata,
    )
    return response


def poll_failure(auth: Stub, device_code: str, client_id: str = CLIENT_ID) -> Failure:
    return failure(lambda: poll(auth, device_code, client_id))


def get(
    auth: Stub, token: str, user_code: str, metadata: Metadata = ()
) -> auth_service_pb2.GetDeviceLoginResponse:
    response: auth_service_pb2.GetDeviceLoginResponse = auth.GetDeviceLogin(
        auth_service_pb2.GetDeviceLoginRequest(user_code=user_code),
        metadata=bearer(token) + metadata,
    )
    return response


def approve(
    auth: Stub, token: str, user_code: str, scopes: tuple[str, ...] = (), metadata: Metadata = ()
) -> None:
    auth.ApproveDeviceLogin(
        auth_service_pb2.ApproveDeviceLoginRequest(user_code=user_code, scopes=list(scopes)),
        metadata=bearer(token) + metadata,
    )


def deny(auth: Stub, token: str, user_code: str, metadata: Metadata = ()) -> None:
    auth.DenyDeviceLogin(
        auth_service_pb2.DenyDeviceLoginRequest(user_code=user_code),
        metadata=bearer(token) + metadata,
    )


def personal_token(auth: Stub, credential: str, scopes: tuple[str, ...] = ()) -> tuple[str, str]:
    """(id, secret) of a new personal token; it does not expire, unlike an access token."""
    created = auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="laptop", scopes=list(scopes)),
        metadata=bearer(credential),
    )
    return created.cli_token.id, created.token
