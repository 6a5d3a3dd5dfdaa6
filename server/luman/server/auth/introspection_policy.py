"""Who may introspect: a deployment-level trust, set by the operator (INTROSPECTION_ORGANIZATIONS).

IntrospectToken answers "is this token good, and whose is it?" for every token of every
organization, so whoever can call it holds a validity oracle for stolen tokens (RFC 7662 §4:
the server limits who may introspect). An organization's owner is any registered user, so the
`introspect` scope cannot be theirs to hand out: only service accounts of the organizations the
operator lists may hold it. The list is checked twice:

- when a service account with `introspect` is created (PERMISSION_DENIED,
  INTROSPECTION_NOT_ALLOWED elsewhere), so nobody gets a credential that could never work;
- on every IntrospectToken call, against the caller's organization as it is now, because the
  operator may take an organization off the list (and restart) after its accounts exist, and
  a listed slug may be renamed away.
"""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, select

from luman.interceptors.errors import PermissionDeniedError
from luman.server.db.models import Organization
from luman.server.db.session import Sessions

INTROSPECT_SCOPE = "introspect"
# Every organization: only for a deployment whose organizations are all the operator's own.
EVERY_ORGANIZATION = "*"  # as config.py reads it
_orgs = Organization.__table__.c
_SLUG_BY_ID = select(_orgs.slug).where(_orgs.id == bindparam("organization_id"))


def not_allowed() -> PermissionDeniedError:
    return PermissionDeniedError(
        "INTROSPECTION_NOT_ALLOWED",
        "this organization's service accounts may not introspect (INTROSPECTION_ORGANIZATIONS)",
    )


class IntrospectionPolicy:
    """Args:
    organizations: slugs and ids (str(UUID)) from INTROSPECTION_ORGANIZATIONS, or {'*'}.
    """

    def __init__(self, sessions: Sessions, organizations: frozenset[str]) -> None:
        self._sessions = sessions
        self._organizations = organizations

    def allows(self, organization_id: uuid.UUID, slug: str) -> bool:
        listed = self._organizations
        return EVERY_ORGANIZATION in listed or slug in listed or str(organization_id) in listed

    def check_create(self, organization: Organization, scopes: frozenset[str]) -> None:
        """Raises PermissionDeniedError (INTROSPECTION_NOT_ALLOWED) for `introspect` outside
        the list; the caller has already shown it manages the organization."""
        if INTROSPECT_SCOPE in scopes and not self.allows(organization.id, organization.slug):
            raise not_allowed()

    def check_caller(self, organization_id: uuid.UUID | None) -> None:
        """The calling service account's organization, at call time.

        Raises:
            PermissionDeniedError: INTROSPECTION_NOT_ALLOWED.
        """
        if organization_id is None or not self._organizations:
            raise not_allowed()
        if EVERY_ORGANIZATION in self._organizations or str(organization_id) in self._organizations:
            return
        # Listed by slug: the slug it has now (one indexed read).
        with self._sessions.engine.connect() as conn:
            slug = conn.execute(_SLUG_BY_ID, {"organization_id": organization_id}).scalar()
        if slug is None or not self.allows(organization_id, slug):
            raise not_allowed()
