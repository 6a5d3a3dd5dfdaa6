"""Who may introspect (INTROSPECTION_ORGANIZATIONS) through the real stack: nobody by default,
listed organizations by id (never by slug), refused at creation elsewhere and re-checked on
every call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_pb2, organization_service_pb2
from luman.organization.v1 import organization_service_pb2_grpc as org_grpc
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import ConfigError, Settings
from luman.server.db.session import Sessions
from tests.server.organization_support import Account, create_organization, error_of, sign_up
from tests.support import FakeClock, bearer

AuthStub = auth_service_pb2_grpc.AuthServiceStub
OrgStub = org_grpc.OrganizationServiceStub
DENIED = (grpc.StatusCode.PERMISSION_DENIED, "INTROSPECTION_NOT_ALLOWED")


@dataclasses.dataclass
class Stubs:
    auth: AuthStub
    orgs: OrgStub


Serve = Callable[[frozenset[str]], AbstractContextManager[Stubs]]


@pytest.fixture
def serve(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Serve:
    """serve(organizations) -> a server with INTROSPECTION_ORGANIZATIONS set so, on the test's
    database (servers in turn share it, as replicas or a restart would)."""

    @contextmanager
    def running(organizations: frozenset[str]) -> Iterator[Stubs]:
        configured = dataclasses.replace(settings, introspection_organizations=organizations)
        app = build_server(configured, sessions, clock=clock, hasher=hasher)
        app.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                yield Stubs(AuthStub(channel), OrgStub(channel))
        finally:
            app.stop(None)

    return running


def _create(
    stubs: Stubs, owner: Account, organization: organization_pb2.Organization, *scopes: str
) -> organization_service_pb2.CreateServiceAccountResponse:
    response: organization_service_pb2.CreateServiceAccountResponse = (
        stubs.orgs.CreateServiceAccount(
            organization_service_pb2.CreateServiceAccountRequest(
                slug=organization.slug, name="svc", scopes=scopes
            ),
            metadata=owner.metadata,
        )
    )
    return response


def _introspect(stubs: Stubs, secret: str, token: str) -> auth_service_pb2.IntrospectTokenResponse:
    caller = stubs.auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=secret)
    ).access_token
    response: auth_service_pb2.IntrospectTokenResponse = stubs.auth.IntrospectToken(
        auth_service_pb2.IntrospectTokenRequest(token=token), metadata=bearer(caller)
    )
    return response


def test_by_default_nobody_may_hold_introspect(serve: Serve) -> None:
    with serve(frozenset()) as stubs:
        owner, outsider = sign_up(stubs.auth, "owner"), sign_up(stubs.auth, "outsider")
        organization = create_organization(stubs.orgs, owner)
        error = error_of(lambda: _create(stubs, owner, organization, "introspect"))
        assert (error.code, error.reason) == DENIED
        error = error_of(lambda: _create(stubs, owner, organization, "read", "introspect"))
        assert (error.code, error.reason) == DENIED
        # Other scopes are the owner's to give; and an outsider still learns nothing.
        assert _create(stubs, owner, organization, "read").secret
        error = error_of(lambda: _create(stubs, outsider, organization, "introspect"))
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "ORGANIZATION_NOT_FOUND")


def test_listed_organizations_by_id_and_no_other(serve: Serve) -> None:
    with serve(frozenset()) as stubs:
        owner, attacker = sign_up(stubs.auth, "owner"), sign_up(stubs.auth, "attacker")
        listed, other = (create_organization(stubs.orgs, owner) for _ in range(2))
    with serve(frozenset({listed.id})) as stubs:
        secret = _create(stubs, owner, listed, "introspect").secret
        found = _introspect(stubs, secret, owner.token)
        assert (found.active, found.subject) == (True, owner.id)
        error = error_of(lambda: _create(stubs, owner, other, "introspect"))
        assert (error.code, error.reason) == DENIED
        # A slug is anyone's to type: one equal to the listed id grants nothing.
        lookalike = create_organization(stubs.orgs, attacker, slug=listed.id)
        error = error_of(lambda: _create(stubs, attacker, lookalike, "introspect"))
        assert (error.code, error.reason) == DENIED


def test_introspect_re_checks_the_callers_organization_on_every_call(serve: Serve) -> None:
    with serve(frozenset({"*"})) as stubs:
        owner = sign_up(stubs.auth, "owner")
        organization = create_organization(stubs.orgs, owner)
        secret = _create(stubs, owner, organization, "introspect").secret
        assert _introspect(stubs, secret, owner.token).active
    # The operator takes the organization off the list and restarts: the account it already
    # has, and its fresh tokens, can no longer introspect.
    for listed in (frozenset(), frozenset({"some-other-org"})):
        with serve(listed) as stubs:
            error = error_of(lambda: _introspect(stubs, secret, owner.token))
            assert (error.code, error.reason) == DENIED
    with serve(frozenset({organization.id})) as stubs:
        assert _introspect(stubs, secret, owner.token).active


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", frozenset()),
        (" 5d1c4a8e-0f3b-4c2a-9e7d-6b8a1f2c3d4e , 0b4f7a6e-8e1f-4e43-9d3c-2a5f0d6b7c8e ", None),
        ("*", frozenset({"*"})),
    ],
)
def test_the_setting_is_read_and_normalised(value: str, expected: frozenset[str] | None) -> None:
    settings = Settings.from_env({"INTROSPECTION_ORGANIZATIONS": value})
    if expected is None:
        expected = frozenset(
            {"5d1c4a8e-0f3b-4c2a-9e7d-6b8a1f2c3d4e", "0b4f7a6e-8e1f-4e43-9d3c-2a5f0d6b7c8e"}
        )
    assert settings.introspection_organizations == expected
    upper = Settings.from_env(
        {"INTROSPECTION_ORGANIZATIONS": "0B4F7A6E-8E1F-4E43-9D3C-2A5F0D6B7C8E"}
    )
    assert upper.introspection_organizations == {"0b4f7a6e-8e1f-4e43-9d3c-2a5f0d6b7c8e"}


@pytest.mark.parametrize(
    "value", ["acme", "Acme", "a", "acme,-bad-", "*,0b4f7a6e-8e1f-4e43-9d3c-2a5f0d6b7c8e", "x;y"]
)
def test_a_bad_setting_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="INTROSPECTION_ORGANIZATIONS"):
        Settings.from_env({"INTROSPECTION_ORGANIZATIONS": value})


def test_the_default_is_nobody() -> None:
    assert Settings.from_env({}).introspection_organizations == frozenset()
    assert Settings().introspection_organizations == frozenset()
