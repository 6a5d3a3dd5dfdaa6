"""Organization model <-> proto, and parsing of the request selectors."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence

from luman.organization.v1 import organization_pb2
from luman.server.convert import write_timestamp, write_timestamp_us
from luman.server.db.models import Role
from luman.server.organization.repository import MemberRow, OrganizationRow, PageKey
from luman.server.organization.service import OrganizationRef, TransferRow, UserRef
from luman.server.pagination import decode_page_token, encode_page_token
from luman.server.validation import Violations, check_email, check_slug, check_uuid

_ROLE_TO_PROTO = {
    Role.OWNER: organization_pb2.ORGANIZATION_ROLE_OWNER,
    Role.ADMIN: organization_pb2.ORGANIZATION_ROLE_ADMIN,
    Role.MEMBER: organization_pb2.ORGANIZATION_ROLE_MEMBER,
}
_ROLE_FROM_PROTO = {v: k for k, v in _ROLE_TO_PROTO.items()}
# By stored value, as MemberRow carries the role (a str key also hashes in C, a Role in Python).
_ROLE_VALUE_TO_PROTO = {k.value: v for k, v in _ROLE_TO_PROTO.items()}


def role_from_proto(
    v: Violations, field: str, value: organization_pb2.OrganizationRole.ValueType
) -> Role:
    role = _ROLE_FROM_PROTO.get(value)
    if role is None:
        v.add(field, "must be OWNER, ADMIN or MEMBER")
        return Role.MEMBER
    return role


def organization_ref(
    v: Violations, which: str | None, organization_id: str, slug: str
) -> OrganizationRef:
    """Parse the `organization` oneof (organization_id or slug)."""
    if which == "organization_id":
        return OrganizationRef(organization_id=check_uuid(v, "organization_id", organization_id))
    if which == "slug":
        return OrganizationRef(slug=check_slug(v, "slug", slug))
    v.add("organization", "organization_id or slug is required")
    return OrganizationRef()


def user_ref(v: Violations, which: str | None, user_id: str, email: str) -> UserRef:
    """Parse the `user` oneof (user_id or email)."""
    if which == "user_id":
        return UserRef(user_id=check_uuid(v, "user_id", user_id))
    if which == "email":
        return UserRef(email=check_email(v, "email", email))
    v.add("user", "user_id or email is required")
    return UserRef()


def page_token(key: PageKey | None, scope: str) -> str:
    return "" if key is None else encode_page_token(scope, [key[0].isoformat(), str(key[1])])


def page_key(v: Violations, token: str, scope: str) -> PageKey | None:
    parts = decode_page_token(v, token, scope, 2)
    if parts is None:
        return None
    try:
        after = dt.datetime.fromisoformat(parts[0])
        # Our tokens always carry UTC; a naive or out-of-range time can only be forged, and
        # would otherwise fail deep in the database layer as an INTERNAL error.
        if after.tzinfo is None:
            raise ValueError("naive time")
        return after.astimezone(dt.UTC), uuid.UUID(parts[1])
    except (ValueError, OverflowError):
        v.add("page_token", "is not a page token from this listing")
        return None


def organization_to_proto(
    row: OrganizationRow,
    make: Callable[..., organization_pb2.Organization] = organization_pb2.Organization,
) -> organization_pb2.Organization:
    """The organization, with the caller's role as caller_role.

    `make` builds the message: the constructor, or a response's `organizations.add` to build
    it in place rather than copy it into the response afterwards (see member_to_proto).
    """
    organization = make(
        id=row.id,
        name=row.name,
        slug=row.slug,
        caller_role=_ROLE_TO_PROTO[row.caller_role],
    )
    write_timestamp(organization.create_time, row.create_time)
    return organization


def member_to_proto(
    row: MemberRow, make: Callable[..., organization_pb2.Member] = organization_pb2.Member
) -> organization_pb2.Member:
    """The member.

    `make` builds the message: the constructor, or a response's `members.add` to build it in
    place. In place, with the time written into the message's own Timestamp, 50 members take
    149 against 239 µs built apart and copied into the response.
    """
    member = make(
        user_id=row.user_id,
        email=row.email,
        name=row.name,
        role=_ROLE_VALUE_TO_PROTO[row.role],
    )
    write_timestamp_us(member.join_time, row.join_time_us)
    return member


# AIP-134: the fields UpdateOrganization may change; any other update_mask path is refused.
UPDATABLE_PATHS = ("name", "slug")


def update_paths(
    v: Violations, paths: Sequence[str], organization: organization_pb2.Organization
) -> frozenset[str]:
    """The update_mask's paths, each on the allowlist (AIP-134, as UpdateMe): an empty mask
    means the fields that are set, "*" every updatable one."""
    if not paths:
        paths = [p for p in UPDATABLE_PATHS if getattr(organization, p)]
        if not paths:
            v.add("update_mask", f"names nothing to update: {', '.join(UPDATABLE_PATHS)}")
    elif list(paths) == ["*"]:
        paths = UPDATABLE_PATHS
    unknown = [p for p in paths if p not in UPDATABLE_PATHS]
    if unknown:
        v.add(
            "update_mask",
            f"unknown path {unknown[0]!r}; allowed: {', '.join(UPDATABLE_PATHS)}",
        )
    return frozenset(paths)


def transfer_to_proto(row: TransferRow) -> organization_pb2.OwnershipTransfer:
    transfer = organization_pb2.OwnershipTransfer(
        organization_id=str(row.organization_id),
        from_user_id=str(row.from_user_id),
        to_user_id=str(row.to_user_id),
        to_email=row.to_email,
    )
    write_timestamp(transfer.create_time, row.create_time)
    write_timestamp(transfer.expire_time, row.expire_time)
    return transfer
