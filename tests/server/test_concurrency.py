"""Races through the real server: many simultaneous calls, one winner, no INTERNAL.

Threads wait on a barrier so the calls really overlap. SQLite serializes writers with
BEGIN IMMEDIATE and a busy timeout; PostgreSQL relies on unique constraints and, for
membership changes, a row lock on the organization.
"""

from __future__ import annotations

import collections
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2 as pb
from luman.organization.v1 import organization_service_pb2_grpc
from luman.server.db.models import Membership, Organization, Role, User
from luman.server.db.session import Sessions
from tests.server.organization_support import (
    MEMBER,
    OWNER,
    add_member,
    create_organization,
    roles_by_user,
    sign_up,
)
from tests.support import PASSWORD, bearer, register, rich_error, unique_email

Auth = auth_service_pb2_grpc.AuthServiceStub
Orgs = organization_service_pb2_grpc.OrganizationServiceStub
N = 50


Outcome = tuple[str, str]  # (status code name, ErrorInfo reason)
OK: Outcome = ("OK", "")


def _race(calls: list[Callable[[], Any]]) -> list[Outcome]:
    """Run `calls` at once; return each one's outcome, in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Outcome:
        barrier.wait()
        try:
            call()
        except grpc.RpcError as exc:
            error = rich_error(exc)
            return error.code.name, error.reason
        return OK

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def _tally(results: list[Outcome]) -> dict[Outcome, int]:
    return dict(collections.Counter(results))


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
    results = _race([lambda i=i: register(auth, email=spellings[i % 3]) for i in range(N)])  # type: ignore[misc]
    assert _tally(results) == {OK: 1, ("ALREADY_EXISTS", "EMAIL_TAKEN"): N - 1}
    assert _count(sessions, sa.select(User).where(User.email == email)) == 1
    auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))


def test_simultaneous_registrations_of_different_emails_all_succeed(
    auth: Auth, sessions: Sessions
) -> None:
    # Writers queue behind each other on SQLite instead of failing with "database is locked".
    results = _race([lambda: register(auth) for _ in range(N)])
    assert _tally(results) == {OK: N}
    assert _count(sessions, sa.select(User)) == N


def test_simultaneous_creations_of_one_slug_make_one_organization(
    auth: Auth, orgs: Orgs, sessions: Sessions
) -> None:
    creators = [sign_up(auth) for _ in range(5)]
    results = _race(
        [lambda i=i: create_organization(orgs, creators[i % 5], slug="contested") for i in range(N)]  # type: ignore[misc]
    )
    assert _tally(results) == {OK: 1, ("ALREADY_EXISTS", "SLUG_TAKEN"): N - 1}
    assert _count(sessions, sa.select(Organization).where(Organization.slug == "contested")) == 1
    # Exactly one creator ended up owning it, and nobody got a dangling membership.
    assert _count(sessions, sa.select(Membership)) == 1


def test_simultaneous_adds_of_one_member_make_one_membership(
    auth: Auth, orgs: Orgs, sessions: Sessions
) -> None:
    owner, newcomer = sign_up(auth), sign_up(auth)
    organization = create_organization(orgs, owner)
    results = _race(
        [lambda: add_member(orgs, owner, organization, newcomer, MEMBER) for _ in range(N)]
    )
    assert _tally(results) == {OK: 1, ("ALREADY_EXISTS", "ALREADY_MEMBER"): N - 1}
    assert roles_by_user(orgs, owner, organization) == {owner.id: OWNER, newcomer.id: MEMBER}


PAIRS = 8  # organizations raced at once: more overlapping pairs, more chances to interleave


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
    results = _race(calls)
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

    results = _race([leave(o, a) for o, a, _ in pairs] + [leave(o, b) for o, _, b in pairs])
    for index, (organization, _, _) in enumerate(pairs):
        outcomes = sorted([results[index], results[index + PAIRS]])
        assert outcomes == [("FAILED_PRECONDITION", "LAST_OWNER"), OK]
        assert _owners(sessions, organization.id) == 1


def test_simultaneous_refreshes_with_one_token_all_get_the_one_new_pair(auth: Auth) -> None:
    tokens = register(auth).tokens
    request = auth_service_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token)
    pairs: list[Any] = []
    results = _race([lambda: pairs.append(auth.RefreshToken(request).tokens) for _ in range(N)])
    # One rotates the token; the others, within REFRESH_REUSE_GRACE_SECONDS, get the same pair
    # (tests/server/test_refresh_grace.py) instead of revoking the sign-in.
    assert _tally(results) == {OK: N}
    assert len({(p.access_token, p.refresh_token) for p in pairs}) == 1
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(pairs[0].access_token))
