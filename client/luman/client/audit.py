"""The audit log (luman.audit.v1.AuditService): `client.audit.list()` for the caller's own
account's events, `client.audit.list(organization="acme")` for an organization's (owners and
admins); `iter()` follows the pages."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from luman.audit.v1 import audit_pb2, audit_service_pb2, audit_service_pb2_grpc
from luman.client.models import Page

if TYPE_CHECKING:
    from luman.client.client import Client

MAX_PAGE_SIZE = 500  # the server lowers larger page sizes to this


@dataclasses.dataclass(frozen=True)
class AuditEvent:
    """One audit event: `actor_type` is "user", "service_account", "anonymous" or "system"
    (`actor_id` empty for the last two); `user_id` the account it concerns, `organization_id`
    the organization ("" for none)."""

    id: str
    time: dt.datetime | None
    action: str
    actor_type: str
    actor_id: str
    user_id: str
    organization_id: str
    target_type: str
    target_id: str
    client_ip: str
    user_agent: str
    request_id: str
    details: Mapping[str, str]

    @classmethod
    def from_proto(cls, event: audit_pb2.AuditEvent) -> AuditEvent:
        return cls(
            id=event.id,
            time=event.time.ToDatetime(tzinfo=dt.UTC) if event.HasField("time") else None,
            action=event.action,
            actor_type=event.actor.type,
            actor_id=event.actor.id,
            user_id=event.user_id,
            organization_id=event.organization_id,
            target_type=event.target.type,
            target_id=event.target.id,
            client_ip=event.client_ip,
            user_agent=event.user_agent,
            request_id=event.request_id,
            details=dict(event.details),
        )


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    # A naive time is taken as UTC.
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    return stamp


class AuditAPI:
    """ListAuditEvents."""

    def __init__(self, client: Client, stub: audit_service_pb2_grpc.AuditServiceStub) -> None:
        self._client = client
        self._stub = stub

    def list(
        self,
        organization: str | uuid.UUID | None = None,
        *,
        actor_id: str | uuid.UUID | None = None,
        action: str = "",
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[AuditEvent]:
        """One page of events, newest first: the caller's own account's, or with
        `organization` (a slug, or a uuid.UUID id) that organization's. `since` is inclusive,
        `until` exclusive.

        Raises:
            NotFound: no such organization, or the caller is not a member.
            PermissionDenied: the caller is a member but neither owner nor admin.
        """
        request = audit_service_pb2.ListAuditEventsRequest(
            actor_id="" if actor_id is None else str(actor_id),
            action=action,
            page_size=page_size,
            page_token=page_token,
        )
        if isinstance(organization, uuid.UUID):
            request.organization_id = str(organization)
        elif organization:
            request.organization_slug = organization
        if since is not None:
            request.start_time.CopyFrom(_timestamp(since))
        if until is not None:
            request.end_time.CopyFrom(_timestamp(until))
        response = self._client.call(self._stub.ListAuditEvents, request)
        return Page(
            [AuditEvent.from_proto(event) for event in response.audit_events],
            response.next_page_token,
        )

    def iter(
        self,
        organization: str | uuid.UUID | None = None,
        *,
        actor_id: str | uuid.UUID | None = None,
        action: str = "",
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[AuditEvent]:
        """Every matching event, newest first, fetching pages as the iteration goes."""
        token = ""
        while True:
            page = self.list(
                organization,
                actor_id=actor_id,
                action=action,
                since=since,
                until=until,
                page_size=page_size,
                page_token=token,
            )
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token
