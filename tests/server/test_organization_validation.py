"""Bad input on every field of every OrganizationService RPC: INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2_grpc
from luman.organization.v1 import organization_pb2, organization_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2 as pb
from tests.server.organization_support import MEMBER, Account, create_organization, sign_up
from tests.support import rich_error

Orgs = organization_service_pb2_grpc.OrganizationServiceStub
GOOD_ID = str(uuid.uuid4())
UNSPECIFIED = organization_pb2.ORGANIZATION_ROLE_UNSPECIFIED

BAD_SLUGS = {
    "empty": "",
    "2-chars": "ab",
    "41-chars": "a" * 41,
    "leading-dash": "-abc",
    "trailing-dash": "abc-",
    "only-dashes": "---",
    "uppercase": "Acme",
    "underscore": "ac_me",
    "space": "ac me",
    "dot": "ac.me",
    "trailing-newline": "acme\n",
    "non-ascii": "acmé",
}
BAD_NAMES = {
    "empty": "",
    "blank": "   ",
    "101-chars": "n" * 101,
    "control-char": "Acme\x07",
    "newline": "Acme\nInc",
}
BAD_IDS = {
    "not-a-uuid": "acme",
    "truncated": GOOD_ID[:-1],
    "sql": "' OR 1=1 --",
}

Request = Any


def _cases() -> list[Any]:
    cases: list[Any] = []

    def case(rpc: str, label: str, request: Request, field: str) -> None:
        cases.append(pytest.param(rpc, request, field, id=f"{rpc}-{label}"))

    for label, slug in BAD_SLUGS.items():
        case(
            "CreateOrganization",
            f"slug-{label}",
            pb.CreateOrganizationRequest(name="Acme", slug=slug),
            "slug",
        )
    for label, name in BAD_NAMES.items():
        case(
            "CreateOrganization",
            f"name-{label}",
            pb.CreateOrganizationRequest(name=name, slug="acme"),
            "name",
        )

    # The `organization` oneof, on every RPC that has it.
    selectors: dict[str, Callable[..., Request]] = {
        "GetOrganization": lambda **kw: pb.GetOrganizationRequest(**kw),
        "ListMembers": lambda **kw: pb.ListMembersRequest(**kw),
        "AddMember": lambda **kw: pb.AddMemberRequest(user_id=GOOD_ID, role=MEMBER, **kw),
        "RemoveMember": lambda **kw: pb.RemoveMemberRequest(user_id=GOOD_ID, **kw),
        "UpdateMemberRole": lambda **kw: pb.UpdateMemberRoleRequest(
            user_id=GOOD_ID, role=MEMBER, **kw
        ),
    }
    for rpc, build in selectors.items():
        case(rpc, "no-selector", build(), "organization")
        case(rpc, "empty-id", build(organization_id=""), "organization_id")
        case(rpc, "empty-slug", build(slug=""), "slug")
        for label, bad_id in BAD_IDS.items():
            case(rpc, f"id-{label}", build(organization_id=bad_id), "organization_id")
        case(rpc, "slug-uppercase", build(slug="Acme"), "slug")
        case(rpc, "slug-2-chars", build(slug="ab"), "slug")

    # Pagination.
    for rpc, build in (
        ("ListOrganizations", lambda **kw: pb.ListOrganizationsRequest(**kw)),
        ("ListMembers", lambda **kw: pb.ListMembersRequest(slug="acme", **kw)),
    ):
        case(rpc, "negative-page-size", build(page_size=-1), "page_size")
        case(rpc, "garbage-page-token", build(page_token="garbage"), "page_token")

    # The `user` oneof and roles.
    case("AddMember", "no-user", pb.AddMemberRequest(slug="acme", role=MEMBER), "user")
    case(
        "AddMember", "empty-email", pb.AddMemberRequest(slug="acme", email="", role=MEMBER), "email"
    )
    case(
        "AddMember",
        "bad-email",
        pb.AddMemberRequest(slug="acme", email="nobody", role=MEMBER),
        "email",
    )
    case(
        "AddMember",
        "empty-user-id",
        pb.AddMemberRequest(slug="acme", user_id="", role=MEMBER),
        "user_id",
    )
    for label, bad_id in BAD_IDS.items():
        case(
            "AddMember",
            f"user-id-{label}",
            pb.AddMemberRequest(slug="acme", user_id=bad_id, role=MEMBER),
            "user_id",
        )
        case(
            "RemoveMember",
            f"user-id-{label}",
            pb.RemoveMemberRequest(slug="acme", user_id=bad_id),
            "user_id",
        )
        case(
            "UpdateMemberRole",
            f"user-id-{label}",
            pb.UpdateMemberRoleRequest(slug="acme", user_id=bad_id, role=MEMBER),
            "user_id",
        )
    case("RemoveMember", "no-user-id", pb.RemoveMemberRequest(slug="acme"), "user_id")
    case(
        "UpdateMemberRole",
        "no-user-id",
        pb.UpdateMemberRoleRequest(slug="acme", role=MEMBER),
        "user_id",
    )
    unknown = organization_pb2.OrganizationRole.ValueType(99)
    for label, role in (("unspecified", UNSPECIFIED), ("unknown-99", unknown)):
        case(
            "AddMember",
            f"role-{label}",
            pb.AddMemberRequest(slug="acme", user_id=GOOD_ID, role=role),
            "role",
        )
        case(
            "UpdateMemberRole",
            f"role-{label}",
            pb.UpdateMemberRoleRequest(slug="acme", user_id=GOOD_ID, role=role),
            "role",
        )
    return cases


@pytest.fixture
def caller(auth: auth_service_pb2_grpc.AuthServiceStub, orgs: Orgs) -> Account:
    """A signed-in owner of "acme", so that only the field under test is wrong."""
    account = sign_up(auth)
    create_organization(orgs, account, slug="acme")
    return account


@pytest.mark.parametrize(("rpc", "request_", "field"), _cases())
def test_bad_field_is_invalid_argument_naming_the_field(
    orgs: Orgs, caller: Account, rpc: str, request_: Request, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(orgs, rpc)(request_, metadata=caller.metadata)
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.domain == "luman.organization.v1"
    assert list(error.field_violations) == [field]


def test_every_bad_field_is_reported_in_one_answer(orgs: Orgs, caller: Account) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        orgs.AddMember(pb.AddMemberRequest(user_id="x", role=UNSPECIFIED), metadata=caller.metadata)
    assert rich_error(caught.value).field_violations.keys() == {"organization", "user_id", "role"}


@pytest.mark.shape_check
def test_validation_does_not_run_before_authentication(orgs: Orgs) -> None:
    # An anonymous caller learns nothing about the request's shape.
    with pytest.raises(grpc.RpcError) as caught:
        orgs.CreateOrganization(pb.CreateOrganizationRequest(name="", slug="-"))
    assert rich_error(caught.value).code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("slug", ["abc", "a" * 40, "a-b", "1-2-3", "a--b", "123"])
def test_boundary_slugs_are_accepted(orgs: Orgs, caller: Account, slug: str) -> None:
    created = create_organization(orgs, caller, slug=slug, name="n" * 100)
    assert created.slug == slug
    fetched = orgs.GetOrganization(pb.GetOrganizationRequest(slug=slug), metadata=caller.metadata)
    assert fetched.organization.id == created.id
