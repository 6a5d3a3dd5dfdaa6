"""OrganizationService: create, get, list and paginate, through real calls on both databases."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import grpc
import pytest
from sqlalchemy import insert

from luman.auth.v1 import auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2, organization_service_pb2_grpc
from luman.server.db.models import Membership, Organization, Role
from luman.server.db.session import Sessions
from tests.server.organization_support import (
    ADMIN,
    MEMBER,
    OWNER,
    Account,
    add_member,
    create_organization,
    error_of,
    sign_up,
)
from tests.server.test_auth_rpc import table_missing
from tests.support import FakeClock

Orgs = organization_service_pb2_grpc.OrganizationServiceStub
Auth = auth_service_pb2_grpc.AuthServiceStub
pb = organization_service_pb2


def _list(
    orgs: Orgs, caller: Account, page_size: int = 0, token: str = ""
) -> pb.ListOrganizationsResponse:
    response: pb.ListOrganizationsResponse = orgs.ListOrganizations(
        pb.ListOrganizationsRequest(page_size=page_size, page_token=token), metadata=caller.metadata
    )
    return response


def _members(
    orgs: Orgs, caller: Account, organization_id: str, page_size: int = 0, token: str = ""
) -> pb.ListMembersResponse:
    response: pb.ListMembersResponse = orgs.ListMembers(
        pb.ListMembersRequest(
            organization_id=organization_id, page_size=page_size, page_token=token
        ),
        metadata=caller.metadata,
    )
    return response


# --- Create and get ---------------------------------------------------------------------------


def test_create_organization_makes_the_creator_its_owner(
    auth: Auth, orgs: Orgs, clock: FakeClock
) -> None:
    owner = sign_up(auth, "owner")
    created = create_organization(orgs, owner, slug="acme-inc", name="  Acme Inc. ")
    uuid.UUID(created.id)
    assert (created.name, created.slug, created.caller_role) == ("Acme Inc.", "acme-inc", OWNER)
    assert created.create_time.ToDatetime(dt.UTC) == clock()
    members = _members(orgs, owner, created.id).members
    assert [(m.user_id, m.email, m.name, m.role) for m in members] == [
        (owner.id, owner.email, "Owner", OWNER)
    ]
    assert members[0].join_time.ToDatetime(dt.UTC) == clock()


def test_duplicate_slug_is_already_exists_for_anyone(auth: Auth, orgs: Orgs) -> None:
    first, second = sign_up(auth), sign_up(auth)
    create_organization(orgs, first, slug="taken")
    for caller in (first, second):
        error = error_of(lambda c=caller: create_organization(orgs, c, slug="taken"))  # type: ignore[misc]
        assert error.code == grpc.StatusCode.ALREADY_EXISTS
        assert (error.reason, error.domain) == ("SLUG_TAKEN", "luman.organization.v1")
    assert [o.slug for o in _list(orgs, second).organizations] == []


def test_get_organization_by_slug_and_by_id(auth: Auth, orgs: Orgs) -> None:
    owner, member = sign_up(auth), sign_up(auth)
    created = create_organization(orgs, owner)
    add_member(orgs, owner, created, member, MEMBER)
    for caller, role in ((owner, OWNER), (member, MEMBER)):
        by_slug = orgs.GetOrganization(
            pb.GetOrganizationRequest(slug=created.slug), metadata=caller.metadata
        )
        by_id = orgs.GetOrganization(
            pb.GetOrganizationRequest(organization_id=created.id), metadata=caller.metadata
        )
        assert by_slug.organization == by_id.organization
        assert by_slug.organization.id == created.id
        assert by_slug.organization.caller_role == role


def test_non_member_gets_the_same_not_found_as_for_a_missing_organization(
    auth: Auth, orgs: Orgs
) -> None:
    owner, stranger = sign_up(auth), sign_up(auth)
    created = create_organization(orgs, owner)
    requests = {
        "existing-slug": pb.GetOrganizationRequest(slug=created.slug),
        "existing-id": pb.GetOrganizationRequest(organization_id=created.id),
        "missing-slug": pb.GetOrganizationRequest(slug="no-such-org"),
        "missing-id": pb.GetOrganizationRequest(organization_id=str(uuid.uuid4())),
    }
    errors = {
        label: error_of(lambda r=request: orgs.GetOrganization(r, metadata=stranger.metadata))  # type: ignore[misc]
        for label, request in requests.items()
    }
    error = errors["existing-slug"]
    assert all(other == error for other in errors.values())
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "ORGANIZATION_NOT_FOUND"
    assert created.slug not in error.message
    assert created.id not in error.message
    members_error = error_of(lambda: _members(orgs, stranger, created.id))
    assert members_error == error


def test_removed_member_loses_access(auth: Auth, orgs: Orgs) -> None:
    owner, member = sign_up(auth), sign_up(auth)
    created = create_organization(orgs, owner)
    add_member(orgs, owner, created, member, ADMIN)
    orgs.RemoveMember(
        pb.RemoveMemberRequest(organization_id=created.id, user_id=member.id),
        metadata=owner.metadata,
    )
    error = error_of(
        lambda: orgs.GetOrganization(
            pb.GetOrganizationRequest(slug=created.slug), metadata=member.metadata
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert _list(orgs, member).organizations == []


# --- ListOrganizations ------------------------------------------------------------------------


def test_list_organizations_shows_only_the_callers_with_their_role(
    auth: Auth, orgs: Orgs, clock: FakeClock
) -> None:
    me, other = sign_up(auth), sign_up(auth)
    mine = create_organization(orgs, me, slug="mine")
    admin_of = create_organization(orgs, other, slug="admin-of")
    member_of = create_organization(orgs, other, slug="member-of")
    create_organization(orgs, other, slug="not-mine")
    clock.advance(seconds=1)
    add_member(orgs, other, admin_of, me, ADMIN)
    clock.advance(seconds=1)
    add_member(orgs, other, member_of, me, MEMBER)
    listed = _list(orgs, me)
    assert [(o.id, o.caller_role) for o in listed.organizations] == [
        (mine.id, OWNER),
        (admin_of.id, ADMIN),
        (member_of.id, MEMBER),
    ]
    assert listed.next_page_token == ""


@pytest.mark.parametrize("advance_clock", [True, False], ids=["distinct-times", "same-instant"])
def test_list_organizations_pages_through_everything_once(
    auth: Auth, orgs: Orgs, clock: FakeClock, advance_clock: bool
) -> None:
    me = sign_up(auth)
    created = []
    for _ in range(5):
        created.append(create_organization(orgs, me).id)
        if advance_clock:
            clock.advance(seconds=1)
    pages, token = [], ""
    while True:
        page = _list(orgs, me, page_size=2, token=token)
        pages.append([o.id for o in page.organizations])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    seen = [i for p in pages for i in p]
    assert sorted(seen) == sorted(created)
    if advance_clock:
        assert seen == created  # oldest membership first


def test_list_organizations_exact_multiple_ends_with_an_empty_page_token(
    auth: Auth, orgs: Orgs
) -> None:
    me = sign_up(auth)
    for _ in range(4):
        create_organization(orgs, me)
    first = _list(orgs, me, page_size=2)
    second = _list(orgs, me, page_size=2, token=first.next_page_token)
    assert len(second.organizations) == 2
    # Whether the server sees the end here or one page later, it never hands out a token
    # that leads to nothing but an empty page followed by another token.
    if second.next_page_token:
        third = _list(orgs, me, page_size=2, token=second.next_page_token)
        assert (list(third.organizations), third.next_page_token) == ([], "")


def test_page_size_zero_means_50_and_above_500_means_500(
    auth: Auth, orgs: Orgs, sessions: Sessions, clock: FakeClock
) -> None:
    me = sign_up(auth)
    # 501 memberships written straight to the database: the API would need 501 calls.
    with sessions.write.begin() as session:
        ids = [uuid.uuid4() for _ in range(501)]
        session.execute(
            insert(Organization),
            [
                {"id": i, "name": f"Org {n}", "slug": f"org-{n}", "create_time": clock()}
                for n, i in enumerate(ids)
            ],
        )
        session.execute(
            insert(Membership),
            [
                {
                    "organization_id": i,
                    "user_id": uuid.UUID(me.id),
                    "role": Role.MEMBER,
                    "create_time": clock(),
                }
                for i in ids
            ],
        )
    default = _list(orgs, me)
    assert len(default.organizations) == 50
    assert default.next_page_token
    clamped = _list(orgs, me, page_size=2_000_000)
    assert len(clamped.organizations) == 500
    assert clamped.next_page_token
    rest = _list(orgs, me, page_size=500, token=clamped.next_page_token)
    assert (len(rest.organizations), rest.next_page_token) == (1, "")
    assert {o.id for o in clamped.organizations} | {o.id for o in rest.organizations} == {
        str(i) for i in ids
    }


# --- ListMembers ------------------------------------------------------------------------------


@pytest.mark.parametrize("advance_clock", [True, False], ids=["distinct-times", "same-instant"])
def test_list_members_pages_through_everyone_once(
    auth: Auth, orgs: Orgs, clock: FakeClock, advance_clock: bool
) -> None:
    owner = sign_up(auth)
    created = create_organization(orgs, owner)
    expected = [owner.id]
    for _ in range(4):
        if advance_clock:
            clock.advance(seconds=1)
        member = sign_up(auth)
        add_member(orgs, owner, created, member, MEMBER)
        expected.append(member.id)
    if not advance_clock:
        expected.sort(key=uuid.UUID)  # all joined at one instant: the user id orders them
    seen, sizes, token = [], [], ""
    while True:
        page = _members(orgs, owner, created.id, page_size=2, token=token)
        sizes.append(len(page.members))
        seen += [m.user_id for m in page.members]
        token = page.next_page_token
        if not token:
            break
    assert sizes == [2, 2, 1]
    assert seen == expected  # earliest joined first


def test_list_members_by_slug_paginates_too(auth: Auth, orgs: Orgs) -> None:
    owner = sign_up(auth)
    created = create_organization(orgs, owner)
    for _ in range(2):
        add_member(orgs, owner, created, sign_up(auth), MEMBER)
    first = orgs.ListMembers(
        pb.ListMembersRequest(slug=created.slug, page_size=2), metadata=owner.metadata
    )
    second = orgs.ListMembers(
        pb.ListMembersRequest(slug=created.slug, page_size=2, page_token=first.next_page_token),
        metadata=owner.metadata,
    )
    assert len(first.members) == 2
    assert len(second.members) == 1
    assert not second.next_page_token


def test_list_members_past_the_last_member_is_empty_for_members_only(
    auth: Auth, orgs: Orgs
) -> None:
    owner, stranger = sign_up(auth), sign_up(auth)
    created = create_organization(orgs, owner)
    later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC).isoformat()
    selectors = {
        f"members:{created.id}": pb.ListMembersRequest(organization_id=created.id),
        f"members:{created.slug}": pb.ListMembersRequest(slug=created.slug),
    }
    for scope, selector in selectors.items():
        request = pb.ListMembersRequest(page_token=_forged(scope, [later, str(uuid.uuid4())]))
        request.MergeFrom(selector)
        page = orgs.ListMembers(request, metadata=owner.metadata)
        assert (list(page.members), page.next_page_token) == ([], "")
        error = error_of(lambda r=request: orgs.ListMembers(r, metadata=stranger.metadata))  # type: ignore[misc]
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "ORGANIZATION_NOT_FOUND")


# --- Page tokens that are not ours ------------------------------------------------------------


def _forged(scope: str, key: list[str]) -> str:
    raw = json.dumps({"s": scope, "k": key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_foreign_and_garbage_page_tokens_are_invalid_argument(auth: Auth, orgs: Orgs) -> None:
    me, other = sign_up(auth), sign_up(auth)
    a, b = create_organization(orgs, me), create_organization(orgs, me)
    for _ in range(3):
        add_member(orgs, me, a, sign_up(auth), MEMBER)
        create_organization(orgs, other)
    members_token = _members(orgs, me, a.id, page_size=1).next_page_token
    others_token = _list(orgs, other, page_size=1).next_page_token
    assert members_token
    assert others_token
    later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC).isoformat()
    scope = f"organizations:{me.id}"
    bad_tokens = {
        "garbage": "not a token!",
        "not-base64-json": "bm90IGpzb24",
        "non-ascii": "tökén",
        "other-users-listing": others_token,
        "members-listing": members_token,
        "wrong-key-length": _forged(scope, [later]),
        "naive-time": _forged(scope, ["2026-01-01T00:00:00", str(uuid.uuid4())]),
        "out-of-range-time": _forged(scope, ["0001-01-01T00:00:00+05:00", str(uuid.uuid4())]),
        "not-a-time": _forged(scope, ["yesterday", str(uuid.uuid4())]),
        "not-a-uuid": _forged(scope, [later, "x"]),
        "deeply-nested": base64.urlsafe_b64encode(b"[" * 400).decode(),
        "huge": "A" * 10_000,
    }
    for label, token in bad_tokens.items():
        error = error_of(lambda t=token: _list(orgs, me, token=t))  # type: ignore[misc]
        assert (error.code, list(error.field_violations)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            ["page_token"],
        ), label
    # A members token from one organization is not valid for another.
    error = error_of(lambda: _members(orgs, me, b.id, token=members_token))
    assert list(error.field_violations) == ["page_token"]
    # A well-formed token we could have issued is accepted: it resumes after everything.
    assert _list(orgs, me, token=_forged(scope, [later, str(uuid.uuid4())])).organizations == []


# --- INTERNAL errors never leak ---------------------------------------------------------------


def test_database_failure_is_internal_without_sql(
    auth: Auth, orgs: Orgs, sessions: Sessions
) -> None:
    me = sign_up(auth)
    created = create_organization(orgs, me)
    with table_missing(sessions, "memberships"):
        calls = [
            lambda: _list(orgs, me),
            lambda: create_organization(orgs, me),
            lambda: orgs.GetOrganization(
                pb.GetOrganizationRequest(slug=created.slug), metadata=me.metadata
            ),
        ]
        for call in calls:
            error = error_of(call)
            assert (error.code, error.message, error.reason) == (
                grpc.StatusCode.INTERNAL,
                "internal error",
                "",
            )
    assert _list(orgs, me).organizations[0].id == created.id
