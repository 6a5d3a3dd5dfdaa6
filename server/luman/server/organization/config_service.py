"""Shared organization configuration: one versioned JSON document per organization.

member          read
owner, admin    read and replace
non-member      NOT_FOUND, as for every organization RPC: nothing is revealed

Optimistic concurrency (AIP-154): each write adds 1 to `version`, and the etag is
W/"<version>" (W/"0" for a configuration never written). A write that names an etag is
refused with ABORTED, reason ETAG_MISMATCH, unless it is the current one; the ErrorInfo
metadata "etag" carries the current etag. A write without an etag replaces whatever is there.

A write locks the organization's row first, as membership changes do (organization/
service.py), so writes to one organization are serialized on PostgreSQL (SQLite's write
transactions are serialized anyway); the compare-and-set statements of config_repository.py
make the version check hold even without that lock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from luman.interceptors.errors import AbortedError, PermissionDeniedError
from luman.interceptors.principal import Principal
from luman.server.audit.record import Event, record
from luman.server.clock import Clock
from luman.server.db.models import Role
from luman.server.db.session import Sessions
from luman.server.organization import config_repository, repository
from luman.server.organization.config_repository import ConfigRow
from luman.server.organization.repository import OrganizationRepository
from luman.server.organization.service import OrganizationRef, org_not_found

EMPTY_DOCUMENT = "{}"
AUDIT_ACTION = "organization.config_updated"


def etag_of(version: int) -> str:
    """The etag of a version: W/"<version>". Weak, as the JSON a client sees is an encoding
    of the stored document rather than its bytes."""
    return f'W/"{version}"'


@dataclasses.dataclass(frozen=True)
class OrganizationConfigView:
    """A configuration as the API shows it; version 0 and no writer when never written."""

    organization_id: uuid.UUID
    document: str  # canonical JSON of an object
    version: int
    update_time: dt.datetime | None
    updated_by: uuid.UUID | None

    @property
    def etag(self) -> str:
        return etag_of(self.version)

    @classmethod
    def of(cls, organization_id: uuid.UUID, row: ConfigRow | None) -> OrganizationConfigView:
        if row is None:
            return cls(organization_id, EMPTY_DOCUMENT, 0, None, None)
        return cls(organization_id, row.document, row.version, row.update_time, row.updated_by)


class OrganizationConfigService:
    def __init__(self, sessions: Sessions, clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def get(self, principal: Principal, ref: OrganizationRef) -> OrganizationConfigView:
        with self._sessions.statements.connect() as conn:
            # A former slug that still redirects works here as in every slug-taking RPC.
            organization = repository.caller_organization_redirected(
                conn, principal.user_id, ref.organization_id, ref.slug, self._clock()
            )
            # A non-member learns nothing, not even that the organization exists.
            if organization is None:
                raise org_not_found()
            organization_id = uuid.UUID(organization.id)
            return OrganizationConfigView.of(
                organization_id, config_repository.current(conn, organization_id)
            )

    def update(
        self, principal: Principal, ref: OrganizationRef, document: str, etag: str
    ) -> OrganizationConfigView:
        """Replace the document (canonical JSON, already checked) if `etag` is empty or the
        current one.

        Raises:
            NotFoundError: no such organization, or the caller is not a member.
            PermissionDeniedError: the caller is a member, not an owner or admin.
            AbortedError: ETAG_MISMATCH, with the current etag in the metadata.
        """
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, self._clock())
            organization = repo.find(ref.organization_id, ref.slug, lock=True)
            caller = repo.membership(organization.id, principal.user_id) if organization else None
            if organization is None or caller is None:
                raise org_not_found()
            if caller.role is Role.MEMBER:
                raise PermissionDeniedError(
                    "PERMISSION_DENIED", "only owners and admins can change the configuration"
                )
            stored = config_repository.current(session, organization.id)
            version = stored.version if stored is not None else 0
            if etag and etag != etag_of(version):
                raise _mismatch(version)
            now = self._clock()
            new = ConfigRow(document, version + 1, now, principal.user_id)
            if stored is None:
                written = config_repository.insert_first(session, organization.id, new)
            else:
                written = config_repository.replace_if_version(
                    session, organization.id, version, new
                )
            if not written:
                # Another write committed since the read above (only without the row lock).
                latest = config_repository.current(session, organization.id)
                raise _mismatch(latest.version if latest is not None else 0)
            record(
                session,
                Event(
                    AUDIT_ACTION,
                    organization_id=organization.id,
                    target_type="organization_config",
                    target_id=str(organization.id),
                    details={"version": new.version, "bytes": len(document.encode())},
                ),
                now,
            )
            return OrganizationConfigView.of(organization.id, new)


def _mismatch(version: int) -> AbortedError:
    current = etag_of(version)
    return AbortedError(
        "ETAG_MISMATCH",
        f"the configuration changed: its current etag is {current}; read it again",
        {"etag": current},
    )
