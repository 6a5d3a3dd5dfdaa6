"""The invitation RPCs over gRPC: OrganizationServicer inherits these methods. The rules are in
organization/invitations.py."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from luman.interceptors.principal import current_principal
from luman.organization.v1 import organization_pb2, organization_service_pb2
from luman.server.convert import write_timestamp
from luman.server.db.models import Role
from luman.server.organization import convert
from luman.server.organization.invitation_repository import InvitationRow
from luman.server.organization.invitations import InvitationService
from luman.server.pagination import clamp_page_size
from luman.server.validation import Violations, check_email, check_uuid

_ROLE_TO_PROTO = {
    Role.OWNER: organization_pb2.ORGANIZATION_ROLE_OWNER,
    Role.ADMIN: organization_pb2.ORGANIZATION_ROLE_ADMIN,
    Role.MEMBER: organization_pb2.ORGANIZATION_ROLE_MEMBER,
}
_STATE_TO_PROTO = {
    "pending": organization_pb2.INVITATION_STATE_PENDING,
    "expired": organization_pb2.INVITATION_STATE_EXPIRED,
    "accepted": organization_pb2.INVITATION_STATE_ACCEPTED,
    "declined": organization_pb2.INVITATION_STATE_DECLINED,
    "cancelled": organization_pb2.INVITATION_STATE_CANCELLED,
}


def invitation_to_proto(
    row: InvitationRow,
    make: Callable[..., organization_pb2.Invitation] = organization_pb2.Invitation,
) -> organization_pb2.Invitation:
    """The invitation; `make` as in convert.organization_to_proto."""
    invitation = make(
        id=str(row.id),
        organization_id=str(row.organization_id),
        organization_slug=row.organization_slug,
        organization_name=row.organization_name,
        email=row.email,
        role=_ROLE_TO_PROTO[row.role],
        inviter_user_id="" if row.inviter_id is None else str(row.inviter_id),
        inviter_name=row.inviter_name,
        inviter_email=row.inviter_email,
        state=_STATE_TO_PROTO[row.state],
        send_count=row.send_count,
    )
    write_timestamp(invitation.create_time, row.create_time)
    write_timestamp(invitation.expire_time, row.expire_time)
    write_timestamp(invitation.send_time, row.send_time)
    return invitation


class InvitationRpcs:
    _invitations: InvitationService

    def CreateInvitation(  # noqa: N802 - grpc names the methods
        self,
        request: organization_service_pb2.CreateInvitationRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.CreateInvitationResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        email = check_email(v, "email", request.email)
        role = convert.role_from_proto(v, "role", request.role)
        v.raise_if_any()
        row = self._invitations.create(current_principal(), ref, email, role)
        return organization_service_pb2.CreateInvitationResponse(
            invitation=invitation_to_proto(row)
        )

    def ListInvitations(  # noqa: N802 - grpc names the methods
        self,
        request: organization_service_pb2.ListInvitationsRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.ListInvitationsResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        page_size = clamp_page_size(v, request.page_size)
        # Tokens are scoped to the selector and the filter as given: not replayable elsewhere.
        closed = "all" if request.include_closed else "open"
        scope = f"invitations:{ref.organization_id or ref.slug}:{closed}"
        after = convert.page_key(v, request.page_token, scope)
        v.raise_if_any()
        page = self._invitations.list(
            current_principal(), ref, request.include_closed, after, page_size
        )
        response = organization_service_pb2.ListInvitationsResponse(
            next_page_token=convert.page_token(page.next_key, scope)
        )
        for row in page.items:
            invitation_to_proto(row, response.invitations.add)
        return response

    def ResendInvitation(  # noqa: N802 - grpc names the methods
        self,
        request: organization_service_pb2.ResendInvitationRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.ResendInvitationResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        invitation_id = check_uuid(v, "invitation_id", request.invitation_id)
        v.raise_if_any()
        assert invitation_id is not None
        row = self._invitations.resend(current_principal(), ref, invitation_id)
        return organization_service_pb2.ResendInvitationResponse(
            invitation=invitation_to_proto(row)
        )

    def CancelInvitation(  # noqa: N802 - grpc names the methods
        self,
        request: organization_service_pb2.CancelInvitationRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.CancelInvitationResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        invitation_id = check_uuid(v, "invitation_id", request.invitation_id)
        v.raise_if_any()
        assert invitation_id is not None
        row = self._invitations.cancel(current_principal(), ref, invitation_id)
        return organization_service_pb2.CancelInvitationResponse(
            invitation=invitation_to_proto(row)
        )

    def ListMyInvitations(  # noqa: N802 - grpc names the methods
        self,
        request: organization_service_pb2.ListMyInvitationsRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.ListMyInvitationsResponse:
        principal = current_principal()
        scope = f"my-invitations:{principal.user_id}"
        v = Violations()
        page_size = clamp_page_size(v, request.page_size)
        after = convert.page_key(v, request.page_token, scope)
        v.raise_if_any()
        page = self._invitations.list_mine(principal, after, page_size)
        response = organization_service_pb2.ListMyInvitationsResponse(
            next_page_token=convert.page_token(page.next_key, scope)
        )
        for row in page.items:
            invitation_to_proto(row, response.invitations.add)
        return response

    def AcceptInvitation(  # noqa: N802 - grpc names the methods
        self,
        request: organization_service_pb2.AcceptInvitationRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.AcceptInvitationResponse:
        v = Violations()
        invitation_id = check_uuid(v, "invitation_id", request.invitation_id)
        v.raise_if_any()
        assert invitation_id is not None
        row = self._invitations.accept(current_principal(), invitation_id)
        return organization_service_pb2.AcceptInvitationResponse(
            organization=convert.organization_to_proto(row)
        )

    def DeclineInvitation(  # noqa: N802 - grpc names the methods
        self,
        request: organization_service_pb2.DeclineInvitationRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.DeclineInvitationResponse:
        v = Violations()
        invitation_id = check_uuid(v, "invitation_id", request.invitation_id)
        v.raise_if_any()
        assert invitation_id is not None
        self._invitations.decline(current_principal(), invitation_id)
        return organization_service_pb2.DeclineInvitationResponse()
