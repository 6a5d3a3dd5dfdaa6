"""Personal-token lineage through the real stack: a token created with a personal token never
outlives it and is revoked with it (RevokeCliToken), descendants included; any token can sign
itself out whatever its scopes, and only itself (CliLogout); a method no contract lists fails
closed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.models import CliToken
from luman.server.db.session import Sessions
from tests.support import PASSWORD, FakeClock, RichError, bearer, register, rich_error, unique_email

Stub = auth_service_pb2_grpc.AuthServiceStub
GET_ME = auth_service_pb2.GetMeRequest()


@dataclasses.dataclass(frozen=True)
class Issued:
    id: str
    token: str
    expire_time: dt.datetime | None


def _create(auth: Stub, credential: str, scopes: tuple[str, ...] = (), **expiry: Any) -> Issued:
    response = auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="t", scopes=list(scopes), **expiry),
        metadata=bearer(credential),
    )
    cli_token = response.cli_token
    expires = (
        cli_token.expire_time.ToDatetime(dt.UTC) if cli_token.HasField("expire_time") else None
    )
    return Issued(cli_token.id, response.token, expires)


def _ttl(**delta: float) -> duration_pb2.Duration:
    ttl = duration_pb2.Duration()
    ttl.FromTimedelta(dt.timedelta(**delta))
    return ttl


def _at(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _error(call: Any, request: object, credential: str | None) -> RichError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=bearer(credential) if credential else None)
    return rich_error(caught.value)


def _works(auth: Stub, token: str) -> bool:
    try:
        auth.GetMe(GET_ME, metadata=bearer(token))
    except grpc.RpcError as exc:
        error = rich_error(exc)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
        return False
    return True


def _authenticates(auth: Stub, token: str) -> bool:
    """Whether the token still proves who calls: refused only for its scope counts as yes."""
    try:
        auth.GetMe(GET_ME, metadata=bearer(token))
    except grpc.RpcError as exc:
        error = rich_error(exc)
        if (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE"):
            return True
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
        return False
    return True


def _parent_of(sessions: Sessions, token_id: str) -> uuid.UUID | None:
    with sessions.read.begin() as session:
        row = session.get(CliToken, uuid.UUID(token_id))
        assert row is not None
        return row.parent_id


# Expiry: a child never outlives its parent.


def test_a_child_of_a_short_lived_token_expires_with_it(auth: Stub, clock: FakeClock) -> None:
    access = register(auth).tokens.access_token
    parent = _create(auth, access, ttl=_ttl(hours=1))
    # Asked for nothing (the server has no cap: it would never expire), it gets the parent's.
    child = _create(auth, parent.token)
    assert child.expire_time == parent.expire_time == clock() + dt.timedelta(hours=1)
    clock.advance(hours=1)
    error = _error(auth.GetMe, GET_ME, child.token)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


@pytest.mark.parametrize("field", ["ttl", "expire_time"])
def test_a_child_cannot_ask_to_outlive_its_parent(auth: Stub, clock: FakeClock, field: str) -> None:
    parent = _create(auth, register(auth).tokens.access_token, ttl=_ttl(hours=1))
    longer = (
        {"ttl": _ttl(hours=2)}
        if field == "ttl"
        else {"expire_time": _at(clock() + dt.timedelta(hours=2))}
    )
    error = _error(
        auth.CreateCliToken,
        auth_service_pb2.CreateCliTokenRequest(name="t", **longer),
        parent.token,
    )
    assert (error.code, list(error.field_violations)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    assert "outlive" in error.field_violations[field]


def test_a_child_may_expire_before_its_parent(auth: Stub, clock: FakeClock) -> None:
    parent = _create(auth, register(auth).tokens.access_token, ttl=_ttl(hours=1))
    assert _create(auth, parent.token, ttl=_ttl(minutes=30)).expire_time == clock() + dt.timedelta(
        minutes=30
    )
    # Exactly the parent's expiry is not outliving it.
    exact = _create(auth, parent.token, expire_time=_at(clock() + dt.timedelta(hours=1)))
    assert exact.expire_time == parent.expire_time


def test_a_child_of_a_token_without_expiry_keeps_what_it_asks_for(auth: Stub) -> None:
    parent = _create(auth, register(auth).tokens.access_token)
    assert parent.expire_time is None
    assert _create(auth, parent.token).expire_time is None


def test_the_parent_is_recorded_only_for_personal_credentials(
    auth: Stub, sessions: Sessions
) -> None:
    email = unique_email()
    access = register(auth, email=email).tokens.access_token
    from_access = _create(auth, access)
    child = _create(auth, from_access.token)
    grandchild = _create(auth, child.token)
    login = auth.CliLogin(auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD))
    assert _parent_of(sessions, from_access.id) is None
    assert _parent_of(sessions, login.cli_token.id) is None
    assert _parent_of(sessions, child.id) == uuid.UUID(from_access.id)
    assert _parent_of(sessions, grandchild.id) == uuid.UUID(child.id)


# Revocation: revoking a token revokes what it minted.


def test_revoking_a_token_revokes_its_descendants_despite_the_cache(auth: Stub) -> None:
    access = register(auth).tokens.access_token
    root = _create(auth, access)
    child = _create(auth, root.token)
    grandchild = _create(auth, child.token)
    sibling = _create(auth, root.token)
    unrelated = _create(auth, access)
    tokens = [root, child, grandchild, sibling, unrelated]
    # Every one verified once, so every one sits in the verified-token cache.
    assert all(_works(auth, issued.token) for issued in tokens)

    auth.RevokeCliToken(
        auth_service_pb2.RevokeCliTokenRequest(token_id=root.id), metadata=bearer(access)
    )

    assert [_works(auth, issued.token) for issued in tokens] == [False, False, False, False, True]
    listed = auth.ListCliTokens(auth_service_pb2.ListCliTokensRequest(), metadata=bearer(access))
    assert [token.id for token in listed.cli_tokens] == [unrelated.id]


def test_revoking_a_child_leaves_its_parent(auth: Stub) -> None:
    access = register(auth).tokens.access_token
    root = _create(auth, access)
    child = _create(auth, root.token)
    grandchild = _create(auth, child.token)
    # The child revoked with its own parent as the credential.
    auth.RevokeCliToken(
        auth_service_pb2.RevokeCliTokenRequest(token_id=child.id), metadata=bearer(root.token)
    )
    assert [_works(auth, issued.token) for issued in (root, child, grandchild)] == [
        True,
        False,
        False,
    ]


@pytest.mark.parametrize("scope", ["read", "write"])
def test_any_token_signs_itself_out_and_only_itself(auth: Stub, scope: str) -> None:
    access = register(auth).tokens.access_token
    root = _create(auth, access)
    minted = _create(auth, root.token, scopes=(scope,))
    # A write-only token can mint (write only: it cannot hand out read); a read-only one cannot.
    grandchild = _create(auth, minted.token, scopes=("write",)) if scope == "write" else None
    # A write-only or read-only token can always sign itself out...
    auth.CliLogout(auth_service_pb2.CliLogoutRequest(), metadata=bearer(minted.token))
    assert not _works(auth, minted.token)
    if grandchild is not None:
        # ...and what it made stays (a CI token, say)
        assert _authenticates(auth, grandchild.token)
    assert _works(auth, root.token)
    auth.CliLogout(auth_service_pb2.CliLogoutRequest(), metadata=bearer(root.token))
    assert not _works(auth, root.token)
    if grandchild is not None:
        assert _authenticates(auth, grandchild.token)


# A revocation on another replica, while the parent still sits in this one's cache (its
# invalidation channel down, so that only the TTL bounds what it believes).


@pytest.fixture
def other_replica(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[Stub]:
    replica = build_server(settings, sessions, clock=clock, hasher=hasher)
    replica.start()
    with grpc.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)
    replica.stop(None)


def test_a_parent_revoked_elsewhere_cannot_mint_from_a_stale_cache(
    app: App, auth: Stub, other_replica: Stub
) -> None:
    assert app.invalidations is not None
    app.invalidations.close()
    access = register(auth).tokens.access_token
    parent = _create(auth, access)
    assert _works(auth, parent.token)  # cached here
    other_replica.RevokeCliToken(
        auth_service_pb2.RevokeCliTokenRequest(token_id=parent.id), metadata=bearer(access)
    )
    assert _works(auth, parent.token)  # still believed here, until TOKEN_CACHE_TTL
    # Minting reads the parent in the database: no child escapes the revocation.
    error = _error(
        auth.CreateCliToken, auth_service_pb2.CreateCliTokenRequest(name="t"), parent.token
    )
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")


# A method no contract lists: the scope check fails closed; infrastructure keeps working.

UNLISTED = "/luman.test.v1.Unlisted/Echo"


@pytest.fixture
def app_with_unlisted(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[App]:
    """The real server plus one service that methods.SERVICES does not list."""
    app = build_server(settings, sessions, clock=clock, hasher=hasher)
    handler = grpc.method_handlers_generic_handler(
        "luman.test.v1.Unlisted",
        {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, _context: request)},
    )
    app.server.add_generic_rpc_handlers((handler,))
    app.start()
    yield app
    app.stop(None)


def test_a_method_no_contract_lists_needs_write(app_with_unlisted: App) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{app_with_unlisted.port}") as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        access = register(auth).tokens.access_token
        read_only = _create(auth, access, scopes=("read",)).token
        read_write = _create(auth, access).token
        # Raw bytes both ways: the service has no contract to (de)serialize with.
        echo = channel.unary_unary(UNLISTED, request_serializer=None, response_deserializer=None)
        error = _error(echo, b"hi", read_only)
        assert (error.code, error.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_SCOPE",
        )
        assert echo(b"hi", metadata=bearer(read_write)) == b"hi"
        assert echo(b"hi", metadata=bearer(access)) == b"hi"
        no_token = _error(echo, b"hi", None)
        assert no_token.code == grpc.StatusCode.UNAUTHENTICATED
        # Health answers anyone, a read-only token included: it never looks at credentials.
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), metadata=bearer(read_only))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
