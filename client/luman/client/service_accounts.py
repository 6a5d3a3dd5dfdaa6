"""Typed results of the service-account calls (CreateServiceAccount, ListServiceAccounts,
CreateServiceToken, IntrospectToken)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from google.protobuf import timestamp_pb2

from luman.auth.v1 import auth_pb2, auth_service_pb2
from luman.organization.v1 import organization_pb2


def _time(ts: timestamp_pb2.Timestamp, present: bool) -> dt.datetime | None:
    return ts.ToDatetime(tzinfo=dt.UTC) if present else None


@dataclasses.dataclass(frozen=True)
class ServiceAccount:
    """A service account as ListServiceAccounts shows it: never its secret (`secret_hint` is
    "lms_...abcd")."""

    id: str
    organization_id: str
    name: str
    scopes: tuple[str, ...]
    create_time: dt.datetime | None
    secret_hint: str

    @classmethod
    def from_proto(cls, account: organization_pb2.ServiceAccount) -> ServiceAccount:
        return cls(
            id=account.id,
            organization_id=account.organization_id,
            name=account.name,
            scopes=tuple(account.scopes),
            create_time=_time(account.create_time, account.HasField("create_time")),
            secret_hint=account.secret_hint,
        )


@dataclasses.dataclass(frozen=True)
class CreatedServiceAccount:
    """A new service account and its secret, which the server shows only this once."""

    secret: str = dataclasses.field(repr=False)
    service_account: ServiceAccount


@dataclasses.dataclass(frozen=True)
class ServiceToken:
    """A service account's short-lived access token (CreateServiceToken)."""

    access_token: str = dataclasses.field(repr=False)
    expire_time: dt.datetime | None
    scopes: tuple[str, ...]

    @classmethod
    def from_proto(cls, response: auth_service_pb2.CreateServiceTokenResponse) -> ServiceToken:
        return cls(
            access_token=response.access_token,
            expire_time=_time(
                response.access_token_expire_time,
                response.HasField("access_token_expire_time"),
            ),
            scopes=tuple(response.scopes),
        )


@dataclasses.dataclass(frozen=True)
class Introspection:
    """IntrospectToken's answer. When `active` is False every other field is empty."""

    active: bool
    token_kind: str  # "access_token", "refresh_token", "personal_token", "service_access_token",
    # "service_secret"; "" when inactive
    subject: str
    scopes: tuple[str, ...]
    organization_id: str
    expire_time: dt.datetime | None
    issue_time: dt.datetime | None
    kid: str

    @classmethod
    def from_proto(cls, response: auth_service_pb2.IntrospectTokenResponse) -> Introspection:
        kind = ""
        if response.token_kind:
            name = auth_pb2.TokenKind.Name(response.token_kind)
            kind = name.removeprefix("TOKEN_KIND_").lower()
        return cls(
            active=response.active,
            token_kind=kind,
            subject=response.subject,
            scopes=tuple(response.scopes),
            organization_id=response.organization_id,
            expire_time=_time(response.expire_time, response.HasField("expire_time")),
            issue_time=_time(response.issue_time, response.HasField("issue_time")),
            kid=response.kid,
        )
