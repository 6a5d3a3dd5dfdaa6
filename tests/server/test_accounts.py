"""The caller's own account: UpdateMe, ChangePassword and DeleteMe through the real server on
SQLite and PostgreSQL, with the audit events each writes. Tokens are used once before each
change, so the verified-token cache (on in the test settings) holds them: a refusal right
after shows the cache was invalidated."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import TypeVar

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select

from luman.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2, organization_service_pb2_grpc
from luman.server.app import App
from luman.server.db.models import AuditEvent, CliToken, LoginSession, Membership, User
from luman.server.db.session import Sessions
from tests.server.organization_support import (
    MEMBER,
    OWNER,
    Account,
    add_member,
    create_organization,
    roles_by_user,
    sign_up,
    unique_slug,
)
from tests.support import (
    PASSWORD,
    RichError,
    bearer,
    get_me,
    refused_reason,
    rich_error,
)

Stub = auth_service_pb2_grpc.AuthServiceStub
OrgStub = organization_service_pb2_grpc.OrganizationServiceStub
NEW_PASSWORD = "a brand new passphrase"
T = TypeVar("T")


def _error(call: Callable[[], object]) -> tuple[RichError, grpc.RpcError]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return rich_error(caught.value), caught.value


def _details(exc: grpc.RpcError) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The ErrorInfo metadata and the PreconditionFailure violations (type, subject)."""
    assert isinstance(exc, grpc.Call)
    status = rpc_status.from_call(exc)
    assert status is not None
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            violations = [(v.type, v.subject) for v in failure.violations]
    return metadata, violations


def _events(sessions: Sessions, user_id: str, action: str) -> list[AuditEvent]:
    with sessions.read.begin() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.user_id == uuid.UUID(user_id), AuditEvent.action == action
                )
            )
        )


def _login(auth: Stub, email: str, password: str = PASSWORD) -> auth_service_pb2.LoginResponse:
    response: auth_service_pb2.LoginResponse = auth.Login(
        auth_service_pb2.LoginRequest(email=email, password=password)
    )
    return response


def _cli_token(auth: Stub, email: str) -> str:
    return str(
        auth.CliLogin(auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD)).token
    )


def _update(auth: Stub, token: str, name: str, *paths: str) -> auth_service_pb2.UpdateMeResponse:
    request = auth_service_pb2.UpdateMeRequest(user=auth_pb2.User(name=name))
    if paths:
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(paths)))
    response: auth_service_pb2.UpdateMeResponse = auth.UpdateMe(request, metadata=bearer(token))
    return response


def _change(
    auth: Stub, token: str, current: str = PASSWORD, new: str = NEW_PASSWORD, revoke: bool = False
) -> auth_service_pb2.ChangePasswordResponse:
    response: auth_service_pb2.ChangePasswordResponse = auth.ChangePassword(
        auth_service_pb2.ChangePasswordRequest(
            current_password=current, new_password=new, revoke_cli_tokens=revoke
        ),
        metadata=bearer(token),
    )
    return response


def _delete(auth: Stub, token: str, password: str = PASSWORD) -> None:
    auth.DeleteMe(auth_service_pb2.DeleteMeRequest(password=password), metadata=bearer(token))


def _delete_at_once(app: App, *accounts: Account) -> dict[str, str]:
    """DeleteMe for each account on a thread and a channel of its own, released together:
    each account id -> "deleted" or the error's reason."""
    barrier = threading.Barrier(len(accounts))
    outcomes: dict[str, str] = {}

    def delete(account: Account) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            barrier.wait()
            try:
                _delete(stub, account.token)
                outcomes[account.id] = "deleted"
            except grpc.RpcError as exc:
                outcomes[account.id] = rich_error(exc).reason

    threads = [threading.Thread(target=delete, args=(account,)) for account in accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


# UpdateMe


def test_update_me_changes_the_name_at_once(auth: Stub, sessions: Sessions) -> None:
    account = sign_up(auth, "ada")
    assert get_me(auth, account.token).user.name == "Ada"  # cached now

    updated = _update(auth, account.token, "  Ada Lovelace ", "name").user
    assert (updated.id, updated.email, updated.name) == (account.id, account.email, "Ada Lovelace")
    assert get_me(auth, account.token).user.name == "Ada Lovelace"

    # AIP-134: an empty mask means the fields set; "*" means every updatable field.
    assert _update(auth, account.token, "Countess").user.name == "Countess"
    assert _update(auth, account.token, "Ada", "*").user.name == "Ada"

    (event, *_) = _events(sessions, account.id, "account.updated")
    assert (event.target_type, event.target_id) == ("user", account.id)
    assert (event.actor_type, str(event.actor_id)) == ("user", account.id)
    assert json.loads(event.details) == {"fields": "name"}
    assert len(_events(sessions, account.id, "account.updated")) == 3


@pytest.mark.parametrize(
    ("name", "paths", "field"),
    [
        ("Ada", ("nickname",), "update_mask"),
        ("Ada", ("email",), "update_mask"),
        ("Ada", ("name", "id"), "update_mask"),
        ("", ("name",), "user.name"),
        ("x" * 101, ("name",), "user.name"),
        ("", (), "user"),
    ],
)
def test_update_me_bad_request_names_the_field(
    auth: Stub, name: str, paths: tuple[str, ...], field: str
) -> None:
    account = sign_up(auth)
    error, _ = _error(lambda: _update(auth, account.token, name, *paths))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == {field}
    assert get_me(auth, account.token).user.name == "User"


def test_update_me_needs_write(auth: Stub) -> None:
    account = sign_up(auth)
    read_only = auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="ro", scopes=["read"]),
        metadata=account.metadata,
    ).token
    error, _ = _error(lambda: _update(auth, read_only, "Eve", "name"))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")


# ChangePassword


def test_change_password_keeps_the_calling_session_only(auth: Stub, sessions: Sessions) -> None:
    account = sign_up(auth)
    other = _login(auth, account.email).tokens
    cli = _cli_token(auth, account.email)
    for token in (account.token, other.access_token, cli):
        get_me(auth, token)  # cached

    changed = _change(auth, account.token)
    assert (changed.revoked_session_count, changed.revoked_cli_token_count) == (1, 0)

    assert get_me(auth, account.token).user.id == account.id  # the calling session works
    assert refused_reason(auth, other.access_token) == "TOKEN_REVOKED"
    refreshed, _ = _error(
        lambda: auth.RefreshToken(
            auth_service_pb2.RefreshTokenRequest(refresh_token=other.refresh_token)
        )
    )
    assert refreshed.code == grpc.StatusCode.UNAUTHENTICATED
    assert get_me(auth, cli).user.id == account.id  # CLI tokens stay without the flag

    old, _ = _error(lambda: _login(auth, account.email))
    assert old.reason == "INVALID_CREDENTIALS"
    assert _login(auth, account.email, NEW_PASSWORD).user.id == account.id

    (event,) = _events(sessions, account.id, "account.password_changed")
    assert json.loads(event.details) == {"revoked_cli_tokens": 0, "revoked_sessions": 1}
    assert NEW_PASSWORD not in event.details


def test_change_password_with_a_cli_token_revokes_sessions_and_other_tokens(
    auth: Stub, sessions: Sessions
) -> None:
    account = sign_up(auth)
    calling, other = _cli_token(auth, account.email), _cli_token(auth, account.email)
    for token in (account.token, calling, other):
        get_me(auth, token)

    changed = _change(auth, calling, revoke=True)
    assert (changed.revoked_session_count, changed.revoked_cli_token_count) == (1, 1)
    assert get_me(auth, calling).user.id == account.id
    assert refused_reason(auth, account.token) == "TOKEN_REVOKED"
    assert refused_reason(auth, other) == "TOKEN_REVOKED"
    with sessions.read.begin() as session:
        open_tokens = session.scalars(
            select(CliToken.id).where(
                CliToken.user_id == uuid.UUID(account.id), CliToken.revoke_time.is_(None)
            )
        ).all()
    assert len(open_tokens) == 1


def test_change_password_wrong_password_changes_nothing(auth: Stub, sessions: Sessions) -> None:
    account = sign_up(auth)
    other = _login(auth, account.email).tokens
    error, _ = _error(lambda: _change(auth, account.token, current="not the password"))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert get_me(auth, other.access_token).user.id == account.id
    assert _login(auth, account.email).user.id == account.id
    assert _events(sessions, account.id, "account.password_changed") == []


@pytest.mark.parametrize(
    ("current", "new", "fields"),
    [
        ("", NEW_PASSWORD, {"current_password"}),
        (PASSWORD, "short", {"new_password"}),
        (PASSWORD, "x" * 73, {"new_password"}),
        ("", "", {"current_password", "new_password"}),
    ],
)
def test_change_password_bad_request_names_the_fields(
    auth: Stub, current: str, new: str, fields: set[str]
) -> None:
    account = sign_up(auth)
    error, _ = _error(lambda: _change(auth, account.token, current=current, new=new))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == fields


# DeleteMe


def test_delete_me_cascades_and_keeps_the_audit_event(
    auth: Stub, orgs: OrgStub, sessions: Sessions
) -> None:
    owner, leaving = sign_up(auth, "owner"), sign_up(auth, "leaving")
    organization = create_organization(orgs, owner)
    add_member(orgs, owner, organization, leaving, MEMBER)
    shared = create_organization(orgs, leaving)
    add_member(orgs, leaving, shared, owner, OWNER)  # co-owned: not the last owner
    cli = _cli_token(auth, leaving.email)
    for token in (leaving.token, cli):
        get_me(auth, token)

    _delete(auth, leaving.token)

    # Every credential of the account fails on its next call, cached or not.
    assert refused_reason(auth, leaving.token) in {"TOKEN_INVALID", "TOKEN_REVOKED"}
    assert refused_reason(auth, cli) in {"TOKEN_INVALID", "TOKEN_REVOKED"}
    error, _ = _error(lambda: _login(auth, leaving.email))
    assert error.reason == "INVALID_CREDENTIALS"
    assert leaving.id not in roles_by_user(orgs, owner, organization)
    assert roles_by_user(orgs, owner, shared) == {owner.id: OWNER}
    user_id = uuid.UUID(leaving.id)
    with sessions.read.begin() as session:
        assert session.get(User, user_id) is None
        for model in (LoginSession, CliToken, Membership):
            assert session.scalars(select(model).where(model.user_id == user_id)).all() == []

    (event,) = _events(sessions, leaving.id, "account.deleted")
    assert (event.target_type, event.target_id, str(event.actor_id)) == (
        "user",
        leaving.id,
        leaving.id,
    )
    assert json.loads(event.details) == {"organizations_left": 2}
    # Each organization's log shows the member leaving with the account.
    removed = _events(sessions, leaving.id, "member.removed")
    assert {str(e.organization_id) for e in removed} == {organization.id, shared.id}
    assert {json.loads(e.details)["role"] for e in removed} == {"member", "owner"}
    assert all(json.loads(e.details)["account_deleted"] for e in removed)
    # The email can be registered again: the account is gone, not disabled.
    assert sign_up(auth).id != leaving.id


def test_delete_me_refused_for_the_last_owner(
    auth: Stub, orgs: OrgStub, sessions: Sessions
) -> None:
    owner, co_owner = sign_up(auth, "owner"), sign_up(auth, "co")
    slugs = sorted([unique_slug("b"), unique_slug("a")])
    for slug in slugs:
        create_organization(orgs, owner, slug=slug)
    shared = create_organization(orgs, owner)
    add_member(orgs, owner, shared, co_owner, OWNER)

    error, exc = _error(lambda: _delete(auth, owner.token))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LAST_OWNER")
    metadata, violations = _details(exc)
    assert metadata == {"organizations": ",".join(slugs)}
    assert violations == [("LAST_OWNER", f"organizations/{slug}") for slug in slugs]
    assert all(slug in error.message for slug in slugs)
    assert get_me(auth, owner.token).user.id == owner.id
    assert _events(sessions, owner.id, "account.deleted") == []


def test_delete_me_wrong_or_missing_password(auth: Stub) -> None:
    account = sign_up(auth)
    wrong, _ = _error(lambda: _delete(auth, account.token, "not the password"))
    assert (wrong.code, wrong.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    missing, _ = _error(lambda: _delete(auth, account.token, ""))
    assert (missing.code, set(missing.field_violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        {"password"},
    )
    assert get_me(auth, account.token).user.id == account.id


def test_co_owners_deleting_themselves_at_once_leave_one_owner(
    app: App, auth: Stub, orgs: OrgStub
) -> None:
    """Two owners of one organization delete their accounts at the same moment, each on a
    channel of its own: exactly one succeeds, the other is refused as the last owner."""
    for _ in range(3):
        first, second = sign_up(auth, "first"), sign_up(auth, "second")
        organization = create_organization(orgs, first)
        add_member(orgs, first, organization, second, OWNER)
        outcomes = _delete_at_once(app, first, second)
        assert sorted(outcomes.values()) == ["LAST_OWNER", "deleted"], outcomes
        (survivor,) = (a for a in (first, second) if outcomes[a.id] == "LAST_OWNER")
        assert roles_by_user(orgs, survivor, organization) == {survivor.id: OWNER}


def test_account_rpcs_over_a_cli_login(auth: Stub, orgs: OrgStub) -> None:
    """A personal token may call all three (write scope), and the organization list of a
    deleted member no longer shows them."""
    account = sign_up(auth)
    token = _cli_token(auth, account.email)
    assert _update(auth, token, "Grace", "name").user.name == "Grace"
    _delete(auth, token)
    error, _ = _error(
        lambda: orgs.ListOrganizations(
            organization_service_pb2.ListOrganizationsRequest(), metadata=bearer(token)
        )
    )
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
