"""Recording audit events: `record(session, Event(...), now)` inside the transaction of the
action it describes, so that an event exists exactly when its action committed.

The actor, client address and user agent come from the call being served (call_context.py):
the verified principal, or "anonymous" for a call without one (a failed sign-in). Outside a
call (a command-line tool), the actor is "system" unless given.

An event that concerns no stored action (a failed sign-in) is recorded in a transaction of
its own with `record_alone`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Mapping

from sqlalchemy.orm import Session

from luman.interceptors.call_context import CallRecord, optional_call
from luman.interceptors.principal import Principal
from luman.server.db.models import AuditEvent
from luman.server.db.session import Sessions

MAX_DETAIL_LENGTH = 200
MAX_REQUEST_ID = 64


@dataclasses.dataclass(frozen=True)
class Event:
    """What happened. `user_id`: the account it concerns (read by its owner);
    `organization_id`: the organization (read by its owners and admins). At least one."""

    action: str
    user_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None
    target_type: str = ""
    target_id: str = ""
    # Facts about the event, shown as they are: names, roles, counts. Never a secret.
    details: Mapping[str, str | int | bool] = dataclasses.field(default_factory=dict)


def _actor(principal: Principal | None) -> tuple[str, uuid.UUID | None]:
    if principal is None:
        return "anonymous", None
    return ("service_account" if principal.is_service else "user"), principal.subject_id


def request_id(value: str) -> str:
    """The client's x-request-id as kept: printable ASCII of at most MAX_REQUEST_ID
    characters, else nothing (checked here, when an event is recorded, not on every call)."""
    if len(value) <= MAX_REQUEST_ID and value.isascii() and value.isprintable():
        return value
    return ""


def row(
    event: Event,
    now: dt.datetime,
    actor: Principal | None = None,
    call: CallRecord | None = None,
) -> AuditEvent:
    """The row for `event`; the actor is `actor`, else the call's principal. The call is
    `call`, else the one being served (a deferred event passes the call it was made in)."""
    if event.user_id is None and event.organization_id is None:
        raise ValueError(f"audit event {event.action!r} concerns no account and no organization")
    if call is None:
        call = optional_call()
    principal = actor if actor is not None else (None if call is None else call.principal)
    actor_type, actor_id = _actor(principal)
    if call is None and actor is None:
        actor_type = "system"
    details = {
        key: value[:MAX_DETAIL_LENGTH] if isinstance(value, str) else value
        for key, value in event.details.items()
    }
    return AuditEvent(
        id=uuid.uuid4(),
        time=now,
        action=event.action,
        actor_type=actor_type,
        actor_id=actor_id,
        user_id=event.user_id,
        organization_id=event.organization_id,
        target_type=event.target_type,
        target_id=event.target_id,
        client_ip="" if call is None else call.caller.ip[:45],
        user_agent="" if call is None else call.caller.user_agent[:256],
        request_id="" if call is None else request_id(call.request_id),
        details=json.dumps(details, sort_keys=True, separators=(",", ":")),
    )


def record(
    session: Session, event: Event, now: dt.datetime, actor: Principal | None = None
) -> None:
    """Add `event` to `session`'s transaction: it is stored if and only if that commits."""
    session.add(row(event, now, actor))


def record_alone(
    sessions: Sessions, event: Event, now: dt.datetime, actor: Principal | None = None
) -> None:
    """Store `event` in a transaction of its own (an event with no action to ride on)."""
    with sessions.write.begin() as session:
        record(session, event, now, actor)
