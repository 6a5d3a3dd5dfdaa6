"""Helpers for the organization tests: signed-in users and organizations built through the API."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import TypeVar

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2_grpc
from luman.organization.v1 import (
    organization_pb2,
    organization_service_pb2,
    organization_service_pb2_grpc,
)
from tests.support import RichError, bearer, register, rich_error, unique_email

OWNER = organization_pb2.ORGANIZATION_ROLE_OWNER
ADMIN = organization_pb2.ORGANIZATION_ROLE_ADMIN
MEMBER = organization_pb2.ORGANIZATION_ROLE_MEMBER

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Account:
    """A registered user and an access token of theirs."""

    id: str
    email: str
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str]]:
        return bearer(self.token)


def sign_up(auth: auth_service_pb2_grpc.AuthServiceStub, prefix: str = "user") -> Account:
    email = unique_email(prefix)
    response = register(auth, email=email, name=prefix.title())
    return Account(response.user.id, email, response.tokens.access_token)


def unique_slug(prefix: str = "org") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_organization(
    orgs: organization_service_pb2_grpc.OrganizationServiceStub,
    owner: Account,
    slug: str | None = None,
    name: str = "Acme",
) -> organization_pb2.Organization:
    response = orgs.CreateOrganization(
        organization_service_pb2.CreateOrganizationRequest(name=name, slug=slug or unique_slug()),
        metadata=owner.metadata,
    )
    return response.organization


def add_member(
    orgs: organization_service_pb2_grpc.OrganizationServiceStub,
    caller: Account,
    organization: organization_pb2.Organization,
    user: Account,
    role: organization_pb2.OrganizationRole.ValueType,
) -> organization_pb2.Member:
    response = orgs.AddMember(
        organization_service_pb2.AddMemberRequest(
            organization_id=organization.id, user_id=user.id, role=role
        ),
        metadata=caller.metadata,
    )
    return response.member


def roles_by_user(
    orgs: organization_service_pb2_grpc.OrganizationServiceStub,
    caller: Account,
    organization: organization_pb2.Organization,
) -> dict[str, organization_pb2.OrganizationRole.ValueType]:
    """Every member's role, read page by page."""
    roles: dict[str, organization_pb2.OrganizationRole.ValueType] = {}
    token = ""
    while True:
        page = orgs.ListMembers(
            organization_service_pb2.ListMembersRequest(
                organization_id=organization.id, page_size=100, page_token=token
            ),
            metadata=caller.metadata,
        )
        roles.update({m.user_id: m.role for m in page.members})
        token = page.next_page_token
        if not token:
            return roles


def error_of(call: Callable[[], T]) -> RichError:
    """Run `call`, which must fail with a gRPC error, and decode that error."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return rich_error(caught.value)
