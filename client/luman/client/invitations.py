"""Invitations (the invitation RPCs of OrganizationService): an organization's owners and
admins send, list, resend and cancel them (`client.invitations.create("acme", email)`); the
person invited lists theirs and accepts or declines (`client.invitations.accept(id)`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

from google.protobuf import timestamp_pb2

from luman.client.errors import InvalidArgument
from luman.client.models import Organization, Page, Role, role_from_proto, role_to_proto
from luman.organization.v1 import (
    organization_pb2,
    organization_service_pb2,
    organization_service_pb2_grpc,
)

if TYPE_CHECKING:
    from luman.client.client import Client

MAX_PAGE_SIZE = 500  # the server lowers larger page sizes to this


class InvitationState(enum.StrEnum):
    """Where an invitation stands: pending, or expired (not answered in time; resending
    renews it), or closed: accepted, declined or cancelled."""

    PENDING = "pending"
    EXPIRED = "expired"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    CANCELLED = "cancelled"


_STATE_FROM_PROTO = {
    organization_pb2.INVITATION_STATE_PENDING: InvitationState.PENDING,
    organization_pb2.INVITATION_STATE_EXPIRED: InvitationState.EXPIRED,
    organization_pb2.INVITATION_STATE_ACCEPTED: InvitationState.ACCEPTED,
    organization_pb2.INVITATION_STATE_DECLINED: InvitationState.DECLINED,
    organization_pb2.INVITATION_STATE_CANCELLED: InvitationState.CANCELLED,
}


def _time(ts: timestamp_pb2.Timestamp, present: bool) -> dt.datetime | None:
    return ts.ToDatetime(tzinfo=dt.UTC) if present else None


@dataclasses.dataclass(frozen=True)
class Invitation:
    """An invitation of `email` to an organization with `role`. The inviter's fields are empty
    once their account is deleted; `state` is None for a state newer than this client."""

    id: str
    organization_id: str
    organization_slug: str
    organization_name: str
    email: str
    role: Role | None
    inviter_user_id: str
    inviter_name: str
    inviter_email: str
    state: InvitationState | None
    create_time: dt.datetime | None
    expire_time: dt.datetime | None
    send_time: dt.datetime | None
    send_count: int

    @classmethod
    def from_proto(cls, invitation: organization_pb2.Invitation) -> Invitation:
        return cls(
            id=invitation.id,
            organization_id=invitation.organization_id,
            organization_slug=invitation.organization_slug,
            organization_name=invitation.organization_name,
            email=invitation.email,
            role=role_from_proto(invitation.role),
            inviter_user_id=invitation.inviter_user_id,
            inviter_name=invitation.inviter_name,
            inviter_email=invitation.inviter_email,
            state=_STATE_FROM_PROTO.get(invitation.state),
            create_time=_time(invitation.create_time, invitation.HasField("create_time")),
            expire_time=_time(invitation.expire_time, invitation.HasField("expire_time")),
            send_time=_time(invitation.send_time, invitation.HasField("send_time")),
            send_count=invitation.send_count,
        )


class _SelectsOrganization(Protocol):
    organization_id: str
    slug: str


Selecting = TypeVar("Selecting", bound=_SelectsOrganization)


def _select(request: Selecting, organization: str | uuid.UUID) -> Selecting:
    """Fill the request's `organization` oneof: organization_id for a UUID, else slug."""
    if isinstance(organization, uuid.UUID):
        request.organization_id = str(organization)
    else:
        request.slug = organization
    return request


class InvitationsAPI:
    """Every method raises a ClientError on failure; the reasons are in the proto comments
    (INVITATION_PENDING, INVITATION_EXPIRED, EMAIL_NOT_VERIFIED, ...)."""

    def __init__(
        self, client: Client, stub: organization_service_pb2_grpc.OrganizationServiceStub
    ) -> None:
        self._client = client
        self._stub = stub

    # --- An organization's invitations (owners and admins) -----------------------------------

    def create(
        self, organization: str | uuid.UUID, email: str, role: Role | str = Role.MEMBER
    ) -> Invitation:
        """Invite `email` to the organization (a str: its slug) with `role`; the server queues
        the invitation email. The caller's address must be verified (FailedPrecondition
        EMAIL_NOT_VERIFIED); RateLimited for a message to the address less than a minute ago
        (INVITATION_RECENTLY_SENT) or 100 invitations in 24 hours (INVITATION_QUOTA_EXCEEDED).
        """
        try:
            role_value = role_to_proto(Role.parse(role))
        except ValueError as exc:
            raise InvalidArgument(
                str(exc), code=None, field_violations={"role": str(exc)}
            ) from None
        request = _select(
            organization_service_pb2.CreateInvitationRequest(email=email, role=role_value),
            organization,
        )
        response = self._client.call(self._stub.CreateInvitation, request)
        return Invitation.from_proto(response.invitation)

    def list(
        self,
        organization: str | uuid.UUID,
        include_closed: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Invitation]:
        """One page of the organization's invitations, newest first: pending and expired ones,
        or all with `include_closed`."""
        request = _select(
            organization_service_pb2.ListInvitationsRequest(
                page_size=page_size, page_token=page_token, include_closed=include_closed
            ),
            organization,
        )
        response = self._client.call(self._stub.ListInvitations, request)
        return Page(
            [Invitation.from_proto(i) for i in response.invitations], response.next_page_token
        )

    def iter(
        self,
        organization: str | uuid.UUID,
        include_closed: bool = False,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[Invitation]:
        """Every invitation `list` would show, fetching pages as the iteration goes."""
        token = ""
        while True:
            page = self.list(organization, include_closed, page_size, token)
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    def resend(self, organization: str | uuid.UUID, invitation_id: str) -> Invitation:
        """Queue the email again and renew the expiry (at most once a minute: RateLimited);
        the caller becomes the invitation's inviter."""
        request = _select(
            organization_service_pb2.ResendInvitationRequest(invitation_id=invitation_id),
            organization,
        )
        response = self._client.call(self._stub.ResendInvitation, request)
        return Invitation.from_proto(response.invitation)

    def cancel(self, organization: str | uuid.UUID, invitation_id: str) -> Invitation:
        """Withdraw a pending or expired invitation."""
        request = _select(
            organization_service_pb2.CancelInvitationRequest(invitation_id=invitation_id),
            organization,
        )
        response = self._client.call(self._stub.CancelInvitation, request)
        return Invitation.from_proto(response.invitation)

    # --- The caller's own invitations --------------------------------------------------------

    def list_mine(self, page_size: int = 0, page_token: str = "") -> Page[Invitation]:
        """One page of the pending invitations to the caller's verified address, newest first."""
        response = self._client.call(
            self._stub.ListMyInvitations,
            organization_service_pb2.ListMyInvitationsRequest(
                page_size=page_size, page_token=page_token
            ),
        )
        return Page(
            [Invitation.from_proto(i) for i in response.invitations], response.next_page_token
        )

    def iter_mine(self, page_size: int = MAX_PAGE_SIZE) -> Iterator[Invitation]:
        token = ""
        while True:
            page = self.list_mine(page_size, token)
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    def accept(self, invitation_id: str) -> Organization:
        """Join the organization with the invitation's role; returns it with that role."""
        response = self._client.call(
            self._stub.AcceptInvitation,
            organization_service_pb2.AcceptInvitationRequest(invitation_id=invitation_id),
        )
        return Organization.from_proto(response.organization)

    def decline(self, invitation_id: str) -> None:
        self._client.call(
            self._stub.DeclineInvitation,
            organization_service_pb2.DeclineInvitationRequest(invitation_id=invitation_id),
        )
