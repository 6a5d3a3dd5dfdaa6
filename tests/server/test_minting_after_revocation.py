"""A credential revoked on one replica mints nothing on another that still has it cached.

Two replicas share one database. The caller's token is verified (and so cached) on replica A;
the revocation runs on replica B. Replica A's invalidation channel is down (closed: see
auth/invalidations.py), so within TOKEN_CACHE_TTL it still believes the token for ordinary
calls (the documented bound while the channel is down), but CreateCliToken and
CreateServiceAccount re-read the caller's credential under a lock (auth/credential_locks.py)
and refuse, so no new secret outlives the revocation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2
from luman.organization.v1 import organization_service_pb2_grpc as org_grpc
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.server.organization_support import create_organization, sign_up
from tests.support import PASSWORD, FakeClock, bearer, register, rich_error, unique_email

GET_ME = auth_service_pb2.GetMeRequest()


@dataclasses.dataclass(frozen=True)
class Replica:
    auth: auth_service_pb2_grpc.AuthServiceStub
    orgs: org_grpc.OrganizationServiceStub


ReplicaFactory = Callable[[Settings], Replica]


@pytest.fixture
def replicas(
    sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[ReplicaFactory]:
    """Starts servers on the one database and clock, each with its own verified-token cache
    and its invalidation channel down: nothing but the TTL bounds what a cache believes."""
    started: list[tuple[App, grpc.Channel]] = []

    def start(settings: Settings) -> Replica:
        app = build_server(settings, sessions, clock=clock, hasher=hasher)
        app.start()
        assert app.invalidations is not None
        app.invalidations.close()
        channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
        started.append((app, channel))
        return Replica(
            auth_service_pb2_grpc.AuthServiceStub(channel),
            org_grpc.OrganizationServiceStub(channel),
        )

    yield start
    for app, channel in reversed(started):
        channel.close()
        app.stop(None)


def _refusal(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = rich_error(caught.value)
    return error.code, error.reason


REVOKED = (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")


def _create_cli_token(replica: Replica, credential: str) -> str:
    response = replica.auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="t"), metadata=bearer(credential)
    )
    token: str = response.token
    return token


def _create_service_account(replica: Replica, credential: str, slug: str) -> Any:
    return replica.orgs.CreateServiceAccount(
        organization_service_pb2.CreateServiceAccountRequest(
            slug=slug, name="billing", scopes=["read"]
        ),
        metadata=bearer(credential),
    )


def _logout_all(replica: Replica, credential: str) -> None:
    replica.auth.LogoutAll(
        auth_service_pb2.LogoutAllRequest(include_cli_tokens=True), metadata=bearer(credential)
    )


def test_an_access_token_logged_out_elsewhere_mints_no_personal_token(
    settings: Settings, replicas: ReplicaFactory
) -> None:
    a, b = replicas(settings), replicas(settings)
    access = register(a.auth).tokens.access_token
    a.auth.GetMe(GET_ME, metadata=bearer(access))  # cached on A
    _logout_all(b, access)
    a.auth.GetMe(GET_ME, metadata=bearer(access))  # still believed on A, within the TTL
    assert _refusal(lambda: _create_cli_token(a, access)) == REVOKED


def test_an_access_token_whose_session_was_revoked_elsewhere_mints_no_personal_token(
    settings: Settings, replicas: ReplicaFactory
) -> None:
    a, b = replicas(settings), replicas(settings)
    email = unique_email()
    doomed = register(a.auth, email=email).tokens.access_token
    a.auth.GetMe(GET_ME, metadata=bearer(doomed))  # cached on A
    other = b.auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))
    listed = b.auth.ListSessions(
        auth_service_pb2.ListSessionsRequest(), metadata=bearer(other.tokens.access_token)
    )
    (first,) = [s for s in listed.sessions if not s.current]
    b.auth.RevokeSession(
        auth_service_pb2.RevokeSessionRequest(session_id=first.id),
        metadata=bearer(other.tokens.access_token),
    )
    assert _refusal(lambda: _create_cli_token(a, doomed)) == REVOKED
    # The other sign-in is untouched and still mints.
    assert _create_cli_token(a, other.tokens.access_token).startswith("lmn_")


def test_an_access_token_issued_before_logout_all_mints_nothing_even_if_its_session_stayed_open(
    settings: Settings, replicas: ReplicaFactory, clock: FakeClock
) -> None:
    # Sessions that have expired are not revoked by LogoutAll (there is nothing to list); an
    # access token outliving its session (access lifetime above the refresh lifetime) is then
    # refused only by the user's not-before time, which minting checks under the lock too.
    long_access = dataclasses.replace(settings, jwt_expires_in=3600, jwt_refresh_expires_in=600)
    a, b = replicas(long_access), replicas(long_access)
    email = unique_email()
    stale = register(a.auth, email=email).tokens.access_token
    clock.advance(minutes=20)  # its session has expired; the access token has not
    a.auth.GetMe(GET_ME, metadata=bearer(stale))  # cached on A
    fresh = b.auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))
    clock.advance(seconds=1)
    _logout_all(b, fresh.tokens.access_token)
    a.auth.GetMe(GET_ME, metadata=bearer(stale))  # still believed on A, within the TTL
    assert _refusal(lambda: _create_cli_token(a, stale)) == REVOKED


def test_a_credential_revoked_elsewhere_mints_no_service_account(
    settings: Settings, replicas: ReplicaFactory
) -> None:
    a, b = replicas(settings), replicas(settings)
    owner = sign_up(a.auth)
    organization = create_organization(a.orgs, owner)
    personal = _create_cli_token(a, owner.token)
    for credential in (owner.token, personal):
        a.auth.GetMe(GET_ME, metadata=bearer(credential))  # cached on A
    _logout_all(b, owner.token)
    for credential in (owner.token, personal):
        a.auth.GetMe(GET_ME, metadata=bearer(credential))  # still believed on A
        mint = functools.partial(_create_service_account, a, credential, organization.slug)
        assert _refusal(mint) == REVOKED


def test_a_personal_token_revoked_elsewhere_mints_no_service_account(
    settings: Settings, replicas: ReplicaFactory
) -> None:
    a, b = replicas(settings), replicas(settings)
    owner = sign_up(a.auth)
    organization = create_organization(a.orgs, owner)
    response = a.auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="t"), metadata=owner.metadata
    )
    a.auth.GetMe(GET_ME, metadata=bearer(response.token))  # cached on A
    b.auth.RevokeCliToken(
        auth_service_pb2.RevokeCliTokenRequest(token_id=response.cli_token.id),
        metadata=owner.metadata,
    )
    assert (
        _refusal(lambda: _create_service_account(a, response.token, organization.slug)) == REVOKED
    )
    # The owner's own sign-in was not revoked, and still mints.
    assert _create_service_account(a, owner.token, organization.slug).secret


def test_a_personal_token_mints_a_service_account_until_it_expires(
    settings: Settings, replicas: ReplicaFactory, clock: FakeClock
) -> None:
    a = replicas(settings)
    owner = sign_up(a.auth)
    organization = create_organization(a.orgs, owner)
    ttl = dt.timedelta(hours=1)
    request = auth_service_pb2.CreateCliTokenRequest(name="t")
    request.ttl.FromTimedelta(ttl)
    token = a.auth.CreateCliToken(request, metadata=owner.metadata).token
    assert _create_service_account(a, token, organization.slug).secret
    clock.advance(hours=1)
    code, reason = _refusal(lambda: _create_service_account(a, token, organization.slug))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
