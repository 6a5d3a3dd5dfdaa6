"""The audit log: an event for each security and membership action (actor, target,
organization, client address, user agent, request id), none for a refused action, the read
rules of ListAuditEvents, its filters and pages, and retention."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import select

from luman.audit.v1 import audit_pb2, audit_service_pb2, audit_service_pb2_grpc
from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2, organization_service_pb2_grpc
from luman.server.app import App, build_server
from luman.server.audit.record import request_id
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.models import AuditEvent
from luman.server.db.session import Sessions
from tests.server import device_login_support as device
from tests.server.organization_support import (
    ADMIN,
    MEMBER,
    Account,
    add_member,
    create_organization,
    error_of,
    sign_up,
)
from tests.support import PASSWORD, FakeClock, bearer

UA = "audit-test/1.0"
AuditStub = audit_service_pb2_grpc.AuditServiceStub
AuthStub = auth_service_pb2_grpc.AuthServiceStub
OrgStub = organization_service_pb2_grpc.OrganizationServiceStub


@pytest.fixture
def channel(app: App) -> Iterator[grpc.Channel]:
    """The suite's channel, with a user agent of its own."""
    options = [("grpc.primary_user_agent", UA)]
    with grpc.insecure_channel(f"127.0.0.1:{app.port}", options=options) as ch:
        yield ch


@pytest.fixture
def audit(channel: grpc.Channel) -> AuditStub:
    return audit_service_pb2_grpc.AuditServiceStub(channel)


def rid(value: str) -> tuple[tuple[str, str]]:
    return (("x-request-id", value),)


def with_rid(account: Account, value: str) -> tuple[tuple[str, str], ...]:
    return account.metadata + rid(value)


def stored(sessions: Sessions, action: str | None = None) -> list[AuditEvent]:
    """Every stored event (of `action`), oldest first."""
    query = select(AuditEvent).order_by(AuditEvent.time, AuditEvent.id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    with sessions.read() as session:
        return list(session.scalars(query))


def only(sessions: Sessions, action: str) -> AuditEvent:
    events = stored(sessions, action)
    assert len(events) == 1, [(e.action, e.target_id) for e in events]
    return events[0]


def assert_call(
    event: AuditEvent, request: str, actor_type: str = "user", actor: str | None = None
) -> None:
    """The event carries the call's client address, user agent, request id and actor."""
    assert event.client_ip == "127.0.0.1"
    assert event.user_agent.startswith(UA)
    assert event.request_id == request
    assert event.actor_type == actor_type
    assert (None if event.actor_id is None else str(event.actor_id)) == actor


def details(event: AuditEvent) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(event.details)
    return loaded


def list_events(
    audit: AuditStub, caller: Account, **fields: object
) -> audit_service_pb2.ListAuditEventsResponse:
    response: audit_service_pb2.ListAuditEventsResponse = audit.ListAuditEvents(
        audit_service_pb2.ListAuditEventsRequest(**fields),  # type: ignore[arg-type]
        metadata=caller.metadata,
    )
    return response


def actions(response: audit_service_pb2.ListAuditEventsResponse) -> list[str]:
    return [event.action for event in response.audit_events]


# Events of each action.


def test_register_login_and_cli_login_are_recorded(
    auth: AuthStub, sessions: Sessions, clock: FakeClock
) -> None:
    email = "ada-audit@example.com"
    registered = auth.Register(
        auth_service_pb2.RegisterRequest(email=email, password=PASSWORD, name="Ada"),
        metadata=rid("req-register"),
    )
    user_id = registered.user.id
    event = only(sessions, "account.registered")
    assert_call(event, "req-register", "anonymous")
    assert (str(event.user_id), event.organization_id) == (user_id, None)
    assert (event.target_type, event.target_id) == ("user", user_id)

    auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD), metadata=rid("r-l"))
    event = only(sessions, "auth.signed_in")
    assert_call(event, "r-l", "anonymous")
    assert str(event.user_id) == user_id
    assert details(event) == {}

    clock.advance(seconds=1)
    cli = auth.CliLogin(
        auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD, token_name="laptop"),
        metadata=rid("r-cli"),
    )
    cli_event = stored(sessions, "auth.signed_in")[-1]
    assert_call(cli_event, "r-cli", "anonymous")
    assert details(cli_event) == {"via": "cli"}
    assert (cli_event.target_type, cli_event.target_id) == ("cli_token", cli.cli_token.id)


def test_sign_in_failure_is_recorded_for_an_existing_account_only(
    app: App, auth: AuthStub, sessions: Sessions
) -> None:
    user = sign_up(auth)
    for email in (user.email, "nobody-here@example.com"):
        with pytest.raises(grpc.RpcError) as caught:
            auth.Login(
                auth_service_pb2.LoginRequest(email=email, password="wrong password!"),
                metadata=rid("r-fail"),
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert app.audit is not None
    assert app.audit.flush()
    event = only(sessions, "auth.sign_in_failed")
    assert_call(event, "r-fail", "anonymous")
    assert str(event.user_id) == user.id
    assert (event.target_type, event.target_id) == ("user", user.id)


def test_a_deferred_sign_in_failure_is_written_on_a_clean_shutdown(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    server = build_server(settings, sessions, clock=clock, hasher=hasher)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = auth_service_pb2_grpc.AuthServiceStub(ch)
            user = sign_up(stub)
            with pytest.raises(grpc.RpcError):
                stub.Login(auth_service_pb2.LoginRequest(email=user.email, password="not it!!"))
    finally:
        server.stop(None)
    assert str(only(sessions, "auth.sign_in_failed").user_id) == user.id


def test_cli_token_events(auth: AuthStub, sessions: Sessions, clock: FakeClock) -> None:
    user = sign_up(auth)
    parent = auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="ci", scopes=["read", "write"]),
        metadata=with_rid(user, "r-create"),
    )
    event = only(sessions, "token.created")
    assert_call(event, "r-create", actor=user.id)
    assert (str(event.user_id), event.target_type, event.target_id) == (
        user.id,
        "cli_token",
        parent.cli_token.id,
    )
    assert details(event) == {"name": "ci", "scopes": "read write"}
    # A child of the parent token: revoking the parent revokes it too.
    clock.advance(seconds=1)
    auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="child"), metadata=bearer(parent.token)
    )
    child_event = stored(sessions, "token.created")[-1]
    assert_call(child_event, "", actor=user.id)

    auth.RevokeCliToken(
        auth_service_pb2.RevokeCliTokenRequest(token_id=parent.cli_token.id),
        metadata=with_rid(user, "r-revoke"),
    )
    event = only(sessions, "token.revoked")
    assert_call(event, "r-revoke", actor=user.id)
    assert event.target_id == parent.cli_token.id
    assert details(event) == {"name": "ci", "descendants": 1}

    clock.advance(seconds=1)
    logged_in = auth.CliLogin(auth_service_pb2.CliLoginRequest(email=user.email, password=PASSWORD))
    auth.CliLogout(auth_service_pb2.CliLogoutRequest(), metadata=bearer(logged_in.token))
    event = stored(sessions, "token.revoked")[-1]
    assert (event.target_id, details(event)) == (logged_in.cli_token.id, {"via": "cli_logout"})
    assert event.actor_type == "user"
    assert str(event.actor_id) == user.id

    auth.CreateCliToken(auth_service_pb2.CreateCliTokenRequest(name="x"), metadata=user.metadata)
    clock.advance(seconds=1)
    auth.RevokeAllCliTokens(
        auth_service_pb2.RevokeAllCliTokensRequest(), metadata=with_rid(user, "r-all")
    )
    event = stored(sessions, "token.revoked")[-1]
    assert_call(event, "r-all", actor=user.id)
    assert details(event) == {"all": True, "count": 1}


def test_session_events(auth: AuthStub, sessions: Sessions) -> None:
    user = sign_up(auth)
    other = auth.Login(auth_service_pb2.LoginRequest(email=user.email, password=PASSWORD))
    listed = auth.ListSessions(auth_service_pb2.ListSessionsRequest(), metadata=user.metadata)
    session_id = next(s.id for s in listed.sessions if not s.current)
    auth.RevokeSession(
        auth_service_pb2.RevokeSessionRequest(session_id=session_id),
        metadata=with_rid(user, "r-session"),
    )
    event = only(sessions, "session.revoked")
    assert_call(event, "r-session", actor=user.id)
    assert (str(event.user_id), event.target_type, event.target_id) == (
        user.id,
        "session",
        session_id,
    )
    assert other.tokens.access_token  # the session revoked

    auth.LogoutAll(
        auth_service_pb2.LogoutAllRequest(include_cli_tokens=True),
        metadata=with_rid(user, "r-everywhere"),
    )
    event = only(sessions, "auth.signed_out_everywhere")
    assert_call(event, "r-everywhere", actor=user.id)
    assert details(event) == {"sessions": 1, "cli_tokens": 0, "include_cli_tokens": True}


def test_device_login_events(auth: AuthStub, sessions: Sessions) -> None:
    user = sign_up(auth)
    started = device.start(auth)
    device.approve(auth, user.token, started.user_code, metadata=rid("r-approve"))
    event = only(sessions, "device_login.approved")
    assert_call(event, "r-approve", actor=user.id)
    assert str(event.user_id) == user.id
    assert event.target_type == "device_login"
    assert details(event)["host_name"] == device.HOST

    claimed = device.poll(auth, started.device_code, metadata=rid("r-claim"))
    event = only(sessions, "device_login.claimed")
    assert_call(event, "r-claim", "anonymous")
    assert str(event.user_id) == user.id
    assert (event.target_type, event.target_id) == ("cli_token", claimed.cli_token.id)

    denied = device.start(auth)
    device.deny(auth, user.token, denied.user_code, metadata=rid("r-deny"))
    event = only(sessions, "device_login.denied")
    assert_call(event, "r-deny", actor=user.id)
    assert "scopes" not in details(event)


def test_organization_and_member_events(auth: AuthStub, orgs: OrgStub, sessions: Sessions) -> None:
    owner, admin = sign_up(auth, "owner"), sign_up(auth, "admin")
    organization = orgs.CreateOrganization(
        organization_service_pb2.CreateOrganizationRequest(name="Acme", slug="acme-audit"),
        metadata=with_rid(owner, "r-org"),
    ).organization
    event = only(sessions, "organization.created")
    assert_call(event, "r-org", actor=owner.id)
    assert (str(event.organization_id), str(event.user_id)) == (organization.id, owner.id)
    assert details(event) == {"name": "Acme", "slug": "acme-audit"}

    orgs.AddMember(
        organization_service_pb2.AddMemberRequest(slug="acme-audit", user_id=admin.id, role=MEMBER),
        metadata=with_rid(owner, "r-add"),
    )
    event = only(sessions, "member.added")
    assert_call(event, "r-add", actor=owner.id)
    assert (str(event.organization_id), str(event.user_id)) == (organization.id, admin.id)
    assert (event.target_type, event.target_id, details(event)) == (
        "membership",
        admin.id,
        {"role": "member"},
    )

    orgs.UpdateMemberRole(
        organization_service_pb2.UpdateMemberRoleRequest(
            slug="acme-audit", user_id=admin.id, role=ADMIN
        ),
        metadata=with_rid(owner, "r-role"),
    )
    event = only(sessions, "member.role_changed")
    assert_call(event, "r-role", actor=owner.id)
    assert str(event.user_id) == admin.id
    assert details(event) == {"role": "admin", "old_role": "member"}

    created = orgs.CreateServiceAccount(
        organization_service_pb2.CreateServiceAccountRequest(
            slug="acme-audit", name="deployer", scopes=["introspect"]
        ),
        metadata=with_rid(admin, "r-sa"),
    ).service_account
    event = only(sessions, "service_account.created")
    assert_call(event, "r-sa", actor=admin.id)
    assert (str(event.organization_id), event.user_id) == (organization.id, None)
    assert (event.target_type, event.target_id) == ("service_account", created.id)
    assert details(event) == {"name": "deployer", "scopes": "introspect"}
    orgs.DeleteServiceAccount(
        organization_service_pb2.DeleteServiceAccountRequest(
            slug="acme-audit", service_account_id=created.id
        ),
        metadata=with_rid(admin, "r-sa-del"),
    )
    event = only(sessions, "service_account.deleted")
    assert_call(event, "r-sa-del", actor=admin.id)
    assert (str(event.organization_id), event.target_id) == (organization.id, created.id)

    orgs.RemoveMember(
        organization_service_pb2.RemoveMemberRequest(slug="acme-audit", user_id=admin.id),
        metadata=with_rid(owner, "r-remove"),
    )
    event = only(sessions, "member.removed")
    assert_call(event, "r-remove", actor=owner.id)
    assert (str(event.organization_id), str(event.user_id)) == (organization.id, admin.id)
    assert details(event) == {"role": "admin", "left": False}


def test_refused_actions_record_nothing(auth: AuthStub, orgs: OrgStub, sessions: Sessions) -> None:
    owner, admin, member = sign_up(auth, "owner"), sign_up(auth, "admin"), sign_up(auth, "member")
    organization = create_organization(orgs, owner)
    add_member(orgs, owner, organization, admin, ADMIN)
    add_member(orgs, owner, organization, member, MEMBER)
    before = len(stored(sessions))

    def remove(caller: Account, target: Account) -> None:
        orgs.RemoveMember(
            organization_service_pb2.RemoveMemberRequest(
                organization_id=organization.id, user_id=target.id
            ),
            metadata=caller.metadata,
        )

    assert error_of(lambda: remove(member, admin)).code == grpc.StatusCode.PERMISSION_DENIED
    assert error_of(lambda: remove(admin, owner)).code == grpc.StatusCode.PERMISSION_DENIED
    role = organization_service_pb2.UpdateMemberRoleRequest(
        organization_id=organization.id, user_id=owner.id, role=MEMBER
    )
    denied = error_of(lambda: orgs.UpdateMemberRole(role, metadata=admin.metadata))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    # The last owner cannot leave: refused too.
    assert error_of(lambda: remove(owner, owner)).code == grpc.StatusCode.FAILED_PRECONDITION
    assert len(stored(sessions)) == before
    assert stored(sessions, "member.removed") == []


# Reading: ListAuditEvents.


def test_a_user_reads_their_own_account_only(
    auth: AuthStub, orgs: OrgStub, audit: AuditStub, clock: FakeClock
) -> None:
    ada, bob = sign_up(auth, "ada"), sign_up(auth, "bob")
    clock.advance(seconds=1)
    organization = create_organization(orgs, ada)
    clock.advance(seconds=1)
    add_member(orgs, ada, organization, bob, MEMBER)
    mine = list_events(audit, ada)
    assert actions(mine) == ["organization.created", "account.registered"]
    assert all(event.user_id == ada.id for event in mine.audit_events)
    # Bob sees his own account's events, one made by Ada among them, and none of Ada's.
    his = list_events(audit, bob)
    assert actions(his) == ["member.added", "account.registered"]
    added = his.audit_events[0]
    assert (added.actor.type, added.actor.id, added.user_id) == ("user", ada.id, bob.id)
    assert added.organization_id == organization.id
    assert added.target == audit_pb2.AuditTarget(type="membership", id=bob.id)
    assert dict(added.details) == {"role": "member"}
    # Ada's address and user agent are Ada's data: Bob's log says who, not from where. The
    # organization's log, which Ada's fellow owners read, keeps them.
    assert (added.client_ip, added.user_agent, added.request_id) == ("", "", "")
    [in_org] = [
        event
        for event in list_events(audit, ada, organization_slug=organization.slug).audit_events
        if event.action == "member.added"
    ]
    assert in_org.client_ip == "127.0.0.1"
    assert in_org.user_agent.startswith(UA)
    # Filtering by Ada as the actor never reaches Ada's own account.
    assert actions(list_events(audit, bob, actor_id=ada.id)) == ["member.added"]


def test_organization_events_are_read_by_owners_and_admins_only(
    auth: AuthStub, orgs: OrgStub, audit: AuditStub, clock: FakeClock
) -> None:
    owner, admin, member, outsider = (sign_up(auth, n) for n in ("o", "a", "m", "x"))
    organization = create_organization(orgs, owner)
    clock.advance(seconds=1)
    add_member(orgs, owner, organization, admin, ADMIN)
    add_member(orgs, owner, organization, member, MEMBER)
    expected = ["member.added", "member.added", "organization.created"]
    for reader in (owner, admin):
        by_slug = list_events(audit, reader, organization_slug=organization.slug)
        assert actions(by_slug) == expected
        assert all(e.organization_id == organization.id for e in by_slug.audit_events)
        by_id = list_events(audit, reader, organization_id=organization.id)
        assert by_id == by_slug
    denied = error_of(lambda: list_events(audit, member, organization_slug=organization.slug))
    assert (denied.code, denied.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    for slug in (organization.slug, "no-such-org"):
        missing = error_of(functools.partial(list_events, audit, outsider, organization_slug=slug))
        assert (missing.code, missing.reason) == (
            grpc.StatusCode.NOT_FOUND,
            "ORGANIZATION_NOT_FOUND",
        )
    # Nor do the organization's events show among the outsider's own.
    assert actions(list_events(audit, outsider)) == ["account.registered"]


def test_list_filters_and_pages(
    auth: AuthStub, orgs: OrgStub, audit: AuditStub, clock: FakeClock
) -> None:
    owner, admin = sign_up(auth, "owner"), sign_up(auth, "admin")
    organization = create_organization(orgs, owner)
    start = clock()
    users = [sign_up(auth, f"u{i}") for i in range(5)]
    for user in users:
        clock.advance(minutes=1)
        add_member(orgs, owner, organization, user, MEMBER)
    clock.advance(minutes=1)
    add_member(orgs, owner, organization, admin, ADMIN)
    clock.advance(minutes=1)
    orgs.UpdateMemberRole(
        organization_service_pb2.UpdateMemberRoleRequest(
            organization_id=organization.id, user_id=users[0].id, role=ADMIN
        ),
        metadata=admin.metadata,
    )
    slug = organization.slug

    by_action = list_events(audit, owner, organization_slug=slug, action="member.added")
    assert [e.user_id for e in by_action.audit_events] == [admin.id] + [
        u.id for u in reversed(users)
    ]
    by_actor = list_events(audit, owner, organization_slug=slug, actor_id=admin.id)
    assert actions(by_actor) == ["member.role_changed"]
    window = list_events(
        audit,
        owner,
        organization_slug=slug,
        start_time=timestamp_pb2.Timestamp(seconds=int(start.timestamp()) + 120),
        end_time=timestamp_pb2.Timestamp(seconds=int(start.timestamp()) + 240),
    )
    assert [e.user_id for e in window.audit_events] == [users[2].id, users[1].id]

    # Pages of 3, newest first, each event once, then the end.
    seen: list[str] = []
    token = ""
    while True:
        page = list_events(audit, owner, organization_slug=slug, page_size=3, page_token=token)
        assert len(page.audit_events) <= 3
        seen += [event.id for event in page.audit_events]
        token = page.next_page_token
        if not token:
            break
    everything = list_events(audit, owner, organization_slug=slug)
    assert seen == [event.id for event in everything.audit_events]
    assert len(seen) == 8
    times = [event.time.ToDatetime() for event in everything.audit_events]
    assert times == sorted(times, reverse=True)
    # A token resumes only its own listing: another filter refuses it.
    first = list_events(audit, owner, organization_slug=slug, page_size=3)
    bad = error_of(
        lambda: list_events(
            audit,
            owner,
            organization_slug=slug,
            action="member.added",
            page_token=first.next_page_token,
        )
    )
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in bad.field_violations


def test_list_refuses_bad_filters_with_field_violations(auth: AuthStub, audit: AuditStub) -> None:
    user = sign_up(auth)
    cases: list[tuple[dict[str, object], str]] = [
        ({"actor_id": "not-a-uuid"}, "actor_id"),
        ({"action": "Member Added"}, "action"),
        ({"organization_slug": "acme", "organization_id": "x"}, "organization_id"),
        ({"page_size": -1}, "page_size"),
        (
            {
                "start_time": timestamp_pb2.Timestamp(seconds=200),
                "end_time": timestamp_pb2.Timestamp(seconds=100),
            },
            "end_time",
        ),
    ]
    for fields, field in cases:
        error = error_of(functools.partial(list_events, audit, user, **fields))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert field in error.field_violations, (fields, error.field_violations)


def test_request_id_is_kept_only_when_printable_ascii_of_at_most_64() -> None:
    assert request_id("a" * 64) == "a" * 64
    assert request_id("a" * 65) == ""
    assert request_id("abc\x01") == ""
    assert request_id("café") == ""
    assert request_id("") == ""


def test_an_overlong_request_id_is_recorded_empty(auth: AuthStub, sessions: Sessions) -> None:
    auth.Register(
        auth_service_pb2.RegisterRequest(email="long@example.com", password=PASSWORD, name="L"),
        metadata=rid("x" * 65),
    )
    assert only(sessions, "account.registered").request_id == ""


# Retention.


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_retention_prunes_old_events_periodically(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    monotonic = FakeMonotonic()
    server = build_server(
        dataclasses.replace(settings, audit_log_retention_days=30),
        sessions,
        clock=clock,
        hasher=hasher,
        monotonic=monotonic,
    )
    server.start()
    try:
        assert server.audit is not None
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = auth_service_pb2_grpc.AuthServiceStub(ch)
            old = sign_up(stub, "old")
            clock.advance(days=20)
            recent = sign_up(stub, "recent")
        clock.advance(days=15)  # old: 35 days; recent: 15
        assert server.audit.flush()  # the first run was at start: not due yet
        assert len(stored(sessions, "account.registered")) == 2
        monotonic.now += 3600
        assert server.audit.flush()
        assert [str(e.user_id) for e in stored(sessions)] == [recent.id]
        assert old.id != recent.id
    finally:
        server.stop(None)


def test_retention_zero_keeps_events_forever(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    server = build_server(
        dataclasses.replace(settings, audit_log_retention_days=0),
        sessions,
        clock=clock,
        hasher=hasher,
    )
    server.start()
    try:
        assert server.audit is not None
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            sign_up(auth_service_pb2_grpc.AuthServiceStub(ch))
        clock.advance(days=36500)
        assert server.audit.prune() == 0
        assert len(stored(sessions)) == 1
    finally:
        server.stop(None)


def test_retention_setting_is_read_from_the_environment(tmp_path: Path) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(env).audit_log_retention_days == 365
    zero = Settings.from_env({**env, "AUDIT_LOG_RETENTION_DAYS": "0"})
    assert zero.audit_log_retention_days == 0
