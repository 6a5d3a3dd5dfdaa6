"""Races through the real server: many simultaneous calls, one winner, no INTERNAL.

Threads wait on a barrier so the calls really overlap. SQLite serializes writers with
BEGIN IMMEDIATE and a busy timeout; PostgreSQL relies on unique constraints and, for
membership changes, a row lock on the organization.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_pb2, organization_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2 as pb
from luman.server.db.models import (
    AuditEvent,
    Membership,
    Organization,
    OrganizationSlugRedirect,
    Role,
    User,
)
from luman.server.db.session import Sessions
from tests.server.organization_support import (
    ADMIN,
    MEMBER,
    OWNER,
    add_member,
    create_organization,
    roles_by_user,
    sign_up,
)
from tests.server.race_support import OK, PAIRS, race, tally
from tests.support import PASSWORD, bearer, register, unique_email

Auth = auth_service_pb2_grpc.AuthServiceStub
Orgs = organization_service_pb2_grpc.OrganizationServiceStub
N = 50


def _count(sessions: Sessions, statement: sa.Select[Any]) -> int:
    with sessions.read() as session:
        return int(
            session.scalar(sa.select(sa.func.count()).select_from(statement.subquery())) or 0
        )


def test_simultaneous_registrations_of_one_email_make_one_user(
    auth: Auth, sessions: Sessions
) -> None:
    email = unique_email()
    # Spellings that normalize to the same address race as well.
    spellings = [email, email.upper(), f"  {email} "]
    results = race([lambda i=i: register(auth, email=spellings[i % 3]) for i in range(N)])  # type: ignore[misc]
    assert tally(results) == {OK: 1, ("ALREADY_EXISTS", "EMAIL_TAKEN"): N - 1}
    assert _count(sessions, sa.select(User).where(User.email == email)) == 1
    auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))


def test_simultaneous_registrations_of_different_emails_all_succeed(
    auth: Auth, sessions: Sessions
) -> None:
    # Writers queue behind each other on SQLite instead of failing with "database is locked".
    results = race([lambda: register(auth) for _ in range(N)])
    assert tally(results) == {OK: N}
    assert _count(sessions, sa.select(User)) == N


def test_simultaneous_creations_of_one_slug_make_one_organization(
    auth: Auth, orgs: Orgs, sessions: Sessions
) -> None:
    creators = [sign_up(auth) for _ in range(5)]
    results = race(
        [lambda i=i: create_organization(orgs, creators[i % 5], slug="contested") for i in range(N)]  # type: ignore[misc]
    )
    assert tally(results) == {OK: 1, ("ALREADY_EXISTS", "SLUG_TAKEN"): N - 1}
    assert _count(sessions, sa.select(Organization).where(Organization.slug == "contested")) == 1
    # Exactly one creator ended up owning it, and nobody got a dangling membership.
    assert _count(sessions, sa.select(Membership)) == 1


def test_simultaneous_adds_of_one_member_make_one_membership(
    auth: Auth, orgs: Orgs, sessions: Sessions
) -> None:
    owner, newcomer = sign_up(auth), sign_up(auth)
    organization = create_organization(orgs, owner)
    results = race(
        [lambda: add_member(orgs, owner, organization, newcomer, MEMBER) for _ in range(N)]
    )
    assert tally(results) == {OK: 1, ("ALREADY_EXISTS", "ALREADY_MEMBER"): N - 1}
    assert roles_by_user(orgs, owner, organization) == {owner.id: OWNER, newcomer.id: MEMBER}


def _owner_pairs(auth: Auth, orgs: Orgs) -> list[tuple[Any, Any, Any]]:
    pairs = []
    for _ in range(PAIRS):
        first, second = sign_up(auth), sign_up(auth)
        organization = create_organization(orgs, first)
        add_member(orgs, first, organization, second, OWNER)
        pairs.append((organization, first, second))
    return pairs


def _owners(sessions: Sessions, organization_id: str) -> int:
    return _count(
        sessions,
        sa.select(Membership).where(
            Membership.organization_id == uuid.UUID(organization_id), Membership.role == Role.OWNER
        ),
    )


@pytest.mark.parametrize("round_", range(3))
def test_two_owners_demoting_each_other_never_leave_zero_owners(
    auth: Auth, orgs: Orgs, sessions: Sessions, round_: int
) -> None:
    pairs = _owner_pairs(auth, orgs)

    def demote(organization: Any, caller: Any, target: Any) -> Callable[[], Any]:
        request = pb.UpdateMemberRoleRequest(
            organization_id=organization.id, user_id=target.id, role=MEMBER
        )
        return lambda: orgs.UpdateMemberRole(request, metadata=caller.metadata)

    calls = [demote(o, a, b) for o, a, b in pairs] + [demote(o, b, a) for o, a, b in pairs]
    results = race(calls)
    for index, (organization, _, _) in enumerate(pairs):
        outcomes = [results[index], results[index + PAIRS]]
        # One wins. The other finds itself already demoted (a member: read only) or, had it
        # read before the winner committed, would remove the last owner; both are refusals.
        assert outcomes.count(OK) == 1, outcomes
        (loser,) = [r for r in outcomes if r != OK]
        assert loser in {
            ("PERMISSION_DENIED", "PERMISSION_DENIED"),
            ("FAILED_PRECONDITION", "LAST_OWNER"),
        }
        assert _owners(sessions, organization.id) == 1


def test_two_owners_leaving_at_once_never_leave_zero_owners(
    auth: Auth, orgs: Orgs, sessions: Sessions
) -> None:
    pairs = _owner_pairs(auth, orgs)

    def leave(organization: Any, account: Any) -> Callable[[], Any]:
        request = pb.RemoveMemberRequest(organization_id=organization.id, user_id=account.id)
        return lambda: orgs.RemoveMember(request, metadata=account.metadata)

    results = race([leave(o, a) for o, a, _ in pairs] + [leave(o, b) for o, _, b in pairs])
    for index, (organization, _, _) in enumerate(pairs):
        outcomes = sorted([results[index], results[index + PAIRS]])
        assert outcomes == [("FAILED_PRECONDITION", "LAST_OWNER"), OK]
        assert _owners(sessions, organization.id) == 1


def test_simultaneous_refreshes_with_one_token_all_get_the_one_new_pair(auth: Auth) -> None:
    tokens = register(auth).tokens
    request = auth_service_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token)
    pairs: list[Any] = []
    results = race([lambda: pairs.append(auth.RefreshToken(request).tokens) for _ in range(N)])
    # One rotates the token; the others, within REFRESH_REUSE_GRACE_SECONDS, get the same pair
    # (tests/server/test_refresh_grace.py) instead of revoking the sign-in.
    assert tally(results) == {OK: N}
    assert len({(p.access_token, p.refresh_token) for p in pairs}) == 1
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(pairs[0].access_token))


# --- Ownership transfer, rename and delete ----------------------------------------------------


def _transfer_setups(auth: Auth, orgs: Orgs) -> list[tuple[Any, Any, Any, Any]]:
    """PAIRS organizations, each with two owners and a member the first owner offers
    ownership to: (organization, offerer, other owner, target)."""
    setups = []
    for _ in range(PAIRS):
        offerer, other, target = sign_up(auth), sign_up(auth), sign_up(auth)
        organization = create_organization(orgs, offerer)
        add_member(orgs, offerer, organization, other, OWNER)
        add_member(orgs, offerer, organization, target, MEMBER)
        orgs.OfferOwnershipTransfer(
            pb.OfferOwnershipTransferRequest(organization_id=organization.id, user_id=target.id),
            metadata=offerer.metadata,
        )
        setups.append((organization, offerer, other, target))
    return setups


@pytest.mark.parametrize("round_", range(2))
def test_accepting_a_transfer_while_the_offerer_is_demoted(
    auth: Auth, orgs: Orgs, sessions: Sessions, round_: int
) -> None:
    setups = _transfer_setups(auth, orgs)

    def accept(organization: Any, target: Any) -> Callable[[], Any]:
        request = pb.AcceptOwnershipTransferRequest(slug=organization.slug)
        return lambda: orgs.AcceptOwnershipTransfer(request, metadata=target.metadata)

    def demote(organization: Any, caller: Any, offerer: Any) -> Callable[[], Any]:
        request = pb.UpdateMemberRoleRequest(
            organization_id=organization.id, user_id=offerer.id, role=MEMBER
        )
        return lambda: orgs.UpdateMemberRole(request, metadata=caller.metadata)

    results = race(
        [accept(o, t) for o, _, _, t in setups] + [demote(o, c, f) for o, f, c, _ in setups]
    )
    for index, (organization, offerer, other, target) in enumerate(setups):
        accepted, demoted = results[index], results[index + PAIRS]
        # The demotion always goes through (the other owner stays); the transfer only if it
        # committed first, while the offerer was still an owner.
        assert demoted == OK
        assert accepted in {OK, ("FAILED_PRECONDITION", "OFFERER_NOT_OWNER")}
        roles = roles_by_user(orgs, other, organization)
        assert roles[offerer.id] == MEMBER  # demoted, from owner or from the admin it became
        assert roles[other.id] == OWNER
        assert roles[target.id] == (OWNER if accepted == OK else MEMBER)
        assert _owners(sessions, organization.id) == (2 if accepted == OK else 1)


def test_accepting_one_transfer_many_times_at_once(
    auth: Auth, orgs: Orgs, sessions: Sessions
) -> None:
    offerer, target = sign_up(auth), sign_up(auth)
    organization = create_organization(orgs, offerer)
    add_member(orgs, offerer, organization, target, MEMBER)
    orgs.OfferOwnershipTransfer(
        pb.OfferOwnershipTransferRequest(slug=organization.slug, email=target.email),
        metadata=offerer.metadata,
    )
    request = pb.AcceptOwnershipTransferRequest(slug=organization.slug)
    results = race([lambda: orgs.AcceptOwnershipTransfer(request, metadata=target.metadata)] * 10)
    assert tally(results) == {OK: 1, ("NOT_FOUND", "OWNERSHIP_TRANSFER_NOT_FOUND"): 9}
    assert roles_by_user(orgs, target, organization) == {offerer.id: ADMIN, target.id: OWNER}
    with sessions.read() as session:
        accepted = session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.organization_id == uuid.UUID(organization.id),
                AuditEvent.action == "ownership.accepted",
            )
        )
    assert accepted == 1


@pytest.mark.parametrize("round_", range(2))
def test_deleting_while_renaming(auth: Auth, orgs: Orgs, sessions: Sessions, round_: int) -> None:
    setups = []
    for _ in range(PAIRS):
        first, second = sign_up(auth), sign_up(auth)
        organization = create_organization(orgs, first)
        add_member(orgs, first, organization, second, OWNER)
        setups.append((organization, first, second, f"renamed-{uuid.uuid4().hex[:8]}"))

    def delete(organization: Any, caller: Any) -> Callable[[], Any]:
        request = pb.DeleteOrganizationRequest(
            slug=organization.slug, confirm_slug=organization.slug
        )
        return lambda: orgs.DeleteOrganization(request, metadata=caller.metadata)

    def rename(organization: Any, caller: Any, new_slug: str) -> Callable[[], Any]:
        request = pb.UpdateOrganizationRequest(
            slug=organization.slug,
            organization=organization_pb2.Organization(name="Renamed", slug=new_slug),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "slug"]),
        )
        return lambda: orgs.UpdateOrganization(request, metadata=caller.metadata)

    results = race(
        [delete(o, a) for o, a, _, _ in setups] + [rename(o, b, s) for o, _, b, s in setups]
    )
    for index, (organization, _, _, new_slug) in enumerate(setups):
        deleted, renamed = results[index], results[index + PAIRS]
        organization_id = uuid.UUID(organization.id)
        remaining = _count(
            sessions, sa.select(Organization).where(Organization.id == organization_id)
        )
        if deleted == OK:
            # The rename found nothing left to rename.
            assert renamed == ("NOT_FOUND", "ORGANIZATION_NOT_FOUND")
            assert remaining == 0
            assert (
                _count(
                    sessions,
                    sa.select(OrganizationSlugRedirect).where(
                        OrganizationSlugRedirect.organization_id == organization_id
                    ),
                )
                == 0
            )
        else:
            # Renamed first: the confirmation names the old slug, which is no longer current.
            assert renamed == OK
            assert deleted == ("INVALID_ARGUMENT", "INVALID_ARGUMENT")
            assert remaining == 1
            assert (
                _count(sessions, sa.select(Organization).where(Organization.slug == new_slug)) == 1
            )


@pytest.mark.parametrize("round_", range(2))
def test_claiming_a_slug_while_its_organization_renames_away(
    auth: Auth, orgs: Orgs, sessions: Sessions, round_: int
) -> None:
    setups = []
    for _ in range(PAIRS):
        owner, claimant = sign_up(auth), sign_up(auth)
        setups.append((create_organization(orgs, owner), owner, claimant))

    def rename(organization: Any, owner: Any) -> Callable[[], Any]:
        request = pb.UpdateOrganizationRequest(
            organization_id=organization.id,
            organization=organization_pb2.Organization(slug=f"moved-{uuid.uuid4().hex[:8]}"),
            update_mask=field_mask_pb2.FieldMask(paths=["slug"]),
        )
        return lambda: orgs.UpdateOrganization(request, metadata=owner.metadata)

    results = race(
        [rename(o, a) for o, a, _ in setups]
        + [lambda o=o, c=c: create_organization(orgs, c, slug=o.slug) for o, _, c in setups]  # type: ignore[misc]
    )
    for index, (organization, _, _) in enumerate(setups):
        renamed, claimed = results[index], results[index + PAIRS]
        # Before the rename commits the slug is taken; after, it is reserved for the
        # organization (ORGANIZATION_SLUG_REDIRECT_DAYS): never claimed by another.
        assert renamed == OK
        assert claimed in {("ALREADY_EXISTS", "SLUG_TAKEN"), ("ALREADY_EXISTS", "SLUG_RESERVED")}
        assert (
            _count(sessions, sa.select(Organization).where(Organization.slug == organization.slug))
            == 0
        )
