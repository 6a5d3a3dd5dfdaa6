"""Invitations: an owner or admin invites an email address with a role; the person with that
address, signed in with it verified, accepts or declines.

- Sending, resending and cancelling follow AddMember's grant rules: owners may invite anyone,
  admins admins and members (and resend or cancel only those), members nothing; a non-member
  learns nothing (ORGANIZATION_NOT_FOUND). Sending and resending also need the caller's own
  address verified (EMAIL_NOT_VERIFIED, checked after those rules): mail goes out in our name
  only for someone we can reach.
- Against mail floods: one message a minute per organization and address, whatever became of
  the last invitation (so cancelling and inviting again does not send at once), and at most
  DAILY_QUOTA invitations created per inviter in 24 hours, in all organizations, each sent at
  most MAX_SENDS times (resends included). The subject
  of the email holds no text a user chose; the names are in the body.
- An invitation holds only while its inviter could still send it: on acceptance the inviter
  must still be a member allowed to grant the role (a deleted inviter never is). Resending
  makes the caller (an owner, or an admin for a role they may grant) the inviter, so an
  invitation whose inviter left, was demoted or deleted their account is repaired by
  resending it.
- Every change runs under the organization's row lock, taken first, as every membership
  change does (service.py): two accepts at once, an accept against a cancel, an invitation
  against the organization's deletion are serialised, and the loser sees the winner's result.
- A pending invitation past its expire_time is EXPIRED: it can be resent (renewed) or
  cancelled; a new invitation to the same address closes it as cancelled and replaces it, so
  the partial unique index (one pending invitation per organization and address) holds.
- The invitee is identified by the address on their account row, verified, never by a token's
  claims: an invitation to another address is INVITATION_NOT_FOUND, as an unknown one is.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.orm import Session

from luman.interceptors.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
    ResourceExhaustedError,
)
from luman.interceptors.principal import Principal
from luman.server.audit.record import Event, record
from luman.server.clock import Clock
from luman.server.db.models import Invitation, Membership, Organization, Role, User
from luman.server.db.session import Sessions
from luman.server.mail import outbox, templates
from luman.server.mail.message import Mail, Queued, Renderer
from luman.server.organization.invitation_repository import (
    ACCEPTED,
    CANCELLED,
    DECLINED,
    EXPIRED,
    PENDING,
    InvitationRepository,
    InvitationRow,
    PageKey,
    close,
    invitation_event,
    of_organization,
    pending_to,
    row_of,
    shown_state,
)
from luman.server.organization.repository import OrganizationRepository, OrganizationRow
from luman.server.organization.service import (
    OrganizationRef,
    Page,
    caller_membership,
    denied,
    page_of,
)

MAIL_KIND = "invitation"
# At most one message a minute per organization and address (Create and Resend).
RESEND_INTERVAL = dt.timedelta(minutes=1)
# Invitations one inviter may create in QUOTA_WINDOW, in all organizations.
DAILY_QUOTA = 100
QUOTA_WINDOW = dt.timedelta(hours=24)
SUBJECT = "You are invited to an organization on Luman"
# Messages one invitation may send (its first and 4 resends): with DAILY_QUOTA, what one
# inviter can make the server send stays bounded, resends included.
MAX_SENDS = 5

_CLOSED = {
    ACCEPTED: ("INVITATION_ACCEPTED", "the invitation was accepted"),
    DECLINED: ("INVITATION_DECLINED", "the invitation was declined"),
    CANCELLED: ("INVITATION_CANCELLED", "the invitation was cancelled"),
    EXPIRED: ("INVITATION_EXPIRED", "the invitation has expired"),
}
_OWNER_INVITATION = "only owners can manage an invitation to the owner role"


def _invitation_not_found() -> NotFoundError:
    return NotFoundError("INVITATION_NOT_FOUND", "invitation not found")


def may_grant(role_held: Role, role: Role) -> bool:
    """Whether a member holding `role_held` may grant `role` (AddMember's rule)."""
    return role_held is Role.OWNER or (role_held is Role.ADMIN and role is not Role.OWNER)


def _recently_sent(send_time: dt.datetime | None, now: dt.datetime) -> None:
    """Raises ResourceExhaustedError INVITATION_RECENTLY_SENT (with the seconds to wait) when
    the last message went out less than RESEND_INTERVAL ago."""
    if send_time is None:
        return
    wait = send_time + RESEND_INTERVAL - now
    if wait > dt.timedelta(0):
        raise ResourceExhaustedError(
            "INVITATION_RECENTLY_SENT",
            "an invitation was sent to this address less than a minute ago",
            max(1.0, wait.total_seconds()),
        )


def _closed(state: str) -> FailedPreconditionError:
    reason, message = _CLOSED[state]
    return FailedPreconditionError(reason, message)


class InvitationService:
    def __init__(
        self,
        sessions: Sessions,
        clock: Clock,
        *,
        ttl: float = 7 * 86400,
        max_pending: int = 500,
        daily_quota: int = DAILY_QUOTA,
    ) -> None:
        """`ttl`: seconds an invitation holds after it is sent (INVITATION_TTL);
        `max_pending`: pending invitations one organization may hold (MAX_PENDING_INVITATIONS);
        `daily_quota`: invitations one inviter may create in 24 hours.
        """
        self._sessions = sessions
        self._clock = clock
        self._ttl = dt.timedelta(seconds=ttl)
        self._max_pending = max_pending
        self._daily_quota = daily_quota

    # --- The organization's side -----------------------------------------------------------

    def create(
        self, principal: Principal, ref: OrganizationRef, email: str, role: Role
    ) -> InvitationRow:
        """Raises:
        NotFoundError: ORGANIZATION_NOT_FOUND.
        PermissionDeniedError: a member, or an admin inviting an owner or replacing an
            expired invitation to the owner role.
        FailedPreconditionError: EMAIL_NOT_VERIFIED (the caller's), TOO_MANY_INVITATIONS.
        AlreadyExistsError: ALREADY_MEMBER, INVITATION_PENDING.
        ResourceExhaustedError: INVITATION_RECENTLY_SENT, INVITATION_QUOTA_EXCEEDED (with the
            seconds to wait).
        """
        now = self._clock()
        with self._sessions.write.begin() as session:
            org_repo = OrganizationRepository(session, now)
            organization, caller = caller_membership(org_repo, principal, ref, lock=True)
            if caller.role is Role.MEMBER:
                raise denied("members cannot invite")
            if not may_grant(caller.role, role):
                raise denied("only owners can grant the owner role")
            _verified(caller.user)
            repo = InvitationRepository(session)
            user = org_repo.user(None, email)
            if user is not None and org_repo.membership(organization.id, user.id) is not None:
                raise AlreadyExistsError("ALREADY_MEMBER", "the address belongs to a member")
            replaced = repo.pending_for(organization.id, email)
            if replaced is not None and replaced.expire_time > now:
                raise AlreadyExistsError(
                    "INVITATION_PENDING",
                    "an invitation to this address is pending; resend it instead",
                )
            # Closing the expired one is managing it: the same rule as CancelInvitation.
            if replaced is not None and not may_grant(caller.role, replaced.role):
                raise denied(_OWNER_INVITATION)
            _recently_sent(repo.last_send_time(organization.id, email), now)
            self._check_quota(repo, principal, now)
            if repo.count_pending(organization.id, now) >= self._max_pending:
                raise FailedPreconditionError(
                    "TOO_MANY_INVITATIONS",
                    f"the organization has {self._max_pending} pending invitations; "
                    "cancel some first",
                )
            if replaced is not None:
                # Expired: closed here so that the new one is the address's only pending one.
                close(replaced, CANCELLED, principal.user_id, now)
                session.flush()
            invitation = repo.add(
                Invitation(
                    id=uuid.uuid4(),
                    organization_id=organization.id,
                    email=email,
                    role=role,
                    inviter_id=principal.user_id,
                    state=PENDING,
                    create_time=now,
                    send_time=now,
                    send_count=1,
                    expire_time=now + self._ttl,
                )
            )
            outbox.enqueue(session, MAIL_KIND, email, now, subject_id=invitation.id)
            details: dict[str, str | int | bool] = {}
            if replaced is not None:
                details["replaced"] = str(replaced.id)
            record(session, invitation_event("invitation.sent", invitation, details=details), now)
            return row_of(invitation, organization, caller.user, now)

    def _check_quota(
        self, repo: InvitationRepository, principal: Principal, now: dt.datetime
    ) -> None:
        """Raises ResourceExhaustedError INVITATION_QUOTA_EXCEEDED, with the seconds until the
        oldest counted invitation leaves the window, when the caller created `daily_quota` in
        the last QUOTA_WINDOW. (Checked under this organization's lock only: calls racing in
        several organizations at once may pass it by a few.)"""
        oldest = repo.nth_newest_created_by(
            principal.user_id, now - QUOTA_WINDOW, self._daily_quota
        )
        if oldest is not None:
            raise ResourceExhaustedError(
                "INVITATION_QUOTA_EXCEEDED",
                f"you created {self._daily_quota} invitations in the last 24 hours",
                max(1.0, (oldest + QUOTA_WINDOW - now).total_seconds()),
            )

    def list(
        self,
        principal: Principal,
        ref: OrganizationRef,
        include_closed: bool,
        after: PageKey | None,
        page_size: int,
    ) -> Page[InvitationRow]:
        now = self._clock()
        with self._sessions.read.begin() as session:
            organization, caller = caller_membership(
                OrganizationRepository(session, now), principal, ref, lock=False
            )
            if caller.role is Role.MEMBER:
                raise denied("members cannot list invitations")
            rows = InvitationRepository(session).page(
                of_organization(organization.id, include_closed), now, after, page_size + 1
            )
        return page_of(rows, page_size, lambda row: (row.create_time, row.id))

    def resend(
        self, principal: Principal, ref: OrganizationRef, invitation_id: uuid.UUID
    ) -> InvitationRow:
        """Sends the invitation again, renewed, with the caller as its inviter (they passed
        may_grant for its role), so that resending repairs an invitation whose inviter left,
        was demoted or is deleted.

        Raises (beyond create's NOT_FOUND and PERMISSION_DENIED):
        NotFoundError: INVITATION_NOT_FOUND.
        FailedPreconditionError: EMAIL_NOT_VERIFIED (the caller's), INVITATION_ACCEPTED,
            _DECLINED, _CANCELLED, INVITATION_SEND_LIMIT (sent MAX_SENDS times).
        AlreadyExistsError: ALREADY_MEMBER (the address is a member's now).
        ResourceExhaustedError: INVITATION_RECENTLY_SENT (with the seconds to wait).
        """
        now = self._clock()
        with self._sessions.write.begin() as session:
            organization, caller, invitation = self._managed(session, principal, ref, invitation_id)
            _verified(caller.user)
            state = shown_state(invitation, now)
            if state not in (PENDING, EXPIRED):
                raise _closed(state)
            # Added meanwhile (AddMember, or an account that joined another way): no message.
            org_repo = OrganizationRepository(session, now)
            user = org_repo.user(None, invitation.email)
            if user is not None and org_repo.membership(organization.id, user.id) is not None:
                raise AlreadyExistsError("ALREADY_MEMBER", "the address belongs to a member")
            if invitation.send_count >= MAX_SENDS:
                raise FailedPreconditionError(
                    "INVITATION_SEND_LIMIT",
                    f"the invitation was sent {invitation.send_count} times; cancel it and "
                    "invite the address again if it should still join",
                )
            # The pending invitation is the address's newest: its send_time is the last message.
            _recently_sent(invitation.send_time, now)
            details: dict[str, str | int | bool] = {"inviter": str(principal.user_id)}
            if invitation.inviter_id != principal.user_id:
                details["previous_inviter"] = (
                    "" if invitation.inviter_id is None else str(invitation.inviter_id)
                )
            invitation.inviter_id = principal.user_id
            invitation.expire_time = now + self._ttl
            invitation.send_time = now
            invitation.send_count += 1
            session.flush()
            outbox.enqueue(session, MAIL_KIND, invitation.email, now, subject_id=invitation.id)
            record(
                session,
                invitation_event(
                    "invitation.resent",
                    invitation,
                    details={"send_count": invitation.send_count, **details},
                ),
                now,
            )
            return row_of(invitation, organization, caller.user, now)

    def cancel(
        self, principal: Principal, ref: OrganizationRef, invitation_id: uuid.UUID
    ) -> InvitationRow:
        """Raises: as resend, without RESOURCE_EXHAUSTED."""
        now = self._clock()
        with self._sessions.write.begin() as session:
            organization, _, invitation = self._managed(session, principal, ref, invitation_id)
            state = shown_state(invitation, now)
            if state not in (PENDING, EXPIRED):
                raise _closed(state)
            close(invitation, CANCELLED, principal.user_id, now)
            session.flush()
            record(session, invitation_event("invitation.cancelled", invitation), now)
            return row_of(invitation, organization, _inviter(session, invitation), now)

    def _managed(
        self,
        session: Session,
        principal: Principal,
        ref: OrganizationRef,
        invitation_id: uuid.UUID,
    ) -> tuple[Organization, Membership, Invitation]:
        """The organization (locked), the caller's membership and the invitation, which the
        caller may manage: an owner any, an admin those for roles an admin may grant."""
        organization, caller = caller_membership(
            OrganizationRepository(session, self._clock()), principal, ref, lock=True
        )
        if caller.role is Role.MEMBER:
            raise denied("members cannot manage invitations")
        invitation = InvitationRepository(session).get(invitation_id, lock=True)
        if invitation is None or invitation.organization_id != organization.id:
            raise _invitation_not_found()
        if not may_grant(caller.role, invitation.role):
            raise denied(_OWNER_INVITATION)
        return organization, caller, invitation

    # --- The invitee's side ----------------------------------------------------------------

    def list_mine(
        self, principal: Principal, after: PageKey | None, page_size: int
    ) -> Page[InvitationRow]:
        """Raises: FailedPreconditionError: EMAIL_NOT_VERIFIED."""
        now = self._clock()
        with self._sessions.read.begin() as session:
            repo = InvitationRepository(session)
            user = _verified(repo.user(principal.user_id))
            rows = repo.page(pending_to(user.email, now), now, after, page_size + 1)
        return page_of(rows, page_size, lambda row: (row.create_time, row.id))

    def accept(self, principal: Principal, invitation_id: uuid.UUID) -> OrganizationRow:
        """The caller joins with the invitation's role.

        Raises:
            NotFoundError: INVITATION_NOT_FOUND (unknown, or to another address).
            FailedPreconditionError: EMAIL_NOT_VERIFIED, INVITATION_EXPIRED, _ACCEPTED,
                _DECLINED, _CANCELLED, INVITER_NOT_ALLOWED.
            AlreadyExistsError: ALREADY_MEMBER.
        """
        now = self._clock()
        with self._sessions.write.begin() as session:
            org_repo = OrganizationRepository(session, now)
            organization, invitation, user = self._invitee_side(session, principal, invitation_id)
            if org_repo.membership(organization.id, user.id) is not None:
                raise AlreadyExistsError("ALREADY_MEMBER", "you are a member already")
            inviter = (
                None
                if invitation.inviter_id is None
                else org_repo.membership(organization.id, invitation.inviter_id)
            )
            if inviter is None or not may_grant(inviter.role, invitation.role):
                raise FailedPreconditionError(
                    "INVITER_NOT_ALLOWED",
                    "whoever sent the invitation may no longer grant its role; "
                    "ask an owner or admin to resend it",
                )
            org_repo.add_membership(organization.id, user.id, invitation.role, now)
            close(invitation, ACCEPTED, user.id, now)
            session.flush()
            membership = org_repo.membership(organization.id, user.id)
            assert membership is not None
            record(
                session,
                invitation_event("invitation.accepted", invitation, user_id=user.id),
                now,
            )
            record(
                session,
                Event(
                    "member.added",
                    user.id,
                    organization.id,
                    target_type="membership",
                    target_id=str(user.id),
                    details={"role": invitation.role.value, "invitation_id": str(invitation.id)},
                ),
                now,
            )
            return OrganizationRow.of(membership)

    def decline(self, principal: Principal, invitation_id: uuid.UUID) -> None:
        """Raises: as accept, without ALREADY_MEMBER and INVITER_NOT_ALLOWED."""
        now = self._clock()
        with self._sessions.write.begin() as session:
            _, invitation, user = self._invitee_side(session, principal, invitation_id)
            close(invitation, DECLINED, user.id, now)
            session.flush()
            record(
                session,
                invitation_event("invitation.declined", invitation, user_id=user.id),
                now,
            )

    def _invitee_side(
        self, session: Session, principal: Principal, invitation_id: uuid.UUID
    ) -> tuple[Organization, Invitation, User]:
        """The organization (locked first, as for every membership change), the invitation
        (locked, read afresh) and the caller, whose verified address it is to, still pending."""
        repo = InvitationRepository(session)
        user = repo.user(principal.user_id)
        found = repo.get(invitation_id)
        # Another address's invitation is as unknown as a missing one.
        if user is None or found is None or found.email != user.email:
            raise _invitation_not_found()
        _verified(user)
        organization = OrganizationRepository(session, self._clock()).find(
            found.organization_id, None, lock=True
        )
        # Read again under the organization's lock: a concurrent answer has committed by now.
        invitation = repo.get(invitation_id, lock=True)
        if organization is None or invitation is None:
            raise _invitation_not_found()  # deleted with its organization meanwhile
        state = shown_state(invitation, self._clock())
        if state != PENDING:
            raise _closed(state)
        return organization, invitation, user


def _verified(user: User | None) -> User:
    if user is None or user.email_verify_time is None:
        raise FailedPreconditionError("EMAIL_NOT_VERIFIED", "verify your email address first")
    return user


def _inviter(session: Session, invitation: Invitation) -> User | None:
    return InvitationRepository(session).user(invitation.inviter_id)


# --- The invitation email -----------------------------------------------------------------------


def make_invitation_renderer(public_url: str) -> Renderer:
    """The renderer of kind "invitation": the message for a queued invitation, or None once it
    is no longer pending or has expired (cancelled, answered, renewed and re-queued)."""

    def render(session: Session, queued: Queued, now: dt.datetime) -> Mail | None:
        if queued.subject_id is None:
            return None
        invitation = InvitationRepository(session).get(queued.subject_id)
        if invitation is None or shown_state(invitation, now) != PENDING:
            return None
        organization = session.get(Organization, invitation.organization_id)
        inviter = _inviter(session, invitation)
        if organization is None or inviter is None:
            return None
        values = {
            "organization_name": organization.name,
            "organization_slug": organization.slug,
            "inviter_name": inviter.name or inviter.email,
            "inviter_email": inviter.email,
            "role": invitation.role.value,
            "email": invitation.email,
            "expire_time": invitation.expire_time.strftime("%Y-%m-%d %H:%M UTC"),
            "invitation_id": str(invitation.id),
            "public_url": public_url,
        }
        # The subject holds no text a user chose (names are escaped in the body): mail from
        # our domain must not carry an inviter's words in its most visible line.
        return templates.render("invitation", queued.recipient, SUBJECT, values)

    return render
