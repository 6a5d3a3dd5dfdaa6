"""The CLI token flow: CliLogin, use, last-use recording, CliLogout and revocation."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2, organization_service_pb2_grpc
from luman.server.db.base import Base
from luman.server.db.models import CliToken
from luman.server.db.session import Sessions
from tests.support import PASSWORD, FakeClock, RichError, bearer, register, rich_error, unique_email

Stub = auth_service_pb2_grpc.AuthServiceStub
# "lmn_" + 43 base62 characters (256 random bits) + a 6-character base62 CRC32 checksum.
CLI_TOKEN = re.compile(r"lmn_[0-9A-Za-z]{49}")


def _cli_login(auth: Stub, email: str, token_name: str = "") -> auth_service_pb2.CliLoginResponse:
    response: auth_service_pb2.CliLoginResponse = auth.CliLogin(
        auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD, token_name=token_name)
    )
    return response


def _signed_up(auth: Stub) -> str:
    email = unique_email()
    register(auth, email=email)
    return email


def _error(call: Any, request: object, token: str) -> RichError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=bearer(token))
    return rich_error(caught.value)


def _last_use(sessions: Sessions, token_id: str) -> dt.datetime | None:
    with sessions.read() as session:
        stored = session.get(CliToken, uuid.UUID(token_id))
        assert stored is not None
        return stored.last_use_time


def test_cli_login_returns_a_prefixed_256_bit_token_shown_once(
    auth: Stub, clock: FakeClock
) -> None:
    email = _signed_up(auth)
    response = _cli_login(auth, email, token_name="  laptop.local ")
    assert CLI_TOKEN.fullmatch(response.token)
    assert response.user.email == email
    assert response.cli_token.name == "laptop.local"
    assert response.cli_token.create_time.ToDatetime(dt.UTC) == clock()
    assert not response.cli_token.HasField("last_use_time")
    assert _cli_login(auth, email).token != response.token


def test_cli_token_is_stored_only_as_its_sha256(auth: Stub, sessions: Sessions) -> None:
    email = _signed_up(auth)
    secret = _cli_login(auth, email).token
    digest = hashlib.sha256(secret.encode()).hexdigest()
    body = secret.removeprefix("lmn_")
    with sessions.engine.connect() as conn:
        everything = [
            str(value)
            for table in Base.metadata.sorted_tables
            for row in conn.execute(sa.select(table))
            for value in row
        ]
        assert conn.execute(sa.select(CliToken.token_hash)).scalars().all() == [digest]
    assert not [value for value in everything if body in value]


def test_get_me_with_cli_token_records_last_use_to_the_minute(
    auth: Stub, sessions: Sessions, clock: FakeClock
) -> None:
    email = _signed_up(auth)
    login = _cli_login(auth, email)
    start = clock()

    me = auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(login.token))
    assert me.user == login.user
    assert _last_use(sessions, login.cli_token.id) == start

    clock.advance(seconds=59)
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(login.token))
    assert _last_use(sessions, login.cli_token.id) == start  # not rewritten on every call

    clock.advance(seconds=1)
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(login.token))
    assert _last_use(sessions, login.cli_token.id) == start + dt.timedelta(minutes=1)


def test_cli_token_is_long_lived(auth: Stub, clock: FakeClock) -> None:
    token = _cli_login(auth, _signed_up(auth)).token
    clock.advance(days=365)
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(token))


def test_cli_token_works_on_other_services(
    auth: Stub, orgs: organization_service_pb2_grpc.OrganizationServiceStub
) -> None:
    token = _cli_login(auth, _signed_up(auth)).token
    created = orgs.CreateOrganization(
        organization_service_pb2.CreateOrganizationRequest(name="Acme", slug="acme-cli"),
        metadata=bearer(token),
    )
    listed = orgs.ListOrganizations(
        organization_service_pb2.ListOrganizationsRequest(), metadata=bearer(token)
    )
    assert [o.id for o in listed.organizations] == [created.organization.id]


def test_cli_logout_revokes_the_token_at_its_very_next_use(auth: Stub, sessions: Sessions) -> None:
    email = _signed_up(auth)
    login = _cli_login(auth, email)
    other = _cli_login(auth, email).token
    access = auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))

    auth.CliLogout(auth_service_pb2.CliLogoutRequest(), metadata=bearer(login.token))

    for call, request in (
        (auth.GetMe, auth_service_pb2.GetMeRequest()),
        (auth.CliLogout, auth_service_pb2.CliLogoutRequest()),
    ):
        error = _error(call, request, login.token)
        assert error.code == grpc.StatusCode.UNAUTHENTICATED
        assert error.reason == "TOKEN_REVOKED"
    # Only that token: the user's other CLI token and access tokens keep working.
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(other))
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(access.tokens.access_token))


def test_cli_logout_with_an_access_token_is_failed_precondition(auth: Stub) -> None:
    access = register(auth).tokens.access_token
    error = _error(auth.CliLogout, auth_service_pb2.CliLogoutRequest(), access)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "NOT_A_CLI_TOKEN"
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(access))  # nothing was revoked


def test_cli_logout_without_a_token_is_unauthenticated(auth: Stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        auth.CliLogout(auth_service_pb2.CliLogoutRequest())
    assert rich_error(caught.value).code == grpc.StatusCode.UNAUTHENTICATED


def test_altered_cli_token_is_invalid(auth: Stub) -> None:
    token = _cli_login(auth, _signed_up(auth)).token
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for candidate in (altered, token + "x", token[:-1], "lmn_", token.upper()):
        error = _error(auth.GetMe, auth_service_pb2.GetMeRequest(), candidate)
        assert error.code == grpc.StatusCode.UNAUTHENTICATED
        assert error.reason == "TOKEN_INVALID"
