"""IntrospectToken over gRPC: every token kind in every state, the one inactive answer, and
every kind of caller."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

import grpc
import pytest
from google.protobuf import duration_pb2

from luman.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from luman.client import token_format
from luman.organization.v1 import organization_pb2, organization_service_pb2
from luman.organization.v1 import organization_service_pb2_grpc as org_grpc
from luman.server.app import App
from tests.server.organization_support import create_organization, error_of, sign_up
from tests.support import FakeClock, bearer, register

AuthStub = auth_service_pb2_grpc.AuthServiceStub
OrgStub = org_grpc.OrganizationServiceStub
Kind = auth_pb2.TokenKind
INTROSPECT_PATH = "/luman.auth.v1.AuthService/IntrospectToken"


@dataclasses.dataclass
class World:
    """An organization with an introspecting service account, and a user."""

    auth: AuthStub
    orgs: OrgStub
    channel: grpc.Channel
    organization: organization_pb2.Organization
    owner_token: str
    secret: str  # the introspecting account's

    def introspect(self, token: str) -> auth_service_pb2.IntrospectTokenResponse:
        # A fresh service token each time: the test moves the clock past expiries.
        caller = self.auth.CreateServiceToken(
            auth_service_pb2.CreateServiceTokenRequest(secret=self.secret)
        ).access_token
        response: auth_service_pb2.IntrospectTokenResponse = self.auth.IntrospectToken(
            auth_service_pb2.IntrospectTokenRequest(token=token), metadata=bearer(caller)
        )
        return response

    def raw(self, token: str) -> bytes:
        """The response as the bytes on the wire."""
        caller = self.auth.CreateServiceToken(
            auth_service_pb2.CreateServiceTokenRequest(secret=self.secret)
        ).access_token
        call = self.channel.unary_unary(
            INTROSPECT_PATH,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=lambda data: data,
        )
        data: bytes = call(
            auth_service_pb2.IntrospectTokenRequest(token=token), metadata=bearer(caller)
        )
        return data

    def service_account(
        self, scopes: tuple[str, ...] = ("introspect",)
    ) -> organization_service_pb2.CreateServiceAccountResponse:
        response: organization_service_pb2.CreateServiceAccountResponse = (
            self.orgs.CreateServiceAccount(
                organization_service_pb2.CreateServiceAccountRequest(
                    organization_id=self.organization.id, name="svc", scopes=scopes
                ),
                metadata=bearer(self.owner_token),
            )
        )
        return response

    def delete(self, account_id: str) -> None:
        self.orgs.DeleteServiceAccount(
            organization_service_pb2.DeleteServiceAccountRequest(
                organization_id=self.organization.id, service_account_id=account_id
            ),
            metadata=bearer(self.owner_token),
        )


@pytest.fixture
def world(auth: AuthStub, orgs: OrgStub, channel: grpc.Channel) -> World:
    owner = sign_up(auth, "owner")
    organization = create_organization(orgs, owner)
    world = World(auth, orgs, channel, organization, owner.token, "")
    world.secret = world.service_account().secret
    return world


def _ts(value: dt.datetime) -> int:
    return int(value.timestamp())


def test_an_active_user_access_token(world: World, app: App, clock: FakeClock) -> None:
    signed_in = register(world.auth)
    found = world.introspect(signed_in.tokens.access_token)
    assert found.active
    assert found.token_kind == Kind.TOKEN_KIND_ACCESS_TOKEN
    assert found.subject == signed_in.user.id
    assert list(found.scopes) == ["read", "write"]  # every user scope; never introspect
    assert not found.HasField("organization_id")  # absent, not "" (JSON too)
    assert found.issue_time.seconds == _ts(clock())
    assert found.expire_time.seconds == _ts(clock() + dt.timedelta(minutes=15))
    assert app.keys is not None
    assert found.kid == app.keys.signing_key().kid


def test_an_active_refresh_token_until_it_is_used(world: World, clock: FakeClock) -> None:
    signed_in = register(world.auth)
    refresh = signed_in.tokens.refresh_token
    found = world.introspect(refresh)
    assert found.active
    assert found.token_kind == Kind.TOKEN_KIND_REFRESH_TOKEN
    assert (found.subject, list(found.scopes)) == (signed_in.user.id, [])
    assert not found.HasField("kid")
    assert not found.HasField("organization_id")
    assert found.expire_time.seconds == _ts(clock() + dt.timedelta(days=7))
    rotated = world.auth.RefreshToken(auth_service_pb2.RefreshTokenRequest(refresh_token=refresh))
    assert not world.introspect(refresh).active  # used
    assert world.introspect(rotated.tokens.refresh_token).active


def test_an_active_personal_token(world: World, clock: FakeClock) -> None:
    access = register(world.auth).tokens.access_token
    created = world.auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(
            name="ci", scopes=["read"], ttl=duration_pb2.Duration(seconds=3600)
        ),
        metadata=bearer(access),
    )
    found = world.introspect(created.token)
    assert found.active
    assert found.token_kind == Kind.TOKEN_KIND_PERSONAL_TOKEN
    assert list(found.scopes) == ["read"]
    assert found.expire_time.seconds == _ts(clock() + dt.timedelta(hours=1))
    assert found.issue_time.seconds == _ts(clock())
    # No expiry: the field is absent.
    forever = world.auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="forever"), metadata=bearer(access)
    )
    found = world.introspect(forever.token)
    assert found.active
    assert not found.HasField("expire_time")


def test_an_active_service_token_and_secret(world: World, app: App, clock: FakeClock) -> None:
    account = world.service_account(("introspect", "read"))
    token = world.auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=account.secret)
    ).access_token
    found = world.introspect(token)
    assert found.active
    assert found.token_kind == Kind.TOKEN_KIND_SERVICE_ACCESS_TOKEN
    assert found.subject == account.service_account.id
    assert found.organization_id == world.organization.id
    assert list(found.scopes) == ["introspect", "read"]
    assert found.expire_time.seconds == _ts(clock() + dt.timedelta(minutes=15))
    assert app.keys is not None
    assert found.kid == app.keys.signing_key().kid

    found = world.introspect(account.secret)
    assert found.active
    assert found.token_kind == Kind.TOKEN_KIND_SERVICE_SECRET
    assert (found.subject, found.organization_id) == (
        account.service_account.id,
        world.organization.id,
    )
    assert not found.HasField("expire_time")
    assert found.kid == ""


def _flip_last(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def test_revoked_tokens_of_every_kind_are_inactive_at_once(world: World) -> None:
    """Revocations show on the very next introspection, cache or not: every token here was
    verified (and cached) by a call first."""
    signed_in = register(world.auth)
    access, refresh = signed_in.tokens.access_token, signed_in.tokens.refresh_token
    personal = world.auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="ci"), metadata=bearer(access)
    )
    account = world.service_account()
    service = world.auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=account.secret)
    ).access_token
    world.auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(access))
    world.auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(personal.token))
    for token in (access, refresh, personal.token, service, account.secret):
        assert world.introspect(token).active

    world.auth.RevokeCliToken(
        auth_service_pb2.RevokeCliTokenRequest(token_id=personal.cli_token.id),
        metadata=bearer(access),
    )
    assert not world.introspect(personal.token).active
    world.delete(account.service_account.id)
    assert not world.introspect(service).active
    assert not world.introspect(account.secret).active
    world.auth.LogoutAll(auth_service_pb2.LogoutAllRequest(), metadata=bearer(access))
    assert not world.introspect(access).active
    assert not world.introspect(refresh).active


def test_a_revoked_session_makes_its_tokens_inactive(world: World) -> None:
    first = register(world.auth)
    second = world.auth.Login(
        auth_service_pb2.LoginRequest(email=first.user.email, password="correct horse battery")
    )
    sessions = world.auth.ListSessions(
        auth_service_pb2.ListSessionsRequest(), metadata=bearer(second.tokens.access_token)
    ).sessions
    first_session = next(s for s in sessions if not s.current)
    world.auth.RevokeSession(
        auth_service_pb2.RevokeSessionRequest(session_id=first_session.id),
        metadata=bearer(second.tokens.access_token),
    )
    assert not world.introspect(first.tokens.access_token).active
    assert not world.introspect(first.tokens.refresh_token).active
    assert world.introspect(second.tokens.access_token).active


def test_expired_tokens_of_every_kind_are_inactive(world: World, clock: FakeClock) -> None:
    signed_in = register(world.auth)
    access = signed_in.tokens.access_token
    personal = world.auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="ci", ttl=duration_pb2.Duration(seconds=3600)),
        metadata=bearer(access),
    ).token
    service = world.auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=world.secret)
    ).access_token
    clock.advance(minutes=15)
    assert not world.introspect(access).active
    assert not world.introspect(service).active
    assert world.introspect(personal).active
    clock.advance(minutes=45)
    assert not world.introspect(personal).active
    assert world.introspect(signed_in.tokens.refresh_token).active
    clock.advance(days=7)
    assert not world.introspect(signed_in.tokens.refresh_token).active


def test_every_inactive_token_gets_the_same_bytes(world: World, clock: FakeClock) -> None:
    signed_in = register(world.auth)
    access = signed_in.tokens.access_token
    personal = world.auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="ci"), metadata=bearer(access)
    ).token
    service = world.auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=world.secret)
    ).access_token
    head, _, rest = access.partition(".")
    inactive = {
        "unknown personal": token_format.new_token(),
        "unknown secret": token_format.new_token(token_format.SERVICE_PREFIX),
        "personal, wrong checksum": _flip_last(personal),
        "secret, wrong checksum": _flip_last(world.secret),
        "legacy-shaped unknown": "lmn_" + "A" * 43,
        "malformed JWT": access[:-5],
        "bad signature, access": f"{head}.{rest[:-3]}abc",
        "bad signature, service": service[:-3] + "abc",
        "not a token": "hello",
        "a bare prefix": "lmn_",
        "too long": "lmn_" + "A" * 4096,
    }
    empty = world.raw(inactive["unknown personal"])
    assert empty == b""  # active false, and no other field
    for label, token in inactive.items():
        assert world.raw(token) == empty, label
    # Expired: the same bytes too.
    clock.advance(minutes=15)
    assert world.raw(access) == empty
    assert world.raw(service) == empty


def test_callers_without_the_introspect_scope_are_refused(world: World) -> None:
    signed_in = register(world.auth)
    access = signed_in.tokens.access_token
    request = auth_service_pb2.IntrospectTokenRequest(token=access)
    personal = {
        scopes: world.auth.CreateCliToken(
            auth_service_pb2.CreateCliTokenRequest(name="t", scopes=list(scopes)),
            metadata=bearer(access),
        ).token
        for scopes in (("read",), ("write",), ("read", "write"))
    }
    no_introspect = world.service_account(("read", "write"))
    service = world.auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=no_introspect.secret)
    ).access_token
    callers: dict[str, str] = {
        "user access token": access,
        **{f"personal token {' '.join(s)}": t for s, t in personal.items()},
        "service token without introspect": service,
    }
    for label, token in callers.items():
        error = error_of(
            functools.partial(world.auth.IntrospectToken, request, metadata=bearer(token))
        )
        assert (error.code, error.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_SCOPE",
        ), label
    # Secrets are not bearer tokens: a service authenticates with its access token only.
    for token in (world.secret, "not-a-token"):
        error = error_of(
            functools.partial(world.auth.IntrospectToken, request, metadata=bearer(token))
        )
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    anonymous = error_of(lambda: world.auth.IntrospectToken(request))
    assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED


def test_no_user_credential_can_get_the_introspect_scope(world: World) -> None:
    access = register(world.auth).tokens.access_token
    error = error_of(
        lambda: world.auth.CreateCliToken(
            auth_service_pb2.CreateCliTokenRequest(name="x", scopes=["introspect"]),
            metadata=bearer(access),
        )
    )
    assert (error.code, list(error.field_violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["scopes"],
    )
    # CliLogin's token: read and write only.
    cli = world.auth.CliLogin(
        auth_service_pb2.CliLoginRequest(
            email=world.auth.GetMe(
                auth_service_pb2.GetMeRequest(), metadata=bearer(access)
            ).user.email,
            password="correct horse battery",
        )
    )
    assert list(world.introspect(cli.token).scopes) == ["read", "write"]


def test_bad_requests_name_the_field(world: World) -> None:
    caller = world.auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=world.secret)
    ).access_token
    error = error_of(
        functools.partial(
            world.auth.IntrospectToken,
            auth_service_pb2.IntrospectTokenRequest(token=""),
            metadata=bearer(caller),
        )
    )
    assert (error.code, list(error.field_violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["token"],
    )


def test_a_token_longer_than_the_limit_is_inactive_not_an_error(world: World) -> None:
    # RFC 7662 (and issue 15): a malformed token is inactive, however long. A real token
    # padded past 4096 characters too: it is not read past the limit.
    access = register(world.auth).tokens.access_token
    for token in ("x" * 4097, access + "x" * 4096, "lmn_" + "A" * 60_000):
        assert world.raw(token) == b"", len(token)
