"""Organization rules: membership checks first (non-members learn nothing), then RBAC.

owner   everything, including granting and removing ownership
admin   add, remove and re-role admins and members; never touch an owner nor grant owner
member  read only
anyone  may remove themselves, except the last owner
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import Connection, select

from luman.interceptors.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from luman.interceptors.principal import Principal
from luman.server.audit.record import Event, record
from luman.server.clock import Clock
from luman.server.db.models import Membership, Organization, OwnershipOffer, Role, ServiceAccount
from luman.server.db.session import Sessions
from luman.server.organization import repository
from luman.server.organization.invitation_repository import (
    CANCELLED,
    InvitationRepository,
    close,
    invitation_event,
)
from luman.server.organization.repository import (
    MemberRow,
    OrganizationRepository,
    OrganizationRow,
    PageKey,
)


@dataclasses.dataclass(frozen=True)
class OrganizationRef:
    """Exactly one of `organization_id` and `slug` is set."""

    organization_id: uuid.UUID | None = None
    slug: str | None = None


@dataclasses.dataclass(frozen=True)
class UserRef:
    """Exactly one of `user_id` and `email` is set."""

    user_id: uuid.UUID | None = None
    email: str | None = None


T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_key: PageKey | None


def org_not_found() -> NotFoundError:
    return NotFoundError("ORGANIZATION_NOT_FOUND", "organization not found")


def denied(message: str) -> PermissionDeniedError:
    return PermissionDeniedError("PERMISSION_DENIED", message)


def caller_membership(
    repo: OrganizationRepository,
    principal: Principal,
    ref: OrganizationRef,
    *,
    lock: bool = False,
) -> tuple[Organization, Membership]:
    """The organization (row-locked with `lock`, as every membership change takes it first)
    and the caller's membership of it."""
    organization = repo.find(ref.organization_id, ref.slug, lock=lock)
    # A non-member learns nothing, not even that the organization exists.
    caller = repo.membership(organization.id, principal.user_id) if organization else None
    if organization is None or caller is None:
        raise org_not_found()
    return organization, caller


OFFER_LIFETIME = dt.timedelta(days=7)


@dataclasses.dataclass(frozen=True)
class TransferRow:
    """A pending ownership transfer, with the target's email."""

    organization_id: uuid.UUID
    from_user_id: uuid.UUID
    to_user_id: uuid.UUID
    to_email: str
    create_time: dt.datetime
    expire_time: dt.datetime


class OrganizationService:
    """Args (beyond the collaborators):
    forget_credential: drops a credential from the verified-token cache (TokenCache.forget);
        deleting an organization calls it for each of its service accounts, once committed.
    """

    def __init__(
        self,
        sessions: Sessions,
        clock: Clock,
        slug_redirect_days: int = 30,
        forget_credential: Callable[[uuid.UUID], None] = lambda _: None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._slug_redirect_days = slug_redirect_days
        self._forget_credential = forget_credential

    def create(self, principal: Principal, name: str, slug: str) -> OrganizationRow:
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, self._clock())
            organization = repo.add_organization(
                Organization(id=uuid.uuid4(), name=name, slug=slug, create_time=now)
            )
            # After the insert: see OrganizationRepository.check_slug_free.
            OrganizationRepository(session, now).check_slug_free(slug, organization.id)
            repo.add_membership(organization.id, principal.user_id, Role.OWNER, now)
            membership = repo.membership(organization.id, principal.user_id)
            assert membership is not None
            event = Event(
                "organization.created",
                principal.user_id,
                organization.id,
                target_type="organization",
                target_id=str(organization.id),
                details={"name": name, "slug": slug},
            )
            record(session, event, now)
            return OrganizationRow.of(membership)

    # Reads: plain Core rows (see repository.py), no ORM session, and no transaction: each read
    # is one statement (ListMembers asks a second one only on an empty page, to tell a
    # non-member from the end of the list). The list pages run on the driver's cursor
    # (db/reads.py), the rest on a Connection.

    def list_for(
        self, principal: Principal, after: PageKey | None, page_size: int
    ) -> Page[OrganizationRow]:
        rows = repository.organizations_of(
            self._sessions.statements, principal.user_id, after, page_size + 1
        )
        return page_of(rows, page_size, lambda row: (row.join_time, uuid.UUID(row.id)))

    def get(self, principal: Principal, ref: OrganizationRef) -> OrganizationRow:
        with self._sessions.statements.connect() as conn:
            return self._caller_organization(conn, principal, ref)

    def list_members(
        self, principal: Principal, ref: OrganizationRef, after: PageKey | None, page_size: int
    ) -> Page[MemberRow]:
        statements = self._sessions.statements
        # The page's statement lists members only to a member; no rows means a non-member or a
        # page past the last member, and only then is the membership asked for alone.
        rows = repository.members_seen_by(
            statements, principal.user_id, ref.organization_id, ref.slug, after, page_size + 1
        )
        if not rows and ref.slug is not None:
            # Only on a miss: a former slug that still redirects.
            with statements.connect() as conn:
                redirected = self._redirected(conn, ref)
            if redirected is not ref:
                rows = repository.members_seen_by(
                    statements,
                    principal.user_id,
                    redirected.organization_id,
                    None,
                    after,
                    page_size + 1,
                )
                ref = redirected
        if not rows:
            with statements.connect() as conn:
                self._caller_organization(conn, principal, ref)
        return page_of(rows, page_size, lambda row: (row.join_time, uuid.UUID(row.user_id)))

    def add_member(
        self, principal: Principal, ref: OrganizationRef, target: UserRef, role: Role
    ) -> MemberRow:
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, self._clock())
            organization, caller = caller_membership(repo, principal, ref, lock=True)
            if caller.role is Role.MEMBER:
                raise denied("members cannot add members")
            if role is Role.OWNER and caller.role is not Role.OWNER:
                raise denied("only owners can grant the owner role")
            user = repo.user(target.user_id, target.email)
            if user is None:
                raise NotFoundError("USER_NOT_FOUND", "user not found")
            now = self._clock()
            repo.add_membership(organization.id, user.id, role, now)
            membership = repo.membership(organization.id, user.id)
            assert membership is not None
            record(session, _member_event("member.added", membership, role=role.value), now)
            # A pending invitation to the member's address has nothing left to ask: closed, so
            # that nobody's list shows an invitation that accepting would refuse.
            invitation = InvitationRepository(session).pending_for(organization.id, user.email)
            if invitation is not None:
                close(invitation, CANCELLED, principal.user_id, now)
                details = {"member_added": True}
                event = invitation_event("invitation.cancelled", invitation, details=details)
                record(session, event, now)
            return MemberRow.of(membership)

    def remove_member(self, principal: Principal, ref: OrganizationRef, user_id: uuid.UUID) -> None:
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, self._clock())
            organization, caller = caller_membership(repo, principal, ref, lock=True)
            leaving = user_id == principal.user_id
            if not leaving and caller.role is Role.MEMBER:
                raise denied("members can only remove themselves")
            target = caller if leaving else self._target(repo, organization.id, user_id)
            if not leaving and target.role is Role.OWNER and caller.role is not Role.OWNER:
                raise denied("only owners can remove an owner")
            if target.role is Role.OWNER:
                self._keep_an_owner(repo, organization.id)
            event = _member_event("member.removed", target, role=target.role.value, left=leaving)
            repo.delete_membership(target)
            record(session, event, self._clock())

    def update_role(
        self, principal: Principal, ref: OrganizationRef, user_id: uuid.UUID, role: Role
    ) -> MemberRow:
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, self._clock())
            organization, caller = caller_membership(repo, principal, ref, lock=True)
            if caller.role is Role.MEMBER:
                raise denied("members cannot change roles")
            target = self._target(repo, organization.id, user_id)
            if caller.role is not Role.OWNER and (target.role is Role.OWNER or role is Role.OWNER):
                raise denied("only owners can grant or take away the owner role")
            if target.role is Role.OWNER and role is not Role.OWNER:
                self._keep_an_owner(repo, organization.id)
            old_role = target.role
            target.role = role
            session.flush()
            event = _member_event(
                "member.role_changed", target, role=role.value, old_role=old_role.value
            )
            record(session, event, self._clock())
            return MemberRow.of(target)

    def _redirected(self, conn: Connection, ref: OrganizationRef) -> OrganizationRef:
        """`ref`, or the organization its slug redirects to when that slug is no current one
        but a former slug within ORGANIZATION_SLUG_REDIRECT_DAYS."""
        if ref.slug is None:
            return ref
        target = repository.redirect_target(conn, ref.slug, self._clock())
        return ref if target is None else OrganizationRef(organization_id=target)

    def _caller_organization(
        self, conn: Connection, principal: Principal, ref: OrganizationRef
    ) -> OrganizationRow:
        # A former slug that still redirects finds the organization (with its current slug).
        row = repository.caller_organization_redirected(
            conn, principal.user_id, ref.organization_id, ref.slug, self._clock()
        )
        # A non-member learns nothing, not even that the organization exists.
        if row is None:
            raise org_not_found()
        return row

    @staticmethod
    def _target(
        repo: OrganizationRepository, organization_id: uuid.UUID, user_id: uuid.UUID
    ) -> Membership:
        target = repo.membership(organization_id, user_id)
        if target is None:
            raise NotFoundError("MEMBER_NOT_FOUND", "member not found")
        return target

    @staticmethod
    def _keep_an_owner(repo: OrganizationRepository, organization_id: uuid.UUID) -> None:
        # Runs under the organization row lock (PostgreSQL) or SQLite's write lock, so two
        # owners demoting each other at once cannot both pass this check.
        if repo.count_owners(organization_id) <= 1:
            raise FailedPreconditionError(
                "LAST_OWNER", "an organization must keep at least one owner"
            )

    # --- Renaming and deleting -------------------------------------------------------------

    def update(
        self, principal: Principal, ref: OrganizationRef, name: str | None, slug: str | None
    ) -> OrganizationRow:
        """Change the name (owners and admins) and/or the slug (owners only)."""
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, now)
            organization, caller = caller_membership(repo, principal, ref, lock=True)
            if caller.role is Role.MEMBER:
                raise denied("members cannot change the organization")
            if slug is not None and caller.role is not Role.OWNER:
                raise denied("only owners can change the slug")
            if name is not None and name != organization.name:
                old_name = organization.name
                organization.name = name
                record(
                    session,
                    Event(
                        "organization.renamed",
                        organization_id=organization.id,
                        target_type="organization",
                        target_id=str(organization.id),
                        details={"old_name": old_name, "new_name": name},
                    ),
                    now,
                )
            if slug is not None and slug != organization.slug:
                old_slug = organization.slug
                days = self._slug_redirect_days
                repo.change_slug(
                    organization, slug, now + dt.timedelta(days=days) if days > 0 else None
                )
                record(
                    session,
                    Event(
                        "organization.slug_changed",
                        organization_id=organization.id,
                        target_type="organization",
                        target_id=str(organization.id),
                        details={"old_slug": old_slug, "new_slug": slug, "redirect_days": days},
                    ),
                    now,
                )
            session.flush()
            return OrganizationRow.of(caller)

    def delete(self, principal: Principal, ref: OrganizationRef, confirm_slug: str) -> None:
        """Delete the organization (owners only) once `confirm_slug` repeats its slug."""
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, now)
            organization, caller = caller_membership(repo, principal, ref, lock=True)
            if caller.role is not Role.OWNER:
                raise denied("only owners can delete the organization")
            if confirm_slug != organization.slug:
                raise InvalidArgumentError.field(
                    "confirm_slug", "must be the organization's current slug, exactly"
                )
            record(
                session,
                Event(
                    "organization.deleted",
                    organization_id=organization.id,
                    target_type="organization",
                    target_id=str(organization.id),
                    details={
                        "slug": organization.slug,
                        "name": organization.name,
                        "members": repo.member_count(organization.id),
                    },
                ),
                now,
            )
            accounts = session.scalars(
                select(ServiceAccount.id).where(ServiceAccount.organization_id == organization.id)
            ).all()
            repo.delete_organization(organization.id)
        # Committed: its service accounts' access tokens fail on their very next call here, as
        # after DeleteServiceAccount (other replicas too: auth/invalidations.py).
        for account_id in accounts:
            self._forget_credential(account_id)

    # --- Ownership transfer ----------------------------------------------------------------

    def offer_transfer(
        self, principal: Principal, ref: OrganizationRef, target: UserRef
    ) -> TransferRow:
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, now)
            organization, caller = caller_membership(repo, principal, ref, lock=True)
            if caller.role is not Role.OWNER:
                raise denied("only owners can offer ownership")
            user = repo.user(target.user_id, target.email)
            member = repo.membership(organization.id, user.id) if user is not None else None
            if member is None:
                raise NotFoundError("MEMBER_NOT_FOUND", "member not found")
            if member.role is Role.OWNER:
                raise FailedPreconditionError("ALREADY_OWNER", "the member is an owner already")
            offer = OwnershipOffer(
                organization_id=organization.id,
                from_user_id=principal.user_id,
                to_user_id=member.user_id,
                create_time=now,
                expire_time=now + OFFER_LIFETIME,
            )
            replaced = repo.replace_offer(offer)
            record(
                session,
                Event(
                    "ownership.offered",
                    organization_id=organization.id,
                    user_id=member.user_id,
                    target_type="user",
                    target_id=str(member.user_id),
                    details={"to_email": member.user.email, "replaced": replaced},
                ),
                now,
            )
            return _transfer_row(offer, member.user.email)

    def get_transfer(self, principal: Principal, ref: OrganizationRef) -> TransferRow:
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, self._clock())
            organization, _ = caller_membership(repo, principal, ref)
            offer = self._offer(repo, organization.id)
            target = repo.user(offer.to_user_id, None)
            return _transfer_row(offer, target.email if target is not None else "")

    def accept_transfer(self, principal: Principal, ref: OrganizationRef) -> MemberRow:
        """The caller (the offer's target) becomes an owner, the offering owner an admin, in
        one transaction under the organization's row lock (like every membership change)."""
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, now)
            organization, caller, offer = self._target_of_offer(repo, principal, ref)
            offerer = repo.membership(organization.id, offer.from_user_id)
            if offerer is None or offerer.role is not Role.OWNER:
                raise FailedPreconditionError(
                    "OFFERER_NOT_OWNER", "the owner who made the offer is no longer an owner"
                )
            caller.role = Role.OWNER
            offerer.role = Role.ADMIN
            repo.delete_offer(organization.id)
            record(
                session,
                Event(
                    "ownership.accepted",
                    organization_id=organization.id,
                    user_id=caller.user_id,
                    target_type="user",
                    target_id=str(caller.user_id),
                    details={"from_user_id": str(offer.from_user_id)},
                ),
                now,
            )
            session.flush()
            return MemberRow.of(caller)

    def decline_transfer(self, principal: Principal, ref: OrganizationRef) -> None:
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, now)
            organization, caller, offer = self._target_of_offer(repo, principal, ref)
            repo.delete_offer(organization.id)
            record(
                session,
                Event(
                    "ownership.declined",
                    organization_id=organization.id,
                    user_id=caller.user_id,
                    target_type="user",
                    target_id=str(caller.user_id),
                    details={"from_user_id": str(offer.from_user_id)},
                ),
                now,
            )

    def cancel_transfer(self, principal: Principal, ref: OrganizationRef) -> None:
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, now)
            organization, caller = caller_membership(repo, principal, ref, lock=True)
            if caller.role is not Role.OWNER:
                raise denied("only owners can cancel an ownership transfer")
            offer = self._offer(repo, organization.id)
            repo.delete_offer(organization.id)
            record(
                session,
                Event(
                    "ownership.cancelled",
                    organization_id=organization.id,
                    user_id=offer.to_user_id,
                    target_type="user",
                    target_id=str(offer.to_user_id),
                    details={"from_user_id": str(offer.from_user_id)},
                ),
                now,
            )

    @staticmethod
    def _offer(repo: OrganizationRepository, organization_id: uuid.UUID) -> OwnershipOffer:
        offer = repo.offer(organization_id)
        if offer is None:
            raise NotFoundError("OWNERSHIP_TRANSFER_NOT_FOUND", "no ownership transfer is pending")
        return offer

    def _target_of_offer(
        self, repo: OrganizationRepository, principal: Principal, ref: OrganizationRef
    ) -> tuple[Organization, Membership, OwnershipOffer]:
        """The organization (locked), the caller's membership and the offer made to them."""
        organization = repo.find(ref.organization_id, ref.slug, lock=True)
        if organization is None:
            raise org_not_found()
        caller = repo.membership(organization.id, principal.user_id)
        offer = repo.offer(organization.id)
        if caller is None:
            # Someone removed since the offer was made to them may learn why it cannot be
            # accepted; anyone else learns nothing, not even that the organization exists.
            if offer is not None and offer.to_user_id == principal.user_id:
                raise FailedPreconditionError(
                    "TARGET_NOT_MEMBER", "you are no longer a member of the organization"
                )
            raise org_not_found()
        if offer is None:
            raise NotFoundError("OWNERSHIP_TRANSFER_NOT_FOUND", "no ownership transfer is pending")
        if offer.to_user_id != principal.user_id:
            raise denied("the ownership transfer is offered to another member")
        return organization, caller, offer


def _member_event(action: str, membership: Membership, **details: str | bool) -> Event:
    """A membership event: the organization's, and the account's of the member concerned."""
    return Event(
        action,
        membership.user_id,
        membership.organization_id,
        target_type="membership",
        target_id=str(membership.user_id),
        details=details,
    )


def _transfer_row(offer: OwnershipOffer, email: str) -> TransferRow:
    return TransferRow(
        offer.organization_id,
        offer.from_user_id,
        offer.to_user_id,
        email,
        offer.create_time,
        offer.expire_time,
    )


def page_of(rows: list[T], page_size: int, key: Callable[[T], PageKey]) -> Page[T]:
    """`rows` holds up to page_size + 1 items; the extra one only says another page exists."""
    if len(rows) > page_size:
        items = rows[:page_size]
        return Page(items, key(items[-1]))
    return Page(rows, None)
