"""The device-login RPCs over gRPC (RFC 8628): AuthServicer inherits these methods.

Kept apart from servicer.py so the feature reads as one piece; the rules are in
auth/device_logins.py.
"""

from __future__ import annotations

import datetime as dt

import grpc

from luman.auth.v1 import auth_pb2, auth_service_pb2
from luman.interceptors.principal import current_principal
from luman.server.auth import convert
from luman.server.auth.device_logins import (
    GRANT_TYPE,
    DeviceLogins,
    display_user_code,
    normalize_user_code,
    scopes_from_request,
)
from luman.server.convert import write_timestamp
from luman.server.db.models import DeviceLogin
from luman.server.validation import Violations

MAX_CLIENT_ID = 100
MAX_HOST_NAME = 100
MAX_VERSION = 50
MAX_DEVICE_CODE = 100


def _check_text(v: Violations, field: str, value: str, most: int, *, required: bool = False) -> str:
    """Text the client says about itself, shown on the approval page: printable, bounded."""
    value = value.strip()
    if required and not value:
        v.add(field, "is required")
    elif len(value) > most:
        v.add(field, f"must be at most {most} characters")
    elif not value.isprintable():
        v.add(field, "must be printable text")
    return value


def device_login_to_proto(login: DeviceLogin) -> auth_pb2.DeviceLogin:
    message = auth_pb2.DeviceLogin(
        user_code=display_user_code(login.user_code),
        client_id=login.client_id,
        scopes=sorted(login.scopes.split()),
        host_name=login.host_name,
        client_version=login.client_version,
        os=login.os,
        client_ip=login.client_ip,
    )
    write_timestamp(message.create_time, login.create_time)
    write_timestamp(message.expire_time, login.expire_time)
    return message


class DeviceLoginRpcs:
    _device_logins: DeviceLogins

    def StartDeviceLogin(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.StartDeviceLoginRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.StartDeviceLoginResponse:
        v = Violations()
        client_id = _check_text(v, "client_id", request.client_id, MAX_CLIENT_ID, required=True)
        host_name = _check_text(v, "host_name", request.host_name, MAX_HOST_NAME)
        version = _check_text(v, "client_version", request.client_version, MAX_VERSION)
        os = _check_text(v, "os", request.os, MAX_VERSION)
        v.raise_if_any()
        scopes = scopes_from_request("scope", request.scope)
        started = self._device_logins.start(client_id, scopes, host_name, version, os)
        return auth_service_pb2.StartDeviceLoginResponse(
            device_code=started.device_code,
            user_code=started.user_code,
            verification_uri=self._device_logins.verification_uri,
            verification_uri_complete=self._device_logins.complete_uri(started.user_code),
            expires_in=started.expires_in,
            interval=started.interval,
        )

    def PollDeviceLogin(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.PollDeviceLoginRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.PollDeviceLoginResponse:
        v = Violations()
        if not request.device_code:
            v.add("device_code", "is required")
        elif len(request.device_code) > MAX_DEVICE_CODE:
            v.add("device_code", f"must be at most {MAX_DEVICE_CODE} characters")
        client_id = _check_text(v, "client_id", request.client_id, MAX_CLIENT_ID, required=True)
        if request.grant_type and request.grant_type != GRANT_TYPE:
            v.add("grant_type", f"must be {GRANT_TYPE!r} when set")
        v.raise_if_any()
        claimed = self._device_logins.poll(request.device_code, client_id)
        token = claimed.token
        response = auth_service_pb2.PollDeviceLoginResponse(
            access_token=claimed.secret,
            token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
            scope=token.scopes,
            cli_token=convert.cli_token_to_proto(token),
            user=convert.user_to_proto(claimed.user),
        )
        if token.expire_time is not None:
            # Absent for a token that does not expire (RFC 6749 5.1 makes it optional); at
            # most the largest int32, some 68 years, which only a parent without a cap passes.
            lifetime = (token.expire_time - token.create_time) // dt.timedelta(seconds=1)
            response.expires_in = min(max(0, lifetime), 2**31 - 1)
        return response

    def GetDeviceLogin(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.GetDeviceLoginRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.GetDeviceLoginResponse:
        _check_user_code(request.user_code)
        login = self._device_logins.get(current_principal(), request.user_code)
        return auth_service_pb2.GetDeviceLoginResponse(device_login=device_login_to_proto(login))

    def ApproveDeviceLogin(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.ApproveDeviceLoginRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.ApproveDeviceLoginResponse:
        _check_user_code(request.user_code)
        scopes = scopes_from_request("scopes", request.scopes)
        self._device_logins.approve(current_principal(), request.user_code, scopes)
        return auth_service_pb2.ApproveDeviceLoginResponse()

    def DenyDeviceLogin(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.DenyDeviceLoginRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.DenyDeviceLoginResponse:
        _check_user_code(request.user_code)
        self._device_logins.deny(current_principal(), request.user_code)
        return auth_service_pb2.DenyDeviceLoginResponse()


def _check_user_code(value: str) -> None:
    """The shape only (8 letters of the alphabet, dash and case free); whether it exists is
    the service's, counted as an attempt."""
    v = Violations()
    if not value.strip():
        v.add("user_code", "is required")
    elif normalize_user_code(value) is None:
        v.add("user_code", "must be 8 letters, as shown by the client (XXXX-XXXX)")
    v.raise_if_any()
