"""Typed results of the device-login calls (RFC 8628: StartDeviceLogin, PollDeviceLogin,
GetDeviceLogin)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from luman.auth.v1 import auth_pb2, auth_service_pb2
from luman.client.models import CliToken, User

CLI_CLIENT_ID = "luman-cli"
"""The client_id the `luman` CLI starts its device logins with (DEVICE_CLIENT_IDS)."""


@dataclasses.dataclass(frozen=True)
class DeviceAuthorization:
    """A started device login. `device_code` is the poller's secret: never show it.

    `user_code` ("BCDF-GHJK") and `verification_uri` are for the person; `expires_in` and
    `interval` are seconds.
    """

    device_code: str = dataclasses.field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int

    @classmethod
    def from_proto(cls, response: auth_service_pb2.StartDeviceLoginResponse) -> DeviceAuthorization:
        return cls(
            device_code=response.device_code,
            user_code=response.user_code,
            verification_uri=response.verification_uri,
            verification_uri_complete=response.verification_uri_complete,
            expires_in=response.expires_in,
            interval=response.interval,
        )


@dataclasses.dataclass(frozen=True)
class DeviceToken:
    """The approved device login's personal token. `token` is the secret, shown only here;
    `expires_in` 0 means it does not expire."""

    token: str = dataclasses.field(repr=False)
    expires_in: int
    scopes: tuple[str, ...]
    cli_token: CliToken
    user: User

    @classmethod
    def from_proto(cls, response: auth_service_pb2.PollDeviceLoginResponse) -> DeviceToken:
        return cls(
            token=response.access_token,
            expires_in=int(response.expires_in),
            scopes=tuple(response.scope.split()),
            cli_token=CliToken.from_proto(response.cli_token),
            user=User.from_proto(response.user),
        )


@dataclasses.dataclass(frozen=True)
class DeviceLogin:
    """A pending device login as its approver sees it. All but `client_ip` and the times are
    what the requesting client said about itself."""

    user_code: str
    client_id: str
    scopes: tuple[str, ...]
    host_name: str
    client_version: str
    os: str
    client_ip: str
    create_time: dt.datetime | None
    expire_time: dt.datetime | None

    @classmethod
    def from_proto(cls, login: auth_pb2.DeviceLogin) -> DeviceLogin:
        return cls(
            user_code=login.user_code,
            client_id=login.client_id,
            scopes=tuple(login.scopes),
            host_name=login.host_name,
            client_version=login.client_version,
            os=login.os,
            client_ip=login.client_ip,
            create_time=(
                login.create_time.ToDatetime(tzinfo=dt.UTC)
                if login.HasField("create_time")
                else None
            ),
            expire_time=(
                login.expire_time.ToDatetime(tzinfo=dt.UTC)
                if login.HasField("expire_time")
                else None
            ),
        )
