"""OrganizationService over gRPC: checks the request's shape, calls OrganizationService,
converts the result."""

from __future__ import annotations

from typing import Literal, Protocol

import grpc

from luman.interceptors.principal import current_principal
from luman.organization.v1 import organization_service_pb2, organization_service_pb2_grpc
from luman.server.auth.service_accounts import ServiceAccounts
from luman.server.organization import convert
from luman.server.organization.invitation_servicer import InvitationRpcs
from luman.server.organization.invitations import InvitationService
from luman.server.organization.service import OrganizationRef, OrganizationService
from luman.server.organization.service_account_servicer import ServiceAccountRpcs
from luman.server.pagination import clamp_page_size
from luman.server.validation import Violations, check_name, check_slug, check_uuid


class OrganizationServicer(
    ServiceAccountRpcs, InvitationRpcs, organization_service_pb2_grpc.OrganizationServiceServicer
):
    def __init__(
        self,
        service: OrganizationService,
        service_accounts: ServiceAccounts,
        invitations: InvitationService,
    ) -> None:
        self._service = service
        self._service_accounts = service_accounts
        self._invitations = invitations

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

    # --- Renaming and deleting (AIP-134, AIP-135) ------------------------------------------

    def UpdateOrganization(
        self,
        request: organization_service_pb2.UpdateOrganizationRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.UpdateOrganizationResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("selector"), request.organization_id, request.slug
        )
        paths = convert.update_paths(v, request.update_mask.paths, request.organization)
        name = slug = None
        if "name" in paths:
            name = check_name(v, "organization.name", request.organization.name)
        if "slug" in paths:
            slug = check_slug(v, "organization.slug", request.organization.slug)
        v.raise_if_any()
        row = self._service.update(current_principal(), ref, name, slug)
        return organization_service_pb2.UpdateOrganizationResponse(
            organization=convert.organization_to_proto(row)
        )

    def DeleteOrganization(
        self,
        request: organization_service_pb2.DeleteOrganizationRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.DeleteOrganizationResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        if not request.confirm_slug:
            v.add("confirm_slug", "is required: the organization's current slug")
        v.raise_if_any()
        self._service.delete(current_principal(), ref, request.confirm_slug)
        return organization_service_pb2.DeleteOrganizationResponse()

    # --- Ownership transfer ----------------------------------------------------------------

    def OfferOwnershipTransfer(
        self,
        request: organization_service_pb2.OfferOwnershipTransferRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.OfferOwnershipTransferResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        target = convert.user_ref(v, request.WhichOneof("user"), request.user_id, request.email)
        v.raise_if_any()
        row = self._service.offer_transfer(current_principal(), ref, target)
        return organization_service_pb2.OfferOwnershipTransferResponse(
            ownership_transfer=convert.transfer_to_proto(row)
        )

    def GetOwnershipTransfer(
        self,
        request: organization_service_pb2.GetOwnershipTransferRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.GetOwnershipTransferResponse:
        ref = self._ref(request)
        row = self._service.get_transfer(current_principal(), ref)
        return organization_service_pb2.GetOwnershipTransferResponse(
            ownership_transfer=convert.transfer_to_proto(row)
        )

    def AcceptOwnershipTransfer(
        self,
        request: organization_service_pb2.AcceptOwnershipTransferRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.AcceptOwnershipTransferResponse:
        row = self._service.accept_transfer(current_principal(), self._ref(request))
        return organization_service_pb2.AcceptOwnershipTransferResponse(
            member=convert.member_to_proto(row)
        )

    def DeclineOwnershipTransfer(
        self,
        request: organization_service_pb2.DeclineOwnershipTransferRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.DeclineOwnershipTransferResponse:
        self._service.decline_transfer(current_principal(), self._ref(request))
        return organization_service_pb2.DeclineOwnershipTransferResponse()

    def CancelOwnershipTransfer(
        self,
        request: organization_service_pb2.CancelOwnershipTransferRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.CancelOwnershipTransferResponse:
        self._service.cancel_transfer(current_principal(), self._ref(request))
        return organization_service_pb2.CancelOwnershipTransferResponse()

    @staticmethod
    def _ref(request: _SelectsOrganization) -> OrganizationRef:
        """The request's `organization` oneof, checked."""
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        v.raise_if_any()
        return ref


class _SelectsOrganization(Protocol):
    organization_id: str
    slug: str

    def WhichOneof(self, oneof_group: Literal["organization"]) -> str | None: ...
