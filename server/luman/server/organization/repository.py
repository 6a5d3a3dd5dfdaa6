"""Queries for organizations and memberships. Never commits."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager

from luman.server.db.integrity import violates
from luman.server.db.models import Membership, Organization, Role, User
from luman.server.errors import AlreadyExistsError

PageKey = tuple[dt.datetime, uuid.UUID]


class OrganizationRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add_organization(self, organization: Organization) -> Organization:
        self._session.add(organization)
        try:
            self._session.flush()
        except IntegrityError as exc:
            if violates(exc, "uq_organizations_slug"):
                raise AlreadyExistsError(
                    "SLUG_TAKEN", "an organization with this slug already exists"
                ) from None
            raise
        return organization

    def find(
        self, organization_id: uuid.UUID | None, slug: str | None, *, lock: bool = False
    ) -> Organization | None:
        """Find by id or slug. `lock` takes a row lock (PostgreSQL) so that membership changes
        to one organization are serialized, which keeps the last-owner rule race-free."""
        stmt = select(Organization)
        stmt = (
            stmt.where(Organization.id == organization_id)
            if organization_id
            else stmt.where(Organization.slug == slug)
        )
        if lock:
            stmt = stmt.with_for_update()
        return self._session.scalars(stmt).one_or_none()

    def membership(self, organization_id: uuid.UUID, user_id: uuid.UUID) -> Membership | None:
        """The membership with its user and organization loaded."""
        return self._session.scalars(
            select(Membership)
            .join(Membership.user)
            .join(Membership.organization)
            .options(contains_eager(Membership.user), contains_eager(Membership.organization))
            .where(Membership.organization_id == organization_id, Membership.user_id == user_id)
        ).one_or_none()

    def add_membership(
        self, organization_id: uuid.UUID, user_id: uuid.UUID, role: Role, now: dt.datetime
    ) -> None:
        """Insert the membership; the primary key decides whether it already exists.

        A Core INSERT rather than session.add(): the caller's own membership is already in the
        session, and adding a second object with its identity would be an ORM conflict instead
        of the database's answer.
        """
        try:
            self._session.execute(
                insert(Membership).values(
                    organization_id=organization_id, user_id=user_id, role=role, create_time=now
                )
            )
        except IntegrityError as exc:
            if violates(exc, "pk_memberships"):
                raise AlreadyExistsError("ALREADY_MEMBER", "the user is already a member") from None
            raise

    def delete_membership(self, membership: Membership) -> None:
        self._session.delete(membership)
        self._session.flush()

    def count_owners(self, organization_id: uuid.UUID) -> int:
        return (
            self._session.scalar(
                select(func.count())
                .select_from(Membership)
                .where(Membership.organization_id == organization_id, Membership.role == Role.OWNER)
            )
            or 0
        )

    def user(self, user_id: uuid.UUID | None, email: str | None) -> User | None:
        stmt = (
            select(User).where(User.id == user_id)
            if user_id
            else select(User).where(User.email == email)
        )
        return self._session.scalars(stmt).one_or_none()

    def organizations_of(
        self, user_id: uuid.UUID, after: PageKey | None, limit: int
    ) -> list[Membership]:
        """The user's memberships with their organizations, oldest membership first."""
        stmt = (
            select(Membership)
            .join(Membership.organization)
            .options(contains_eager(Membership.organization))
            .where(Membership.user_id == user_id)
        )
        if after is not None:
            stmt = stmt.where(
                or_(
                    Membership.create_time > after[0],
                    and_(Membership.create_time == after[0], Membership.organization_id > after[1]),
                )
            )
        stmt = stmt.order_by(Membership.create_time, Membership.organization_id).limit(limit)
        return list(self._session.scalars(stmt))

    def members(
        self, organization_id: uuid.UUID, after: PageKey | None, limit: int
    ) -> list[Membership]:
        """Members with their users, earliest joined first."""
        stmt = (
            select(Membership)
            .join(Membership.user)
            .options(contains_eager(Membership.user))
            .where(Membership.organization_id == organization_id)
        )
        if after is not None:
            stmt = stmt.where(
                or_(
                    Membership.create_time > after[0],
                    and_(Membership.create_time == after[0], Membership.user_id > after[1]),
                )
            )
        stmt = stmt.order_by(Membership.create_time, Membership.user_id).limit(limit)
        return list(self._session.scalars(stmt))
