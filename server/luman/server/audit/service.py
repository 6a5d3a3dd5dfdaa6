"""Audit log reads (ListAuditEvents): who may read what.

- Without an organization: the caller's own account's events (user_id == the caller), whoever
  made them; nobody else's.
- With an organization: its owners and admins read its events; a member who is neither gets
  PERMISSION_DENIED; a non-member NOT_FOUND, as every organization RPC answers, so that an
  outsider learns nothing (the same lookup as GetOrganization: organization/repository.py).
- A service account is refused by the token layer (the RPC is not `service_accounts: true`),
  and again here by `principal.user_id` (USER_REQUIRED).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import Connection

from luman.interceptors.errors import NotFoundError, PermissionDeniedError
from luman.interceptors.principal import Principal
from luman.server.audit.repository import AuditFilter, AuditRepository, PageKey
from luman.server.clock import Clock
from luman.server.db.models import AuditEvent, Role
from luman.server.db.session import Sessions
from luman.server.organization import repository as organizations
from luman.server.organization.service import OrganizationRef

# The roles that read an organization's audit log.
READERS = frozenset({Role.OWNER, Role.ADMIN})


@dataclasses.dataclass(frozen=True)
class AuditPage:
    items: list[AuditEvent]
    next_key: PageKey | None


class AuditService:
    def __init__(self, sessions: Sessions, clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def list(
        self,
        principal: Principal,
        organization: OrganizationRef | None,
        where: AuditFilter,
        before: PageKey | None,
        page_size: int,
    ) -> AuditPage:
        """`where`'s user_id and organization_id are ignored: they follow from the caller and
        `organization`.

        Raises:
            NotFoundError: ORGANIZATION_NOT_FOUND (no such organization, or not a member).
            PermissionDeniedError: PERMISSION_DENIED, a member who is neither owner nor admin.
        """
        user_id = principal.user_id  # refuses a service account (USER_REQUIRED)
        with self._sessions.read.begin() as session:
            if organization is None:
                where = dataclasses.replace(where, user_id=user_id, organization_id=None)
            else:
                where = dataclasses.replace(
                    where,
                    user_id=None,
                    organization_id=self._readable(
                        session.connection(), user_id, organization, self._clock()
                    ),
                )
            rows = AuditRepository(session).page(where, before, page_size + 1)
            if organization is None:
                for row in rows:
                    _hide_other_actors_client(row, user_id)
                session.expunge_all()  # the blanked fields are for this answer, never stored
        if len(rows) > page_size:
            rows = rows[:page_size]
            return AuditPage(rows, (rows[-1].time, rows[-1].id))
        return AuditPage(rows, None)

    @staticmethod
    def _readable(
        conn: Connection, user_id: uuid.UUID, ref: OrganizationRef, now: dt.datetime
    ) -> uuid.UUID:
        # A former slug that still redirects works here as in every slug-taking RPC.
        row = organizations.caller_organization_redirected(
            conn, user_id, ref.organization_id, ref.slug, now
        )
        # A non-member learns nothing, not even that the organization exists.
        if row is None:
            raise NotFoundError("ORGANIZATION_NOT_FOUND", "organization not found")
        if row.caller_role not in READERS:
            raise PermissionDeniedError(
                "PERMISSION_DENIED", "only owners and admins read an organization's audit log"
            )
        return uuid.UUID(row.id)


def _hide_other_actors_client(row: AuditEvent, reader: uuid.UUID) -> None:
    """In a person's own log, an event someone else caused (an admin adding or removing them)
    keeps who did it, but not that person's address, user agent or request id: those are the
    other person's data, which their organization's owners see in its log. Anonymous events
    (a failed sign-in on the account) keep theirs: they are what the reader needs to know."""
    if row.actor_type == "anonymous" or row.actor_id == reader:
        return
    row.client_ip = row.user_agent = row.request_id = ""
