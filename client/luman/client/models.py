"""Plain, typed results of client calls, decoupled from the generated protobuf classes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Sequence
from typing import Generic, TypeVar

from google.protobuf import timestamp_pb2

from luman.auth.v1 import auth_pb2, auth_service_pb2
from luman.organization.v1 import organization_pb2

T = TypeVar("T")


class Role(enum.StrEnum):
    """A member's role in an organization."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        """Accept "owner", "OWNER" or Role.OWNER.

        Raises:
            ValueError: not a role name.
        """
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(r.value for r in cls)
            raise ValueError(f"unknown role {value!r}: expected one of {names}") from None


_ROLE_TO_PROTO = {
    Role.OWNER: organization_pb2.ORGANIZATION_ROLE_OWNER,
    Role.ADMIN: organization_pb2.ORGANIZATION_ROLE_ADMIN,
    Role.MEMBER: organization_pb2.ORGANIZATION_ROLE_MEMBER,
}
_ROLE_FROM_PROTO = {v: k for k, v in _ROLE_TO_PROTO.items()}


def role_to_proto(role: Role) -> organization_pb2.OrganizationRole.ValueType:
    return _ROLE_TO_PROTO[role]


def role_from_proto(value: organization_pb2.OrganizationRole.ValueType) -> Role | None:
    """None for UNSPECIFIED or a role newer than this client."""
    return _ROLE_FROM_PROTO.get(value)


def _time(ts: timestamp_pb2.Timestamp, present: bool = True) -> dt.datetime | None:
    return ts.ToDatetime(tzinfo=dt.UTC) if present else None


@dataclasses.dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str
    create_time: dt.datetime | None
    email_verified: bool = False

    @classmethod
    def from_proto(cls, user: auth_pb2.User) -> User:
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            create_time=_time(user.create_time, user.HasField("create_time")),
            email_verified=user.email_verified,
        )


@dataclasses.dataclass(frozen=True)
class Organization:
    id: str
    name: str
    slug: str
    create_time: dt.datetime | None
    role: Role | None  # the caller's role

    @classmethod
    def from_proto(cls, organization: organization_pb2.Organization) -> Organization:
        return cls(
            id=organization.id,
            name=organization.name,
            slug=organization.slug,
            create_time=_time(organization.create_time, organization.HasField("create_time")),
            role=role_from_proto(organization.caller_role),
        )


@dataclasses.dataclass(frozen=True)
class Member:
    user_id: str
    email: str
    name: str
    role: Role | None
    join_time: dt.datetime | None

    @classmethod
    def from_proto(cls, member: organization_pb2.Member) -> Member:
        return cls(
            user_id=member.user_id,
            email=member.email,
            name=member.name,
            role=role_from_proto(member.role),
            join_time=_time(member.join_time, member.HasField("join_time")),
        )


@dataclasses.dataclass(frozen=True)
class TokenPair:
    """A short-lived access token and the single-use refresh token that renews it."""

    access_token: str = dataclasses.field(repr=False)
    access_token_expire_time: dt.datetime | None
    refresh_token: str = dataclasses.field(repr=False)
    refresh_token_expire_time: dt.datetime | None

    @classmethod
    def from_proto(cls, tokens: auth_pb2.TokenPair) -> TokenPair:
        return cls(
            access_token=tokens.access_token,
            access_token_expire_time=_time(
                tokens.access_token_expire_time, tokens.HasField("access_token_expire_time")
            ),
            refresh_token=tokens.refresh_token,
            refresh_token_expire_time=_time(
                tokens.refresh_token_expire_time, tokens.HasField("refresh_token_expire_time")
            ),
        )


@dataclasses.dataclass(frozen=True)
class SignIn:
    """The result of Register or Login: the user and a token pair."""

    user: User
    tokens: TokenPair


@dataclasses.dataclass(frozen=True)
class CliLogin:
    """The result of CliLogin. `token` is the secret and is shown only this once."""

    user: User
    token: str = dataclasses.field(repr=False)
    token_id: str
    token_name: str
    create_time: dt.datetime | None

    @classmethod
    def from_proto(cls, response: auth_service_pb2.CliLoginResponse) -> CliLogin:
        cli_token = response.cli_token
        return cls(
            user=User.from_proto(response.user),
            token=response.token,
            token_id=cli_token.id,
            token_name=cli_token.name,
            create_time=_time(cli_token.create_time, cli_token.HasField("create_time")),
        )


@dataclasses.dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; pass `next_page_token` back for the next, "" on the last page."""

    items: Sequence[T]
    next_page_token: str


@dataclasses.dataclass(frozen=True)
class CliToken:
    """A personal (CLI) token as ListCliTokens shows it: never its secret.

    `hint` is "lmn_...abcd" (the last 4 characters), `scopes` what it may do ("read",
    "write"); `expire_time` None means it does not expire, `last_use_time` None never used.
    """

    id: str
    name: str
    hint: str
    scopes: tuple[str, ...]
    create_time: dt.datetime | None
    expire_time: dt.datetime | None
    last_use_time: dt.datetime | None
    last_use_ip: str

    @classmethod
    def from_proto(cls, token: auth_pb2.CliToken) -> CliToken:
        return cls(
            id=token.id,
            name=token.name,
            hint=token.hint,
            scopes=tuple(token.scopes),
            create_time=_time(token.create_time, token.HasField("create_time")),
            expire_time=_time(token.expire_time, token.HasField("expire_time")),
            last_use_time=_time(token.last_use_time, token.HasField("last_use_time")),
            last_use_ip=token.last_use_ip,
        )


@dataclasses.dataclass(frozen=True)
class CreatedCliToken:
    """The result of CreateCliToken. `token` is the secret and is shown only this once."""

    token: str = dataclasses.field(repr=False)
    cli_token: CliToken
