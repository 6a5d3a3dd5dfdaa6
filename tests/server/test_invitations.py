"""Invitations through the real server, with real mail (tests/mail_support.py), on SQLite and
PostgreSQL: sending, listing, resending, cancelling; the invitee's list, accept and decline;
every refusal's reason, the limits against mail floods, and the audit events (none for a
refused call). The owner and admin of `org` are verified (sending needs it); its member is not."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import re
import uuid
from collections.abc import Callable

import grpc
import pytest
from sqlalchemy import select

from luman.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_pb2, organization_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2 as pb
from luman.server.app import App
from luman.server.config import Settings
from luman.server.db.models import AuditEvent, Invitation, Role
from luman.server.db.session import Sessions
from luman.server.mail.message import Queued
from luman.server.organization.invitations import (
    DAILY_QUOTA,
    SUBJECT,
    make_invitation_renderer,
)
from tests.mail_support import Mailbox, verify
from tests.server.organization_support import (
    ADMIN,
    MEMBER,
    OWNER,
    Account,
    add_member,
    create_organization,
    error_of,
    sign_up,
)
from tests.support import PASSWORD, FakeClock, unique_email

Auth = auth_service_pb2_grpc.AuthServiceStub
Orgs = organization_service_pb2_grpc.OrganizationServiceStub
AuditStub = audit_service_pb2_grpc.AuditServiceStub
State = organization_pb2.InvitationState
PENDING = organization_pb2.INVITATION_STATE_PENDING
EXPIRED = organization_pb2.INVITATION_STATE_EXPIRED
ACCEPTED = organization_pb2.INVITATION_STATE_ACCEPTED
DECLINED = organization_pb2.INVITATION_STATE_DECLINED
CANCELLED = organization_pb2.INVITATION_STATE_CANCELLED

TTL = 300.0  # seconds: shorter than an access token's 15 minutes, so tests outlive it
MAX_PENDING = 3
UNKNOWN_ID = "6f1c8a52-52a3-4d0e-9d43-6a7f2f1b8b51"


@pytest.fixture
def settings(settings: Settings, mailbox: Mailbox) -> Settings:
    return dataclasses.replace(
        settings,
        smtp_url=mailbox.url,
        invitation_ttl=TTL,
        max_pending_invitations=MAX_PENDING,
    )


@pytest.fixture
def audit(channel: grpc.Channel) -> AuditStub:
    return audit_service_pb2_grpc.AuditServiceStub(channel)


@dataclasses.dataclass(frozen=True)
class Org:
    organization: organization_pb2.Organization
    owner: Account
    admin: Account
    member: Account

    @property
    def slug(self) -> str:
        return self.organization.slug


@pytest.fixture
def org(auth: Auth, orgs: Orgs, mailbox: Mailbox) -> Org:
    owner, admin = verified(auth, mailbox, "owner"), verified(auth, mailbox, "admin")
    member = sign_up(auth, "member")
    organization = create_organization(orgs, owner, name="Acme Rockets")
    add_member(orgs, owner, organization, admin, ADMIN)
    add_member(orgs, owner, organization, member, MEMBER)
    return Org(organization, owner, admin, member)


def verified(auth: Auth, mailbox: Mailbox, prefix: str = "invitee") -> Account:
    """A new account whose address is verified through the verification email."""
    account = sign_up(auth, prefix)
    verify(auth, mailbox, account.email)
    return account


def invite(
    orgs: Orgs, caller: Account, org: Org, email: str, role: int = MEMBER
) -> organization_pb2.Invitation:
    response = orgs.CreateInvitation(
        pb.CreateInvitationRequest(slug=org.slug, email=email, role=role),  # type: ignore[arg-type]
        metadata=caller.metadata,
    )
    invitation: organization_pb2.Invitation = response.invitation
    return invitation


def accept(orgs: Orgs, caller: Account, invitation_id: str) -> organization_pb2.Organization:
    response = orgs.AcceptInvitation(
        pb.AcceptInvitationRequest(invitation_id=invitation_id), metadata=caller.metadata
    )
    organization: organization_pb2.Organization = response.organization
    return organization


def decline(orgs: Orgs, caller: Account, invitation_id: str) -> None:
    orgs.DeclineInvitation(
        pb.DeclineInvitationRequest(invitation_id=invitation_id), metadata=caller.metadata
    )


def resend(
    orgs: Orgs, caller: Account, org: Org, invitation_id: str
) -> organization_pb2.Invitation:
    response = orgs.ResendInvitation(
        pb.ResendInvitationRequest(slug=org.slug, invitation_id=invitation_id),
        metadata=caller.metadata,
    )
    invitation: organization_pb2.Invitation = response.invitation
    return invitation


def cancel(
    orgs: Orgs, caller: Account, org: Org, invitation_id: str
) -> organization_pb2.Invitation:
    response = orgs.CancelInvitation(
        pb.CancelInvitationRequest(slug=org.slug, invitation_id=invitation_id),
        metadata=caller.metadata,
    )
    invitation: organization_pb2.Invitation = response.invitation
    return invitation


def listed(
    orgs: Orgs, caller: Account, org: Org, include_closed: bool = False
) -> list[organization_pb2.Invitation]:
    response = orgs.ListInvitations(
        pb.ListInvitationsRequest(slug=org.slug, include_closed=include_closed),
        metadata=caller.metadata,
    )
    return list(response.invitations)


def mine(orgs: Orgs, caller: Account) -> list[organization_pb2.Invitation]:
    response = orgs.ListMyInvitations(pb.ListMyInvitationsRequest(), metadata=caller.metadata)
    return list(response.invitations)


def org_actions(audit: AuditStub, reader: Account, org: Org) -> list[str]:
    """The organization's audit actions, newest first."""
    response = audit.ListAuditEvents(
        audit_service_pb2.ListAuditEventsRequest(organization_slug=org.slug, page_size=100),
        metadata=reader.metadata,
    )
    return [event.action for event in response.audit_events]


def own_actions(audit: AuditStub, reader: Account) -> list[str]:
    response = audit.ListAuditEvents(
        audit_service_pb2.ListAuditEventsRequest(page_size=100), metadata=reader.metadata
    )
    return [event.action for event in response.audit_events]


def invitation_events(sessions: Sessions) -> list[tuple[str, str]]:
    with sessions.read() as session:
        return [
            (e.action, e.target_id)
            for e in session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action.like("invitation.%"))
                .order_by(AuditEvent.time, AuditEvent.id)
            )
        ]


def reason_of(call: Callable[..., object], *args: object) -> tuple[grpc.StatusCode, str]:
    """The code and reason of the error `call(*args)` fails with."""
    error = error_of(functools.partial(call, *args))
    return error.code, error.reason


# --- The whole path -----------------------------------------------------------------------------


def test_invitee_follows_the_invitation_email_and_joins(
    auth: Auth, orgs: Orgs, audit: AuditStub, mailbox: Mailbox, org: Org, clock: FakeClock
) -> None:
    invitee = verified(auth, mailbox)
    clock.advance(seconds=1)

    sent = invite(orgs, org.admin, org, f"  {invitee.email.upper()} ", ADMIN)

    assert (sent.email, sent.role, sent.state) == (invitee.email, ADMIN, PENDING)
    assert (sent.organization_id, sent.organization_slug, sent.organization_name) == (
        org.organization.id,
        org.slug,
        "Acme Rockets",
    )
    assert (sent.inviter_user_id, sent.inviter_email, sent.inviter_name) == (
        org.admin.id,
        org.admin.email,
        "Admin",
    )
    assert sent.send_count == 1
    assert sent.create_time.ToDatetime(dt.UTC) == clock()
    assert sent.send_time == sent.create_time
    assert sent.expire_time.ToDatetime(dt.UTC) == clock() + dt.timedelta(seconds=TTL)

    mail = mailbox.wait_for(invitee.email, SUBJECT)
    # No text a user chose in the subject: the names are in the body.
    assert mail.subject == SUBJECT
    assert "Acme Rockets" in mail.text
    assert org.admin.email in mail.text
    assert "Acme Rockets" in mail.html
    found = re.search(r"luman accept (\S+)", mail.text)
    assert found is not None
    assert found.group(1) == sent.id

    assert [i.id for i in mine(orgs, invitee)] == [sent.id]
    assert [i.id for i in listed(orgs, org.owner, org)] == [sent.id]

    clock.advance(seconds=1)
    joined = accept(orgs, invitee, found.group(1))

    assert (joined.id, joined.slug, joined.caller_role) == (org.organization.id, org.slug, ADMIN)
    got = orgs.GetOrganization(pb.GetOrganizationRequest(slug=org.slug), metadata=invitee.metadata)
    assert got.organization.caller_role == ADMIN
    assert mine(orgs, invitee) == []
    assert listed(orgs, org.owner, org) == []
    [closed] = listed(orgs, org.owner, org, include_closed=True)
    assert (closed.id, closed.state) == (sent.id, ACCEPTED)

    # Newest first; accepting records two events at one time.
    newest = org_actions(audit, org.owner, org)
    assert (set(newest[:2]), newest[2]) == (
        {"member.added", "invitation.accepted"},
        "invitation.sent",
    )
    assert set(own_actions(audit, invitee)[:2]) == {"member.added", "invitation.accepted"}


def test_someone_who_registers_afterwards_sees_and_accepts_the_invitation(
    auth: Auth, orgs: Orgs, mailbox: Mailbox, org: Org
) -> None:
    email = unique_email("newcomer")
    sent = invite(orgs, org.owner, org, email, OWNER)
    assert mailbox.wait_for(email, SUBJECT).subject == SUBJECT

    newcomer = verified_registration(auth, mailbox, email)

    assert [(i.id, i.role, i.organization_slug) for i in mine(orgs, newcomer)] == [
        (sent.id, OWNER, org.slug)
    ]
    assert accept(orgs, newcomer, sent.id).caller_role == OWNER


def verified_registration(auth: Auth, mailbox: Mailbox, email: str) -> Account:
    response = auth.Register(
        auth_service_pb2.RegisterRequest(email=email, password=PASSWORD, name="Newcomer")
    )
    verify(auth, mailbox, email)
    return Account(response.user.id, email, response.tokens.access_token)


# --- CreateInvitation ---------------------------------------------------------------------------


def test_create_refusals(
    auth: Auth, orgs: Orgs, org: Org, sessions: Sessions, mailbox: Mailbox
) -> None:
    outsider = sign_up(auth, "outsider")
    email = unique_email("invitee")
    refusals = {
        "member": (lambda: invite(orgs, org.member, org, email), "PERMISSION_DENIED"),
        "non-member": (lambda: invite(orgs, outsider, org, email), "ORGANIZATION_NOT_FOUND"),
        "admin grants owner": (
            lambda: invite(orgs, org.admin, org, email, OWNER),
            "PERMISSION_DENIED",
        ),
        "already a member": (
            lambda: invite(orgs, org.owner, org, org.member.email),
            "ALREADY_MEMBER",
        ),
        "unknown org": (
            lambda: orgs.CreateInvitation(
                pb.CreateInvitationRequest(slug="no-such-org", email=email, role=MEMBER),
                metadata=org.owner.metadata,
            ),
            "ORGANIZATION_NOT_FOUND",
        ),
    }
    for name, (call, reason) in refusals.items():
        assert error_of(call).reason == reason, name
    assert invitation_events(sessions) == []

    bad = error_of(lambda: invite(orgs, org.owner, org, "not-an-email"))
    assert (bad.code, list(bad.field_violations)) == (grpc.StatusCode.INVALID_ARGUMENT, ["email"])
    no_role = error_of(lambda: invite(orgs, org.owner, org, email, 0))
    assert (no_role.code, list(no_role.field_violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["role"],
    )

    first = invite(orgs, org.owner, org, email)
    again = error_of(lambda: invite(orgs, org.admin, org, email.upper(), ADMIN))
    assert (again.code, again.reason) == (grpc.StatusCode.ALREADY_EXISTS, "INVITATION_PENDING")
    assert invitation_events(sessions) == [("invitation.sent", first.id)]


def test_too_many_pending_invitations(orgs: Orgs, org: Org, sessions: Sessions) -> None:
    sent = [invite(orgs, org.owner, org, unique_email()) for _ in range(MAX_PENDING)]
    full = error_of(lambda: invite(orgs, org.owner, org, unique_email()))
    assert (full.code, full.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TOO_MANY_INVITATIONS")
    cancel(orgs, org.owner, org, sent[0].id)
    invite(orgs, org.owner, org, unique_email())


def test_an_expired_invitation_is_replaced_by_a_new_one(
    auth: Auth, orgs: Orgs, org: Org, clock: FakeClock, mailbox: Mailbox
) -> None:
    invitee = verified(auth, mailbox)
    old = invite(orgs, org.owner, org, invitee.email)
    clock.advance(seconds=TTL + 1)

    assert [(i.id, i.state) for i in listed(orgs, org.owner, org)] == [(old.id, EXPIRED)]
    assert mine(orgs, invitee) == []
    assert reason_of(accept, orgs, invitee, old.id) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVITATION_EXPIRED",
    )
    assert reason_of(decline, orgs, invitee, old.id)[1] == "INVITATION_EXPIRED"

    new = invite(orgs, org.owner, org, invitee.email, ADMIN)

    assert [(i.id, i.state) for i in listed(orgs, org.owner, org, include_closed=True)] == [
        (new.id, PENDING),
        (old.id, CANCELLED),
    ]
    assert accept(orgs, invitee, new.id).caller_role == ADMIN


def test_replacing_an_expired_invitation_is_managing_it(
    orgs: Orgs, org: Org, clock: FakeClock, sessions: Sessions
) -> None:
    email = unique_email("invitee")
    to_owner = invite(orgs, org.owner, org, email, OWNER)
    clock.advance(seconds=TTL + 1)
    before = invitation_events(sessions)

    # An admin may not close an invitation to the owner role, expired or not.
    assert reason_of(invite, orgs, org.admin, org, email, MEMBER) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert [(i.id, i.state) for i in listed(orgs, org.owner, org)] == [(to_owner.id, EXPIRED)]
    assert invitation_events(sessions) == before

    replaced = invite(orgs, org.owner, org, email, MEMBER)
    assert [(i.id, i.state) for i in listed(orgs, org.admin, org, include_closed=True)] == [
        (replaced.id, PENDING),
        (to_owner.id, CANCELLED),
    ]


# --- Against mail floods ------------------------------------------------------------------------


def test_sending_and_resending_need_the_callers_address_verified(
    auth: Auth, orgs: Orgs, org: Org, clock: FakeClock, mailbox: Mailbox, sessions: Sessions
) -> None:
    unverified_admin = sign_up(auth, "admin")
    add_member(orgs, org.owner, org.organization, unverified_admin, ADMIN)
    sent = invite(orgs, org.owner, org, unique_email())
    clock.advance(seconds=61)
    outsider = sign_up(auth, "outsider")
    before = invitation_events(sessions)

    not_verified = (grpc.StatusCode.FAILED_PRECONDITION, "EMAIL_NOT_VERIFIED")
    assert reason_of(invite, orgs, unverified_admin, org, unique_email()) == not_verified
    assert reason_of(resend, orgs, unverified_admin, org, sent.id) == not_verified
    # The membership and role rules come first: the unverified learn nothing more.
    assert reason_of(invite, orgs, unverified_admin, org, unique_email(), OWNER)[1] == (
        "PERMISSION_DENIED"
    )
    assert reason_of(invite, orgs, org.member, org, unique_email())[1] == "PERMISSION_DENIED"
    assert reason_of(resend, orgs, org.member, org, sent.id)[1] == "PERMISSION_DENIED"
    for call, args in ((invite, (unique_email(),)), (resend, (sent.id,))):
        assert reason_of(call, orgs, outsider, org, *args) == (
            grpc.StatusCode.NOT_FOUND,
            "ORGANIZATION_NOT_FOUND",
        )
    assert invitation_events(sessions) == before

    verify(auth, mailbox, unverified_admin.email)
    assert resend(orgs, unverified_admin, org, sent.id).inviter_user_id == unverified_admin.id


def test_one_message_a_minute_per_address_whatever_became_of_the_invitation(
    auth: Auth, orgs: Orgs, org: Org, clock: FakeClock, mailbox: Mailbox
) -> None:
    invitee = verified(auth, mailbox)
    first = invite(orgs, org.owner, org, invitee.email)
    cancel(orgs, org.owner, org, first.id)

    too_soon = error_of(lambda: invite(orgs, org.owner, org, invitee.email))
    assert (too_soon.code, too_soon.reason, too_soon.retry_delay_seconds) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "INVITATION_RECENTLY_SENT",
        60,
    )
    clock.advance(seconds=30)
    assert error_of(lambda: invite(orgs, org.admin, org, invitee.email)).retry_delay_seconds == 30
    # Another organization's messages to the address are its own.
    other = create_organization(orgs, org.owner)
    orgs.CreateInvitation(
        pb.CreateInvitationRequest(slug=other.slug, email=invitee.email, role=MEMBER),
        metadata=org.owner.metadata,
    )

    clock.advance(seconds=30)
    second = invite(orgs, org.owner, org, invitee.email)
    decline(orgs, invitee, second.id)
    assert reason_of(invite, orgs, org.owner, org, invitee.email) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "INVITATION_RECENTLY_SENT",
    )
    clock.advance(seconds=60)
    third = invite(orgs, org.owner, org, invitee.email)
    assert accept(orgs, invitee, third.id).caller_role == MEMBER


def test_an_inviter_creates_at_most_the_daily_quota_in_24_hours(
    orgs: Orgs, org: Org, clock: FakeClock, sessions: Sessions
) -> None:
    now, day = clock(), dt.timedelta(hours=24)
    # The owner's earlier invitations, written directly: one exactly 24 hours old (out of the
    # window), then DAILY_QUOTA - 1 in it, the oldest of those leaving it in 5 minutes.
    created = [now - day] + [
        now - day + dt.timedelta(seconds=300 + i) for i in range(DAILY_QUOTA - 1)
    ]
    with sessions.write.begin() as session:
        for time in created:
            session.add(
                Invitation(
                    id=uuid.uuid4(),
                    organization_id=uuid.UUID(org.organization.id),
                    email=unique_email(),
                    role=Role.MEMBER,
                    inviter_id=uuid.UUID(org.owner.id),
                    state="cancelled",
                    create_time=time,
                    send_time=time,
                    send_count=1,
                    expire_time=time + dt.timedelta(seconds=TTL),
                )
            )
    invite(orgs, org.owner, org, unique_email())  # the DAILY_QUOTA-th in the window

    over = error_of(lambda: invite(orgs, org.owner, org, unique_email()))
    assert (over.code, over.reason, over.retry_delay_seconds) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "INVITATION_QUOTA_EXCEEDED",
        300,  # until the oldest in the window is 24 hours old
    )
    # Per inviter, in every organization: the admin still may; the owner elsewhere may not.
    invite(orgs, org.admin, org, unique_email())
    other = create_organization(orgs, org.owner)
    assert (
        error_of(
            lambda: orgs.CreateInvitation(
                pb.CreateInvitationRequest(slug=other.slug, email=unique_email(), role=MEMBER),
                metadata=org.owner.metadata,
            )
        ).reason
        == "INVITATION_QUOTA_EXCEEDED"
    )

    clock.advance(seconds=300)
    invite(orgs, org.owner, org, unique_email())


# --- ListInvitations ----------------------------------------------------------------------------


def test_list_pages_newest_first_and_filters_closed_ones(
    auth: Auth, orgs: Orgs, org: Org, clock: FakeClock
) -> None:
    sent = []
    for _ in range(MAX_PENDING):
        sent.append(invite(orgs, org.owner, org, unique_email()))
        clock.advance(seconds=1)
    cancel(orgs, org.owner, org, sent[1].id)

    def pages(caller: Account, include_closed: bool) -> list[list[str]]:
        result, token = [], ""
        while True:
            page = orgs.ListInvitations(
                pb.ListInvitationsRequest(
                    organization_id=org.organization.id,
                    page_size=2,
                    page_token=token,
                    include_closed=include_closed,
                ),
                metadata=caller.metadata,
            )
            result.append([i.id for i in page.invitations])
            token = page.next_page_token
            if not token:
                return result

    newest_first = [i.id for i in reversed(sent)]
    assert pages(org.admin, include_closed=True) == [newest_first[:2], newest_first[2:]]
    assert pages(org.owner, include_closed=False) == [[sent[2].id, sent[0].id]]
    [first] = listed(orgs, org.admin, org)[:1]
    assert (first.inviter_email, first.organization_name) == (org.owner.email, "Acme Rockets")

    assert reason_of(listed, orgs, org.member, org) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert reason_of(lambda: listed(orgs, sign_up(auth), org)) == (
        grpc.StatusCode.NOT_FOUND,
        "ORGANIZATION_NOT_FOUND",
    )
    bad = error_of(
        lambda: orgs.ListInvitations(
            pb.ListInvitationsRequest(slug=org.slug, page_token="garbage"),
            metadata=org.owner.metadata,
        )
    )
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT


# --- ResendInvitation and CancelInvitation ------------------------------------------------------


def test_resend_renews_and_sends_again_at_most_once_a_minute(
    orgs: Orgs, org: Org, clock: FakeClock, mailbox: Mailbox, sessions: Sessions
) -> None:
    email = unique_email("invitee")
    sent = invite(orgs, org.admin, org, email)
    mailbox.wait_for(email, SUBJECT)

    too_soon = error_of(lambda: resend(orgs, org.admin, org, sent.id))
    assert (too_soon.code, too_soon.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "INVITATION_RECENTLY_SENT",
    )
    assert too_soon.retry_delay_seconds == 60
    clock.advance(seconds=45)
    assert error_of(lambda: resend(orgs, org.admin, org, sent.id)).retry_delay_seconds == 15

    clock.advance(seconds=TTL)  # expired by now: resending renews it
    renewed = resend(orgs, org.admin, org, sent.id)

    assert (renewed.id, renewed.state, renewed.send_count) == (sent.id, PENDING, 2)
    assert renewed.send_time.ToDatetime(dt.UTC) == clock()
    assert renewed.expire_time.ToDatetime(dt.UTC) == clock() + dt.timedelta(seconds=TTL)
    assert renewed.create_time == sent.create_time
    mailbox.wait_for(email, SUBJECT, count=2)
    assert invitation_events(sessions) == [
        ("invitation.sent", sent.id),
        ("invitation.resent", sent.id),
    ]


def test_an_invitation_is_sent_at_most_five_times(
    orgs: Orgs, org: Org, clock: FakeClock, mailbox: Mailbox
) -> None:
    email = unique_email("invitee")
    sent = invite(orgs, org.admin, org, email)
    for count in range(2, 6):
        clock.advance(seconds=61)
        assert resend(orgs, org.admin, org, sent.id).send_count == count
    clock.advance(seconds=61)
    assert reason_of(resend, orgs, org.admin, org, sent.id) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVITATION_SEND_LIMIT",
    )
    mailbox.wait_for(email, SUBJECT, count=5)
    # Cancelled and sent anew, it may go out again.
    cancel(orgs, org.admin, org, sent.id)
    assert invite(orgs, org.admin, org, email).send_count == 1


def test_adding_the_invitee_as_a_member_closes_their_invitation(
    auth: Auth,
    orgs: Orgs,
    org: Org,
    clock: FakeClock,
    mailbox: Mailbox,
    sessions: Sessions,
    audit: AuditStub,
) -> None:
    person = sign_up(auth, "joined")
    invitation = invite(orgs, org.owner, org, person.email)
    mailbox.wait_for(person.email, SUBJECT)
    verify(auth, mailbox, person.email)
    assert [i.id for i in mine(orgs, person)] == [invitation.id]
    add_member(orgs, org.admin, org.organization, person, MEMBER)
    # Nobody's list shows an invitation that accepting would refuse.
    assert mine(orgs, person) == []
    assert invitation.id not in [i.id for i in listed(orgs, org.owner, org)]
    (closed,) = [i for i in listed(orgs, org.owner, org, True) if i.id == invitation.id]
    assert closed.state == CANCELLED
    assert ("invitation.cancelled", invitation.id) in invitation_events(sessions)
    assert {"invitation.cancelled", "member.added"} <= set(org_actions(audit, org.owner, org))
    clock.advance(seconds=61)
    assert reason_of(resend, orgs, org.owner, org, invitation.id) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVITATION_CANCELLED",
    )
    assert len(mailbox.to(person.email, SUBJECT)) == 1


def test_resend_and_cancel_refusals(
    auth: Auth, orgs: Orgs, org: Org, clock: FakeClock, sessions: Sessions
) -> None:
    to_owner = invite(orgs, org.owner, org, unique_email(), OWNER)
    to_member = invite(orgs, org.owner, org, unique_email(), MEMBER)
    clock.advance(seconds=61)
    other_org = create_organization(orgs, org.owner)
    elsewhere = orgs.CreateInvitation(
        pb.CreateInvitationRequest(slug=other_org.slug, email=unique_email(), role=MEMBER),
        metadata=org.owner.metadata,
    ).invitation
    before = invitation_events(sessions)
    outsider = sign_up(auth)
    for call in (resend, cancel):
        expectations = [
            (org.member, to_member.id, "PERMISSION_DENIED"),
            (org.admin, to_owner.id, "PERMISSION_DENIED"),
            (outsider, to_member.id, "ORGANIZATION_NOT_FOUND"),
            (org.owner, UNKNOWN_ID, "INVITATION_NOT_FOUND"),
            (org.owner, elsewhere.id, "INVITATION_NOT_FOUND"),
        ]
        for caller, invitation_id, reason in expectations:
            error = error_of(functools.partial(call, orgs, caller, org, invitation_id))
            assert error.reason == reason, (call.__name__, reason)
        bad = error_of(functools.partial(call, orgs, org.owner, org, "not-a-uuid"))
        assert list(bad.field_violations) == ["invitation_id"]
    assert invitation_events(sessions) == before

    cancelled = cancel(orgs, org.admin, org, to_member.id)
    assert cancelled.state == CANCELLED
    for call in (resend, cancel):
        assert reason_of(call, orgs, org.owner, org, to_member.id) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "INVITATION_CANCELLED",
        )
    assert cancel(orgs, org.owner, org, to_owner.id).state == CANCELLED
    assert set(invitation_events(sessions)) - set(before) == {
        ("invitation.cancelled", to_member.id),
        ("invitation.cancelled", to_owner.id),
    }


# --- The invitee's side -------------------------------------------------------------------------


def test_decline_closes_the_invitation(
    auth: Auth, orgs: Orgs, audit: AuditStub, mailbox: Mailbox, org: Org, clock: FakeClock
) -> None:
    invitee = verified(auth, mailbox)
    sent = invite(orgs, org.owner, org, invitee.email)
    clock.advance(seconds=1)

    decline(orgs, invitee, sent.id)

    assert mine(orgs, invitee) == []
    for answer in (accept, decline):
        assert reason_of(answer, orgs, invitee, sent.id) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "INVITATION_DECLINED",
        )
    for call in (resend, cancel):
        assert reason_of(call, orgs, org.owner, org, sent.id)[1] == "INVITATION_DECLINED"
    [closed] = listed(orgs, org.owner, org, include_closed=True)
    assert closed.state == DECLINED
    assert org_actions(audit, org.owner, org)[0] == "invitation.declined"
    assert own_actions(audit, invitee)[0] == "invitation.declined"


def test_accepting_twice_and_after_cancel(
    auth: Auth, orgs: Orgs, mailbox: Mailbox, org: Org
) -> None:
    invitee = verified(auth, mailbox)
    first = invite(orgs, org.owner, org, invitee.email)
    accept(orgs, invitee, first.id)
    assert reason_of(accept, orgs, invitee, first.id) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVITATION_ACCEPTED",
    )
    for call in (resend, cancel):
        assert reason_of(call, orgs, org.owner, org, first.id)[1] == "INVITATION_ACCEPTED"

    other = verified(auth, mailbox)
    withdrawn = invite(orgs, org.owner, org, other.email)
    cancel(orgs, org.owner, org, withdrawn.id)
    assert reason_of(accept, orgs, other, withdrawn.id) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVITATION_CANCELLED",
    )


def test_only_the_verified_invitee_may_answer(
    auth: Auth, orgs: Orgs, mailbox: Mailbox, org: Org, sessions: Sessions
) -> None:
    invitee = sign_up(auth, "invitee")  # not verified yet
    sent = invite(orgs, org.owner, org, invitee.email)
    someone_else = verified(auth, mailbox, "someone")
    before = invitation_events(sessions)

    for answer in (accept, decline):
        for caller, invitation_id in ((someone_else, sent.id), (invitee, UNKNOWN_ID)):
            assert reason_of(answer, orgs, caller, invitation_id) == (
                grpc.StatusCode.NOT_FOUND,
                "INVITATION_NOT_FOUND",
            )
        assert reason_of(answer, orgs, invitee, sent.id) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "EMAIL_NOT_VERIFIED",
        )
        bad = error_of(functools.partial(answer, orgs, invitee, "nope"))
        assert list(bad.field_violations) == ["invitation_id"]
    assert reason_of(mine, orgs, invitee) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "EMAIL_NOT_VERIFIED",
    )
    assert mine(orgs, someone_else) == []
    # Nor does an owner of another organization see it.
    assert error_of(lambda: accept(orgs, org.owner, sent.id)).reason == "INVITATION_NOT_FOUND"
    assert invitation_events(sessions) == before

    verify(auth, mailbox, invitee.email)
    assert accept(orgs, invitee, sent.id).caller_role == MEMBER


def test_an_invitee_added_meanwhile_finds_the_invitation_closed(
    auth: Auth, orgs: Orgs, mailbox: Mailbox, org: Org
) -> None:
    invitee = verified(auth, mailbox)
    sent = invite(orgs, org.owner, org, invitee.email)
    add_member(orgs, org.owner, org.organization, invitee, MEMBER)
    assert reason_of(accept, orgs, invitee, sent.id) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVITATION_CANCELLED",
    )


def test_an_invitation_holds_only_while_its_inviter_could_send_it(
    auth: Auth, orgs: Orgs, mailbox: Mailbox, org: Org, clock: FakeClock, sessions: Sessions
) -> None:
    demoted_invitee, removed_invitee, deleted_invitee = (
        verified(auth, mailbox, p) for p in ("a", "b", "c")
    )
    by_admin = invite(orgs, org.admin, org, demoted_invitee.email, ADMIN)
    by_member_to_be = invite(orgs, org.admin, org, removed_invitee.email)
    # The admin steps down: their invitation to the admin role no longer holds.
    orgs.UpdateMemberRole(
        pb.UpdateMemberRoleRequest(slug=org.slug, user_id=org.admin.id, role=MEMBER),
        metadata=org.owner.metadata,
    )
    not_allowed = (grpc.StatusCode.FAILED_PRECONDITION, "INVITER_NOT_ALLOWED")
    assert reason_of(accept, orgs, demoted_invitee, by_admin.id) == not_allowed
    orgs.RemoveMember(
        pb.RemoveMemberRequest(slug=org.slug, user_id=org.admin.id), metadata=org.owner.metadata
    )
    assert reason_of(accept, orgs, removed_invitee, by_member_to_be.id) == not_allowed

    # An inviter whose account is gone: no one vouches for the invitation any more.
    second_owner = verified(auth, mailbox, "owner2")
    add_member(orgs, org.owner, org.organization, second_owner, OWNER)
    orphan = invite(orgs, second_owner, org, deleted_invitee.email)
    mailbox.wait_for(deleted_invitee.email, SUBJECT)  # sent while its inviter still existed
    auth.DeleteMe(
        auth_service_pb2.DeleteMeRequest(password=PASSWORD), metadata=second_owner.metadata
    )
    [shown] = [i for i in listed(orgs, org.owner, org) if i.id == orphan.id]
    assert (shown.inviter_user_id, shown.inviter_email, shown.inviter_name) == ("", "", "")
    assert reason_of(accept, orgs, deleted_invitee, orphan.id) == not_allowed

    # Resending by an owner makes them the inviter: each invitation holds again, its email
    # goes out naming them, and the audit event says whose it was.
    clock.advance(seconds=61)
    repairs = [
        (by_admin, demoted_invitee, org.admin.id),
        (by_member_to_be, removed_invitee, org.admin.id),
        (orphan, deleted_invitee, ""),
    ]
    for sent, invitee, previous in repairs:
        renewed = resend(orgs, org.owner, org, sent.id)
        assert (renewed.inviter_user_id, renewed.inviter_email, renewed.send_count) == (
            org.owner.id,
            org.owner.email,
            2,
        )
        mail = mailbox.wait_for(invitee.email, SUBJECT, count=2)
        assert org.owner.email in mail.text
        assert resent_details(sessions, sent.id) == {
            "email": invitee.email,
            "role": Role.ADMIN.value if sent.role == ADMIN else Role.MEMBER.value,
            "send_count": 2,
            "inviter": org.owner.id,
            "previous_inviter": previous,
        }
        assert accept(orgs, invitee, sent.id).caller_role == sent.role


def resent_details(sessions: Sessions, invitation_id: str) -> dict[str, object]:
    with sessions.read() as session:
        event = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "invitation.resent", AuditEvent.target_id == invitation_id
            )
        ).one()
        details: dict[str, object] = json.loads(event.details)
        return details


def test_deleting_the_organization_deletes_its_invitations(
    auth: Auth, orgs: Orgs, mailbox: Mailbox, org: Org, sessions: Sessions
) -> None:
    invitee = verified(auth, mailbox)
    sent = invite(orgs, org.owner, org, invitee.email)
    orgs.DeleteOrganization(
        pb.DeleteOrganizationRequest(slug=org.slug, confirm_slug=org.slug),
        metadata=org.owner.metadata,
    )
    assert mine(orgs, invitee) == []
    assert error_of(lambda: accept(orgs, invitee, sent.id)).reason == "INVITATION_NOT_FOUND"
    with sessions.read() as session:
        assert session.scalars(select(Invitation)).all() == []


# --- The email's renderer -----------------------------------------------------------------------


def test_renderer_drops_a_message_once_the_invitation_is_not_pending(
    orgs: Orgs, org: Org, sessions: Sessions, clock: FakeClock, app: App
) -> None:
    sent = invite(orgs, org.owner, org, unique_email())
    render = make_invitation_renderer("https://luman.example")
    queued = Queued(
        id=uuid.uuid4(),
        kind="invitation",
        recipient=sent.email,
        user_id=None,
        subject_id=uuid.UUID(sent.id),
        params={},
        create_time=clock(),
        attempts=0,
    )
    with sessions.write.begin() as session:
        mail = render(session, queued, clock())
    assert mail is not None
    assert sent.id in mail.text
    assert "https://luman.example" in mail.text
    with sessions.write.begin() as session:
        assert render(session, queued, clock() + dt.timedelta(seconds=TTL)) is None
    cancel(orgs, org.owner, org, sent.id)
    with sessions.write.begin() as session:
        assert render(session, queued, clock()) is None
        gone = dataclasses.replace(queued, subject_id=uuid.uuid4())
        assert render(session, gone, clock()) is None
