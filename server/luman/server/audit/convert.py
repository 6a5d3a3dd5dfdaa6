"""Audit event model <-> proto."""

from __future__ import annotations

import json
from collections.abc import Callable

from luman.audit.v1 import audit_pb2
from luman.server.convert import write_timestamp
from luman.server.db.models import AuditEvent


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def event_to_proto(
    event: AuditEvent,
    make: Callable[..., audit_pb2.AuditEvent] = audit_pb2.AuditEvent,
) -> audit_pb2.AuditEvent:
    """The event; `make` builds the message (a response's `audit_events.add`, in place)."""
    try:
        details = json.loads(event.details)
    except ValueError:
        details = {}
    message = make(
        id=str(event.id),
        action=event.action,
        actor=audit_pb2.AuditActor(
            type=event.actor_type, id="" if event.actor_id is None else str(event.actor_id)
        ),
        user_id="" if event.user_id is None else str(event.user_id),
        organization_id="" if event.organization_id is None else str(event.organization_id),
        target=audit_pb2.AuditTarget(type=event.target_type, id=event.target_id),
        client_ip=event.client_ip,
        user_agent=event.user_agent,
        request_id=event.request_id,
        details={
            str(key): _text(value) for key, value in (details or {}).items() if value is not None
        },
    )
    write_timestamp(message.time, event.time)
    return message
