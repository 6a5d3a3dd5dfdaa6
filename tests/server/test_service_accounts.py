"""Service accounts end to end over gRPC: management and its permissions, the lms_ secret, the
exchange for a JWT that another service verifies offline from the JWKS, what a service token
may and may not call, and deletion on the next call despite the verified-token cache."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
from typing import Any

import grpc
import jwt
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from google.protobuf import json_format
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.client import token_format
from luman.organization.v1 import organization_pb2, organization_service_pb2
from luman.organization.v1 import organization_service_pb2_grpc as org_grpc
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db import migrate
from luman.server.db.base import Base
from luman.server.db.models import RequestLog, ServiceAccount
from luman.server.db.session import Sessions, make_engine
from tests.server.organization_support import (
    Account,
    add_member,
    create_organization,
    error_of,
    sign_up,
)
from tests.support import FakeClock, bearer

AuthStub = auth_service_pb2_grpc.AuthServiceStub
OrgStub = org_grpc.OrganizationServiceStub
ADMIN = organization_pb2.ORGANIZATION_ROLE_ADMIN
MEMBER = organization_pb2.ORGANIZATION_ROLE_MEMBER
GET_ME = auth_service_pb2.GetMeRequest()
# joserfc warns that RFC 9864 deprecates the "EdDSA" name; see tests/gateway/test_gateway_jwks.py.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")


def create_account(
    orgs: OrgStub,
    caller: Account,
    organization: organization_pb2.Organization,
    scopes: tuple[str, ...] = ("introspect",),
    name: str = "billing",
) -> organization_service_pb2.CreateServiceAccountResponse:
    response: organization_service_pb2.CreateServiceAccountResponse = orgs.CreateServiceAccount(
        organization_service_pb2.CreateServiceAccountRequest(
            slug=organization.slug, name=name, scopes=scopes
        ),
        metadata=caller.metadata,
    )
    return response


def service_token(auth: AuthStub, secret: str) -> str:
    response = auth.CreateServiceToken(auth_service_pb2.CreateServiceTokenRequest(secret=secret))
    token: str = response.access_token
    return token


def test_owners_and_admins_manage_members_are_denied_outsiders_learn_nothing(
    auth: AuthStub, orgs: OrgStub, clock: FakeClock
) -> None:
    owner, admin, member, outsider = (sign_up(auth, p) for p in ("o", "a", "m", "x"))
    organization = create_organization(orgs, owner)
    add_member(orgs, owner, organization, admin, ADMIN)
    add_member(orgs, owner, organization, member, MEMBER)

    by_owner = create_account(orgs, owner, organization, name="by-owner")
    clock.advance(seconds=1)
    by_admin = create_account(orgs, admin, organization, name="by-admin")
    assert by_owner.service_account.organization_id == organization.id
    assert list(by_owner.service_account.scopes) == ["introspect"]

    list_request = organization_service_pb2.ListServiceAccountsRequest(slug=organization.slug)
    listed = orgs.ListServiceAccounts(list_request, metadata=admin.metadata)
    assert [a.name for a in listed.service_accounts] == ["by-owner", "by-admin"]

    delete = organization_service_pb2.DeleteServiceAccountRequest(
        slug=organization.slug, service_account_id=by_admin.service_account.id
    )
    for caller, code, reason in (
        (member, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
        (outsider, grpc.StatusCode.NOT_FOUND, "ORGANIZATION_NOT_FOUND"),
    ):
        for call in (
            lambda c=caller: create_account(orgs, c, organization),
            lambda c=caller: orgs.ListServiceAccounts(list_request, metadata=c.metadata),
            lambda c=caller: orgs.DeleteServiceAccount(delete, metadata=c.metadata),
        ):
            error = error_of(call)
            assert (error.code, error.reason) == (code, reason)
    # An outsider's answer is the one for an organization that does not exist.
    unknown = error_of(
        lambda: orgs.ListServiceAccounts(
            organization_service_pb2.ListServiceAccountsRequest(slug="no-such-org"),
            metadata=outsider.metadata,
        )
    )
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "ORGANIZATION_NOT_FOUND")

    orgs.DeleteServiceAccount(delete, metadata=owner.metadata)
    again = error_of(lambda: orgs.DeleteServiceAccount(delete, metadata=owner.metadata))
    assert (again.code, again.reason) == (grpc.StatusCode.NOT_FOUND, "SERVICE_ACCOUNT_NOT_FOUND")
    listed = orgs.ListServiceAccounts(list_request, metadata=owner.metadata)
    assert [a.name for a in listed.service_accounts] == ["by-owner"]
    # Another organization's account cannot be deleted through this one.
    other = create_organization(orgs, owner)
    foreign = error_of(
        lambda: orgs.DeleteServiceAccount(
            organization_service_pb2.DeleteServiceAccountRequest(
                slug=other.slug, service_account_id=by_owner.service_account.id
            ),
            metadata=owner.metadata,
        )
    )
    assert foreign.reason == "SERVICE_ACCOUNT_NOT_FOUND"


def test_the_secret_is_shown_once_checksummed_and_stored_only_hashed(
    auth: AuthStub, orgs: OrgStub, sessions: Sessions
) -> None:
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    created = create_account(orgs, owner, organization)
    secret = created.secret
    assert secret.startswith("lms_")
    assert len(secret) == 53
    assert token_format.verify_checksum(secret, token_format.SERVICE_PREFIX)
    assert not token_format.verify_checksum(secret)  # not a personal token
    assert created.service_account.secret_hint == "lms_..." + secret[-4:]

    listed = orgs.ListServiceAccounts(
        organization_service_pb2.ListServiceAccountsRequest(organization_id=organization.id),
        metadata=owner.metadata,
    )
    assert secret not in str(listed)
    assert listed.service_accounts[0] == created.service_account

    with sessions.read.begin() as session:
        row = session.scalars(sa.select(ServiceAccount)).one()
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert all(secret not in str(value) for value in vars(row).values())


def test_listing_pages_in_creation_order(auth: AuthStub, orgs: OrgStub, clock: FakeClock) -> None:
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    for index in range(5):
        create_account(orgs, owner, organization, name=f"svc-{index}")
        clock.advance(seconds=1)
    names: list[str] = []
    token = ""
    while True:
        page = orgs.ListServiceAccounts(
            organization_service_pb2.ListServiceAccountsRequest(
                slug=organization.slug, page_size=2, page_token=token
            ),
            metadata=owner.metadata,
        )
        names += [a.name for a in page.service_accounts]
        token = page.next_page_token
        if not token:
            break
    assert names == [f"svc-{index}" for index in range(5)]


def test_the_exchanged_token_verifies_offline_from_the_published_jwks(
    auth: AuthStub, orgs: OrgStub, clock: FakeClock
) -> None:
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    created = create_account(orgs, owner, organization)
    response = auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=created.secret)
    )
    assert response.token_type == "Bearer"
    assert list(response.scopes) == ["introspect"]
    # JWT_EXPIRES_IN (15 min by default), like a user's access token.
    assert response.access_token_expire_time.ToDatetime(dt.UTC) == clock() + dt.timedelta(
        minutes=15
    )

    jwks = json_format.MessageToDict(auth.GetJwks(auth_service_pb2.GetJwksRequest()))
    key_set = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    decoded = jose_jwt.decode(response.access_token, key_set, algorithms=["EdDSA"])
    jose_jwt.JWTClaimsRegistry(
        now=int(clock().timestamp()),
        iss={"essential": True, "value": "luman"},
        aud={"essential": True, "value": "luman-api"},
        sub={"essential": True, "value": created.service_account.id},
        typ={"essential": True, "value": "service"},
        org_id={"essential": True, "value": organization.id},
        scope={"essential": True, "value": "introspect"},
    ).validate(decoded.claims)
    assert decoded.header["kid"] == jwks["keys"][0]["kid"]


def test_a_bad_secret_gets_one_answer(auth: AuthStub, orgs: OrgStub) -> None:
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    secret = create_account(orgs, owner, organization).secret
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")  # checksum no longer matches
    for bad in (
        flipped,
        token_format.new_token(token_format.SERVICE_PREFIX),  # well formed, never issued
        token_format.new_token(),  # a personal token's format
        "lms_short",
    ):
        error = error_of(
            functools.partial(
                auth.CreateServiceToken, auth_service_pb2.CreateServiceTokenRequest(secret=bad)
            )
        )
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CREDENTIALS",
        ), bad
    empty = error_of(
        lambda: auth.CreateServiceToken(auth_service_pb2.CreateServiceTokenRequest(secret=""))
    )
    assert (empty.code, list(empty.field_violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["secret"],
    )


# Which RPCs a service token may call: tests/server/test_service_caller_refusals.py, driven by
# the contract.


def test_deleting_the_account_fails_its_token_on_the_next_call_and_its_secret_at_once(
    auth: AuthStub, orgs: OrgStub
) -> None:
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    created = create_account(orgs, owner, organization)
    token = service_token(auth, created.secret)
    request = auth_service_pb2.IntrospectTokenRequest(token=token)
    # Verified and cached (TOKEN_CACHE_TTL is 30 s), twice over.
    for _ in range(2):
        assert auth.IntrospectToken(request, metadata=bearer(token)).active
    orgs.DeleteServiceAccount(
        organization_service_pb2.DeleteServiceAccountRequest(
            slug=organization.slug, service_account_id=created.service_account.id
        ),
        metadata=owner.metadata,
    )
    refused = error_of(lambda: auth.IntrospectToken(request, metadata=bearer(token)))
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    secret = error_of(lambda: service_token(auth, created.secret))
    assert secret.reason == "INVALID_CREDENTIALS"


def test_an_expired_service_token_is_refused(
    auth: AuthStub, orgs: OrgStub, clock: FakeClock
) -> None:
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    token = service_token(auth, create_account(orgs, owner, organization).secret)
    request = auth_service_pb2.IntrospectTokenRequest(token=token)
    auth.IntrospectToken(request, metadata=bearer(token))  # cached
    clock.advance(minutes=15)
    expired = error_of(lambda: auth.IntrospectToken(request, metadata=bearer(token)))
    assert (expired.code, expired.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


def test_bad_management_input_gets_invalid_argument_naming_the_field(
    auth: AuthStub, orgs: OrgStub
) -> None:
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    cases: list[tuple[Any, list[str]]] = [
        (
            organization_service_pb2.CreateServiceAccountRequest(
                slug=organization.slug, name="", scopes=["introspect"]
            ),
            ["name"],
        ),
        (
            organization_service_pb2.CreateServiceAccountRequest(
                slug=organization.slug, name="x" * 101, scopes=["introspect"]
            ),
            ["name"],
        ),
        (
            organization_service_pb2.CreateServiceAccountRequest(
                slug=organization.slug, name="svc", scopes=["admin"]
            ),
            ["scopes"],
        ),
        (
            organization_service_pb2.CreateServiceAccountRequest(slug=organization.slug, name="s"),
            ["scopes"],
        ),
        (
            organization_service_pb2.CreateServiceAccountRequest(
                organization_id="not-a-uuid", name="svc", scopes=["introspect"]
            ),
            ["organization_id"],
        ),
        (
            organization_service_pb2.CreateServiceAccountRequest(name="s", scopes=["introspect"]),
            ["organization"],
        ),
    ]
    for request, fields in cases:
        error = error_of(
            functools.partial(orgs.CreateServiceAccount, request, metadata=owner.metadata)
        )
        assert (error.code, list(error.field_violations)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            fields,
        ), request
    bad_id = error_of(
        lambda: orgs.DeleteServiceAccount(
            organization_service_pb2.DeleteServiceAccountRequest(
                slug=organization.slug, service_account_id="42"
            ),
            metadata=owner.metadata,
        )
    )
    assert list(bad_id.field_violations) == ["service_account_id"]
    bad_page = error_of(
        lambda: orgs.ListServiceAccounts(
            organization_service_pb2.ListServiceAccountsRequest(
                slug=organization.slug, page_size=-1, page_token="junk"
            ),
            metadata=owner.metadata,
        )
    )
    assert sorted(bad_page.field_violations) == ["page_size", "page_token"]


def test_migration_0007_matches_the_model_and_goes_down_and_up(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            differences = [
                difference
                for difference in compare_metadata(MigrationContext.configure(conn), Base.metadata)
                if "service_accounts" in repr(difference)
            ]
        assert differences == []
        migrate.downgrade(engine, "0006")
        assert "service_accounts" not in sa.inspect(engine).get_table_names()
        migrate.upgrade(engine)
        assert "service_accounts" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_under_hs256_service_tokens_are_signed_with_jwt_secret(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    app = build_server(
        dataclasses.replace(settings, jwt_algorithm="HS256"), sessions, clock=clock, hasher=hasher
    )
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            auth, orgs = auth_service_pb2_grpc.AuthServiceStub(channel), OrgStub(channel)
            owner = sign_up(auth)
            organization = create_organization(orgs, owner)
            token = service_token(auth, create_account(orgs, owner, organization).secret)
            assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "service+jwt"}
            claims = jwt.decode(
                token,
                settings.jwt_secret,
                algorithms=["HS256"],
                audience=settings.jwt_audience,
                options={"verify_exp": False, "verify_iat": False},
            )
            assert (claims["typ"], claims["org_id"]) == ("service", organization.id)
            found = auth.IntrospectToken(
                auth_service_pb2.IntrospectTokenRequest(token=owner.token), metadata=bearer(token)
            )
            assert found.active
            assert found.kid == ""  # HS256 tokens name no key
    finally:
        app.stop(None)


def test_the_request_log_records_the_service_account_as_the_caller(
    app: App, auth: AuthStub, orgs: OrgStub, sessions: Sessions
) -> None:
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    created = create_account(orgs, owner, organization)
    token = service_token(auth, created.secret)
    auth.IntrospectToken(
        auth_service_pb2.IntrospectTokenRequest(token=token), metadata=bearer(token)
    )
    assert app.request_log is not None
    assert app.request_log.flush(timeout=10)
    with sessions.read.begin() as session:
        callers = session.scalars(
            sa.select(RequestLog.user_id).where(RequestLog.method.like("%IntrospectToken"))
        ).all()
    assert [str(caller) for caller in callers] == [created.service_account.id]
