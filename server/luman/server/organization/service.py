"""Organization rules: membership checks first (non-members learn nothing), then RBAC.

owner   everything, including granting and removing ownership
admin   add, remove and re-role admins and members; never touch an owner nor grant owner
member  read only
anyone  may remove themselves, except the last owner
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import Connection

from luman.interceptors.errors import FailedPreconditionError, NotFoundError, PermissionDeniedError
from luman.interceptors.principal import Principal
from luman.server.clock import Clock
from luman.server.db.models import Membership, Organization, Role
from luman.server.db.session import Sessions
from luman.server.organization import repository
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


def _org_not_found() -> NotFoundError:
    return NotFoundError("ORGANIZATION_NOT_FOUND", "organization not found")


def _denied(message: str) -> PermissionDeniedError:
    return PermissionDeniedError("PERMISSION_DENIED", message)


class OrganizationService:
    def __init__(self, sessions: Sessions, clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def create(self, principal: Principal, name: str, slug: str) -> OrganizationRow:
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session)
            organization = repo.add_organization(
                Organization(id=uuid.uuid4(), name=name, slug=slug, create_time=now)
            )
            repo.add_membership(organization.id, principal.user_id, Role.OWNER, now)
            membership = repo.membership(organization.id, principal.user_id)
            assert membership is not None
            return OrganizationRow.of(membership)

    # Reads: plain Core rows on a connection (see repository.py), no ORM session, and no
    # transaction: each read is one statement (ListMembers asks a second one only on an empty
    # page, to tell a non-member from the end of the list).

    def list_for(
        self, principal: Principal, after: PageKey | None, page_size: int
    ) -> Page[OrganizationRow]:
        with self._sessions.statements.connect() as conn:
            rows = repository.organizations_of(conn, principal.user_id, after, page_size + 1)
        return _page(rows, page_size, lambda row: (row.join_time, uuid.UUID(row.id)))

    def get(self, principal: Principal, ref: OrganizationRef) -> OrganizationRow:
        with self._sessions.statements.connect() as conn:
            return self._caller_organization(conn, principal, ref)

    def list_members(
        self, principal: Principal, ref: OrganizationRef, after: PageKey | None, page_size: int
    ) -> Page[MemberRow]:
        with self._sessions.statements.connect() as conn:
            # The page's statement lists members only to a member; no rows means a non-member
            # or a page past the last member, and only then is the membership asked for alone.
            rows = repository.members_seen_by(
                conn, principal.user_id, ref.organization_id, ref.slug, after, page_size + 1
            )
            if not rows:
                self._caller_organization(conn, principal, ref)
        return _page(rows, page_size, lambda row: (row.join_time, uuid.UUID(row.user_id)))

    def add_member(
        self, principal: Principal, ref: OrganizationRef, target: UserRef, role: Role
    ) -> MemberRow:
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session)
            organization, caller = self._caller_membership(repo, principal, ref, lock=True)
            if caller.role is Role.MEMBER:
                raise _denied("members cannot add members")
            if role is Role.OWNER and caller.role is not Role.OWNER:
                raise _denied("only owners can grant the owner role")
            user = repo.user(target.user_id, target.email)
            if user is None:
                raise NotFoundError("USER_NOT_FOUND", "user not found")
            repo.add_membership(organization.id, user.id, role, self._clock())
            membership = repo.membership(organization.id, user.id)
            assert membership is not None
            return MemberRow.of(membership)

    def remove_member(self, principal: Principal, ref: OrganizationRef, user_id: uuid.UUID) -> None:
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session)
            organization, caller = self._caller_membership(repo, principal, ref, lock=True)
            leaving = user_id == principal.user_id
            if not leaving and caller.role is Role.MEMBER:
                raise _denied("members can only remove themselves")
            target = caller if leaving else self._target(repo, organization.id, user_id)
            if not leaving and target.role is Role.OWNER and caller.role is not Role.OWNER:
                raise _denied("only owners can remove an owner")
            if target.role is Role.OWNER:
                self._keep_an_owner(repo, organization.id)
            repo.delete_membership(target)

    def update_role(
        self, principal: Principal, ref: OrganizationRef, user_id: uuid.UUID, role: Role
    ) -> MemberRow:
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session)
            organization, caller = self._caller_membership(repo, principal, ref, lock=True)
            if caller.role is Role.MEMBER:
                raise _denied("members cannot change roles")
            target = self._target(repo, organization.id, user_id)
            if caller.role is not Role.OWNER and (target.role is Role.OWNER or role is Role.OWNER):
                raise _denied("only owners can grant or take away the owner role")
            if target.role is Role.OWNER and role is not Role.OWNER:
                self._keep_an_owner(repo, organization.id)
            target.role = role
            session.flush()
            return MemberRow.of(target)

    @staticmethod
    def _caller_organization(
        conn: Connection, principal: Principal, ref: OrganizationRef
    ) -> OrganizationRow:
        row = repository.caller_organization(conn, principal.user_id, ref.organization_id, ref.slug)
        # A non-member learns nothing, not even that the organization exists.
        if row is None:
            raise _org_not_found()
        return row

    @staticmethod
    def _caller_membership(
        repo: OrganizationRepository,
        principal: Principal,
        ref: OrganizationRef,
        *,
        lock: bool = False,
    ) -> tuple[Organization, Membership]:
        organization = repo.find(ref.organization_id, ref.slug, lock=lock)
        # A non-member learns nothing, not even that the organization exists.
        caller = repo.membership(organization.id, principal.user_id) if organization else None
        if organization is None or caller is None:
            raise _org_not_found()
        return organization, caller

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


def _page(rows: list[T], page_size: int, key: Callable[[T], PageKey]) -> Page[T]:
    """`rows` holds up to page_size + 1 items; the extra one only says another page exists."""
    if len(rows) > page_size:
        items = rows[:page_size]
        return Page(items, key(items[-1]))
    return Page(rows, None)
