"""OrganizationService over gRPC: checks the request's shape, calls OrganizationService,
converts the result."""

from __future__ import annotations

import grpc

from luman.interceptors.principal import current_principal
from luman.organization.v1 import organization_service_pb2, organization_service_pb2_grpc
from luman.server.auth.service_accounts import ServiceAccounts
from luman.server.organization import convert
from luman.server.organization.service import OrganizationService
from luman.server.organization.service_account_servicer import ServiceAccountRpcs
from luman.server.pagination import clamp_page_size
from luman.server.validation import Violations, check_name, check_slug, check_uuid


class OrganizationServicer(
    ServiceAccountRpcs, organization_service_pb2_grpc.OrganizationServiceServicer
):
    def __init__(self, service: OrganizationService, service_accounts: ServiceAccounts) -> None:
        self._service = service
        self._service_accounts = service_accounts

    def ListOrganizations(
        self,
        request: organization_service_pb2.ListOrganizationsRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.ListOrganizationsResponse:
        principal = current_principal()
        scope = f"organizations:{principal.user_id}"
        v = Violations()
        page_size = clamp_page_size(v, request.page_size)
        after = convert.page_key(v, request.page_token, scope)
        v.raise_if_any()
        page = self._service.list_for(principal, after, page_size)
        response = organization_service_pb2.ListOrganizationsResponse(
            next_page_token=convert.page_token(page.next_key, scope)
        )
        for row in page.items:
            convert.organization_to_proto(row, response.organizations.add)
        return response

    def CreateOrganization(
        self,
        request: organization_service_pb2.CreateOrganizationRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.CreateOrganizationResponse:
        v = Violations()
        name = check_name(v, "name", request.name)
        slug = check_slug(v, "slug", request.slug)
        v.raise_if_any()
        membership = self._service.create(current_principal(), name, slug)
        return organization_service_pb2.CreateOrganizationResponse(
            organization=convert.organization_to_proto(membership)
        )

    def GetOrganization(
        self,
        request: organization_service_pb2.GetOrganizationRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.GetOrganizationResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        v.raise_if_any()
        membership = self._service.get(current_principal(), ref)
        return organization_service_pb2.GetOrganizationResponse(
            organization=convert.organization_to_proto(membership)
        )

    def ListMembers(
        self, request: organization_service_pb2.ListMembersRequest, context: grpc.ServicerContext
    ) -> organization_service_pb2.ListMembersResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        page_size = clamp_page_size(v, request.page_size)
        # Tokens are scoped to the selector as given, so a token cannot be replayed elsewhere.
        scope = f"members:{ref.organization_id or ref.slug}"
        after = convert.page_key(v, request.page_token, scope)
        v.raise_if_any()
        page = self._service.list_members(current_principal(), ref, after, page_size)
        response = organization_service_pb2.ListMembersResponse(
            next_page_token=convert.page_token(page.next_key, scope)
        )
        for row in page.items:
            convert.member_to_proto(row, response.members.add)
        return response

    def AddMember(
        self, request: organization_service_pb2.AddMemberRequest, context: grpc.ServicerContext
    ) -> organization_service_pb2.AddMemberResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        target = convert.user_ref(v, request.WhichOneof("user"), request.user_id, request.email)
        role = convert.role_from_proto(v, "role", request.role)
        v.raise_if_any()
        membership = self._service.add_member(current_principal(), ref, target, role)
        return organization_service_pb2.AddMemberResponse(
            member=convert.member_to_proto(membership)
        )

    def RemoveMember(
        self, request: organization_service_pb2.RemoveMemberRequest, context: grpc.ServicerContext
    ) -> organization_service_pb2.RemoveMemberResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        user_id = check_uuid(v, "user_id", request.user_id)
        v.raise_if_any()
        assert user_id is not None
        self._service.remove_member(current_principal(), ref, user_id)
        return organization_service_pb2.RemoveMemberResponse()

    def UpdateMemberRole(
        self,
        request: organization_service_pb2.UpdateMemberRoleRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.UpdateMemberRoleResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        user_id = check_uuid(v, "user_id", request.user_id)
        role = convert.role_from_proto(v, "role", request.role)
        v.raise_if_any()
        assert user_id is not None
        membership = self._service.update_role(current_principal(), ref, user_id, role)
        return organization_service_pb2.UpdateMemberRoleResponse(
            member=convert.member_to_proto(membership)
        )
