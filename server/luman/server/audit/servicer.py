"""AuditService over gRPC: checks the request's shape, calls AuditService, converts."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import grpc

from luman.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from luman.interceptors.principal import current_principal
from luman.server.audit import convert
from luman.server.audit.repository import AuditFilter
from luman.server.audit.service import AuditService
from luman.server.organization.convert import page_key, page_token
from luman.server.organization.service import OrganizationRef
from luman.server.pagination import clamp_page_size
from luman.server.validation import Violations, check_slug, check_uuid

# Actions are dotted lower-case names ("member.added"), at most the column's 64 characters.
_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
MAX_ACTION_LENGTH = 64


class AuditServicer(audit_service_pb2_grpc.AuditServiceServicer):
    def __init__(self, service: AuditService) -> None:
        self._service = service

    def ListAuditEvents(
        self, request: audit_service_pb2.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> audit_service_pb2.ListAuditEventsResponse:
        principal = current_principal()
        v = Violations()
        organization = None
        if request.organization_slug and request.organization_id:
            v.add("organization_id", "set at most one of organization_id and organization_slug")
        elif request.organization_slug:
            organization = OrganizationRef(
                slug=check_slug(v, "organization_slug", request.organization_slug)
            )
        elif request.organization_id:
            organization = OrganizationRef(
                organization_id=check_uuid(v, "organization_id", request.organization_id)
            )
        actor_id = check_uuid(v, "actor_id", request.actor_id) if request.actor_id else None
        if request.action and (
            len(request.action) > MAX_ACTION_LENGTH or not _ACTION.fullmatch(request.action)
        ):
            v.add("action", "must be an action name such as member.added")
        start = request.start_time.ToDatetime(dt.UTC) if request.HasField("start_time") else None
        end = request.end_time.ToDatetime(dt.UTC) if request.HasField("end_time") else None
        if start is not None and end is not None and end < start:
            v.add("end_time", "must not be before start_time")
        page_size = clamp_page_size(v, request.page_size)
        # A token resumes the listing it came from: the same caller, selector and filters.
        selector = (
            f"{principal.subject_id}|{request.organization_slug}|{request.organization_id}|"
            f"{request.actor_id}|{request.action}|{start}|{end}"
        )
        scope = "audit:" + hashlib.sha256(selector.encode()).hexdigest()[:32]
        before = page_key(v, request.page_token, scope)
        v.raise_if_any()
        where = AuditFilter(
            actor_id=actor_id, action=request.action, start_time=start, end_time=end
        )
        page = self._service.list(principal, organization, where, before, page_size)
        response = audit_service_pb2.ListAuditEventsResponse(
            next_page_token=page_token(page.next_key, scope)
        )
        for event in page.items:
            convert.event_to_proto(event, response.audit_events.add)
        return response
