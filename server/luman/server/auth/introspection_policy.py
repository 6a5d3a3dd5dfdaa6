"""Who may introspect: a deployment-level trust, set by the operator (INTROSPECTION_ORGANIZATIONS).

IntrospectToken answers "is this token good, and whose is it?" for every token of every
organization, so whoever can call it holds a validity oracle for stolen tokens (RFC 7662 §4:
the server limits who may introspect). An organization's owner is any registered user, so the
`introspect` scope cannot be theirs to hand out: only service accounts of the organizations the
operator lists may hold it. The list is checked twice:

- when a service account with `introspect` is created (PERMISSION_DENIED,
  INTROSPECTION_NOT_ALLOWED elsewhere), so nobody gets a credential that could never work;
- on every IntrospectToken call, because the operator may take an organization off the list
  (and restart) after its accounts exist.

The list holds organization ids, never slugs: a slug is whatever its creator typed, so anyone
could claim a listed slug that does not exist yet, or make an organization whose slug is a
listed organization's id (a UUID is a valid slug), and introspect.
"""

from __future__ import annotations

import uuid

from luman.interceptors.errors import PermissionDeniedError
from luman.server.db.models import Organization

INTROSPECT_SCOPE = "introspect"
# Every organization: only for a deployment whose organizations are all the operator's own.
EVERY_ORGANIZATION = "*"  # as config.py reads it


def not_allowed() -> PermissionDeniedError:
    return PermissionDeniedError(
        "INTROSPECTION_NOT_ALLOWED",
        "this organization's service accounts may not introspect (INTROSPECTION_ORGANIZATIONS)",
    )


class IntrospectionPolicy:
    """Args:
    organizations: ids (str(UUID)) from INTROSPECTION_ORGANIZATIONS, or {'*'}.
    """

    def __init__(self, organizations: frozenset[str]) -> None:
        self._organizations = organizations

    def allows(self, organization_id: uuid.UUID | None) -> bool:
        listed = self._organizations
        return organization_id is not None and (
            EVERY_ORGANIZATION in listed or str(organization_id) in listed
        )

    def check_create(self, organization: Organization, scopes: frozenset[str]) -> None:
        """Raises PermissionDeniedError (INTROSPECTION_NOT_ALLOWED) for `introspect` outside
        the list; the caller has already shown it manages the organization."""
        if INTROSPECT_SCOPE in scopes and not self.allows(organization.id):
            raise not_allowed()

    def check_caller(self, organization_id: uuid.UUID | None) -> None:
        """The calling service account's organization, at call time.

        Raises:
            PermissionDeniedError: INTROSPECTION_NOT_ALLOWED.
        """
        if not self.allows(organization_id):
            raise not_allowed()
