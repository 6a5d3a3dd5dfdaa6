"""Invitation races through the real server, on SQLite and PostgreSQL: one invitation accepted
many times at once, accepted while it is cancelled, and sent while its organization is
deleted. Exactly one outcome wins, the loser gets a precise answer, never INTERNAL.
(Ownership transfer against demotion: tests/server/test_concurrency.py.)"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from luman.auth.v1 import auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2 as pb
from luman.organization.v1 import organization_service_pb2_grpc
from luman.server.config import Settings
from luman.server.db.models import AuditEvent, Invitation, Membership
from luman.server.db.session import Sessions
from tests.mail_support import Mailbox, verify
from tests.server.organization_support import (
    MEMBER,
    Account,
    create_organization,
    roles_by_user,
    sign_up,
)
from tests.server.race_support import OK, PAIRS, race, tally
from tests.support import unique_email

Auth = auth_service_pb2_grpc.AuthServiceStub
Orgs = organization_service_pb2_grpc.OrganizationServiceStub


@pytest.fixture
def settings(settings: Settings, mailbox: Mailbox) -> Settings:
    return dataclasses.replace(settings, smtp_url=mailbox.url)


def _verified(auth: Auth, mailbox: Mailbox, prefix: str = "invitee") -> Account:
    """A new account, its address verified (inviting needs it, as answering does)."""
    account = sign_up(auth, prefix)
    verify(auth, mailbox, account.email)
    return account


def _invite(orgs: Orgs, owner: Account, slug: str, email: str) -> str:
    response = orgs.CreateInvitation(
        pb.CreateInvitationRequest(slug=slug, email=email, role=MEMBER), metadata=owner.metadata
    )
    return str(response.invitation.id)


def _events(sessions: Sessions, action: str, organization_id: str) -> int:
    with sessions.read() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEvent)
                .where(
                    AuditEvent.organization_id == uuid.UUID(organization_id),
                    AuditEvent.action == action,
                )
            )
            or 0
        )


def test_accepting_one_invitation_many_times_at_once(
    auth: Auth, orgs: Orgs, sessions: Sessions, mailbox: Mailbox
) -> None:
    owner, invitee = _verified(auth, mailbox, "owner"), _verified(auth, mailbox)
    organization = create_organization(orgs, owner)
    invitation_id = _invite(orgs, owner, organization.slug, invitee.email)
    request = pb.AcceptInvitationRequest(invitation_id=invitation_id)

    results = race([lambda: orgs.AcceptInvitation(request, metadata=invitee.metadata)] * 10)

    assert results.count(OK) == 1
    assert set(results) - {OK} <= {
        ("FAILED_PRECONDITION", "INVITATION_ACCEPTED"),
        ("ALREADY_EXISTS", "ALREADY_MEMBER"),
    }
    assert roles_by_user(orgs, owner, organization)[invitee.id] == MEMBER
    assert _events(sessions, "invitation.accepted", organization.id) == 1
    assert _events(sessions, "member.added", organization.id) == 1


@pytest.mark.parametrize("round_", range(2))
def test_accepting_while_the_invitation_is_cancelled(
    auth: Auth, orgs: Orgs, sessions: Sessions, mailbox: Mailbox, round_: int
) -> None:
    setups = []
    for _ in range(PAIRS):
        owner, invitee = _verified(auth, mailbox, "owner"), _verified(auth, mailbox)
        organization = create_organization(orgs, owner)
        invitation_id = _invite(orgs, owner, organization.slug, invitee.email)
        setups.append((organization, owner, invitee, invitation_id))

    def accept(invitee: Account, invitation_id: str) -> Callable[[], Any]:
        request = pb.AcceptInvitationRequest(invitation_id=invitation_id)
        return lambda: orgs.AcceptInvitation(request, metadata=invitee.metadata)

    def cancel(slug: str, owner: Account, invitation_id: str) -> Callable[[], Any]:
        request = pb.CancelInvitationRequest(slug=slug, invitation_id=invitation_id)
        return lambda: orgs.CancelInvitation(request, metadata=owner.metadata)

    results = race(
        [accept(i, n) for _, _, i, n in setups] + [cancel(o.slug, w, n) for o, w, _, n in setups]
    )
    for index, (organization, owner, invitee, _) in enumerate(setups):
        accepted, cancelled = results[index], results[index + PAIRS]
        assert (accepted, cancelled) in {
            (OK, ("FAILED_PRECONDITION", "INVITATION_ACCEPTED")),
            (("FAILED_PRECONDITION", "INVITATION_CANCELLED"), OK),
        }
        roles = roles_by_user(orgs, owner, organization)
        assert (invitee.id in roles) == (accepted == OK)


@pytest.mark.parametrize("round_", range(2))
def test_deleting_the_organization_while_inviting(
    auth: Auth, orgs: Orgs, sessions: Sessions, mailbox: Mailbox, round_: int
) -> None:
    setups = []
    for _ in range(PAIRS):
        owner = _verified(auth, mailbox, "owner")
        setups.append((create_organization(orgs, owner), owner))

    def delete(slug: str, owner: Account) -> Callable[[], Any]:
        request = pb.DeleteOrganizationRequest(slug=slug, confirm_slug=slug)
        return lambda: orgs.DeleteOrganization(request, metadata=owner.metadata)

    def invite(slug: str, owner: Account) -> Callable[[], Any]:
        request = pb.CreateInvitationRequest(slug=slug, email=unique_email(), role=MEMBER)
        return lambda: orgs.CreateInvitation(request, metadata=owner.metadata)

    results = race([delete(o.slug, w) for o, w in setups] + [invite(o.slug, w) for o, w in setups])
    assert results[:PAIRS] == [OK] * PAIRS
    assert set(tally(results[PAIRS:])) <= {OK, ("NOT_FOUND", "ORGANIZATION_NOT_FOUND")}
    ids = [uuid.UUID(o.id) for o, _ in setups]
    with sessions.read() as session:
        left = session.scalar(
            sa.select(sa.func.count())
            .select_from(Invitation)
            .where(Invitation.organization_id.in_(ids))
        )
        members = session.scalar(
            sa.select(sa.func.count())
            .select_from(Membership)
            .where(Membership.organization_id.in_(ids))
        )
    assert (left, members) == (0, 0)
