"""Queries for invitations, and the two things every change of one writes: its closing state
and its audit event (organization/invitations.py has the rules). Never commits."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from luman.interceptors.errors import AlreadyExistsError
from luman.server.audit.record import Event
from luman.server.db.integrity import violates
from luman.server.db.models import Invitation, Organization, Role, User

PageKey = tuple[dt.datetime, uuid.UUID]

PENDING = "pending"
ACCEPTED = "accepted"
DECLINED = "declined"
CANCELLED = "cancelled"
# What the API shows: a pending invitation past its expire_time is "expired".
EXPIRED = "expired"


@dataclasses.dataclass(frozen=True)
class InvitationRow:
    """An invitation with its organization's slug and name and its inviter's name and address
    (empty once the inviter's account is deleted). `state` is as the API shows it, expired
    included."""

    id: uuid.UUID
    organization_id: uuid.UUID
    organization_slug: str
    organization_name: str
    email: str
    role: Role
    inviter_id: uuid.UUID | None
    inviter_name: str
    inviter_email: str
    state: str
    create_time: dt.datetime
    expire_time: dt.datetime
    send_time: dt.datetime
    send_count: int


def close(invitation: Invitation, state: str, by: uuid.UUID, now: dt.datetime) -> None:
    """Accepted, declined or cancelled (`state`), now, by `by`."""
    invitation.state = state
    invitation.decide_time = now
    invitation.decided_by = by


def invitation_event(
    action: str,
    invitation: Invitation,
    *,
    user_id: uuid.UUID | None = None,
    details: Mapping[str, str | int | bool] | None = None,
) -> Event:
    """An invitation event of the organization's, with the address and role and `details`;
    with `user_id`, of that account's too (the invitee answering)."""
    return Event(
        action,
        user_id=user_id,
        organization_id=invitation.organization_id,
        target_type="invitation",
        target_id=str(invitation.id),
        details={"email": invitation.email, "role": invitation.role.value, **(details or {})},
    )


def shown_state(invitation: Invitation, now: dt.datetime) -> str:
    """The stored state, or EXPIRED for a pending invitation past its expire_time."""
    if invitation.state == PENDING and invitation.expire_time <= now:
        return EXPIRED
    return invitation.state


def row_of(
    invitation: Invitation, organization: Organization, inviter: User | None, now: dt.datetime
) -> InvitationRow:
    return InvitationRow(
        id=invitation.id,
        organization_id=invitation.organization_id,
        organization_slug=organization.slug,
        organization_name=organization.name,
        email=invitation.email,
        role=invitation.role,
        inviter_id=invitation.inviter_id,
        inviter_name=inviter.name if inviter is not None else "",
        inviter_email=inviter.email if inviter is not None else "",
        state=shown_state(invitation, now),
        create_time=invitation.create_time,
        expire_time=invitation.expire_time,
        send_time=invitation.send_time,
        send_count=invitation.send_count,
    )


class InvitationRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, invitation: Invitation) -> Invitation:
        """Insert it; the partial unique index allows one pending invitation per address."""
        self._session.add(invitation)
        try:
            self._session.flush()
        except IntegrityError as exc:
            if violates(exc, "uq_invitations_organization_id_email_pending"):
                raise AlreadyExistsError(
                    "INVITATION_PENDING", "an invitation to this address is pending"
                ) from None
            raise
        return invitation

    def get(self, invitation_id: uuid.UUID, *, lock: bool = False) -> Invitation | None:
        """The invitation, read afresh (`lock`: with a row lock, PostgreSQL)."""
        stmt = (
            select(Invitation)
            .where(Invitation.id == invitation_id)
            .execution_options(populate_existing=True)
        )
        if lock:
            stmt = stmt.with_for_update()
        return self._session.scalars(stmt).one_or_none()

    def pending_for(self, organization_id: uuid.UUID, email: str) -> Invitation | None:
        """The organization's pending invitation to `email` (expired or not)."""
        return self._session.scalars(
            select(Invitation).where(
                Invitation.organization_id == organization_id,
                Invitation.email == email,
                Invitation.state == PENDING,
            )
        ).one_or_none()

    def last_send_time(self, organization_id: uuid.UUID, email: str) -> dt.datetime | None:
        """When the organization last sent a message to `email`, whatever became of it."""
        return self._session.scalars(
            select(Invitation.send_time)
            .where(Invitation.organization_id == organization_id, Invitation.email == email)
            .order_by(Invitation.send_time.desc())
            .limit(1)
        ).one_or_none()

    def nth_newest_created_by(
        self, inviter_id: uuid.UUID, since: dt.datetime, n: int
    ) -> dt.datetime | None:
        """The create_time of the `n`-th newest invitation `inviter_id` created after `since`
        (in any organization, whatever its state), or None when there are fewer."""
        return self._session.scalars(
            select(Invitation.create_time)
            .where(Invitation.inviter_id == inviter_id, Invitation.create_time > since)
            .order_by(Invitation.create_time.desc())
            .offset(n - 1)
            .limit(1)
        ).one_or_none()

    def count_pending(self, organization_id: uuid.UUID, now: dt.datetime) -> int:
        """The organization's pending invitations that have not expired."""
        return (
            self._session.scalar(
                select(func.count())
                .select_from(Invitation)
                .where(
                    Invitation.organization_id == organization_id,
                    Invitation.state == PENDING,
                    Invitation.expire_time > now,
                )
            )
            or 0
        )

    def user(self, user_id: uuid.UUID | None) -> User | None:
        return None if user_id is None else self._session.get(User, user_id)

    def page(
        self,
        where: ColumnElement[bool],
        now: dt.datetime,
        after: PageKey | None,
        limit: int,
    ) -> list[InvitationRow]:
        """Invitations matching `where`, newest first, after `after`, with their organization
        and inviter (one statement)."""
        inviter = aliased(User)
        stmt = (
            select(Invitation, Organization, inviter)
            .join(Organization, Organization.id == Invitation.organization_id)
            .outerjoin(inviter, inviter.id == Invitation.inviter_id)
            .where(where)
        )
        if after is not None:
            stmt = stmt.where(
                or_(
                    Invitation.create_time < after[0],
                    and_(Invitation.create_time == after[0], Invitation.id < after[1]),
                )
            )
        stmt = stmt.order_by(Invitation.create_time.desc(), Invitation.id.desc()).limit(limit)
        return [
            row_of(invitation, organization, user, now)
            for invitation, organization, user in self._session.execute(stmt)
        ]


def of_organization(organization_id: uuid.UUID, include_closed: bool) -> ColumnElement[bool]:
    """ListInvitations: pending and expired ones, or all with `include_closed`."""
    condition = Invitation.organization_id == organization_id
    return condition if include_closed else and_(condition, Invitation.state == PENDING)


def pending_to(email: str, now: dt.datetime) -> ColumnElement[bool]:
    """ListMyInvitations: pending and unexpired, to `email`."""
    return and_(
        Invitation.email == email, Invitation.state == PENDING, Invitation.expire_time > now
    )
