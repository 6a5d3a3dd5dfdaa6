"""Queries for audit events. Never commits; nothing here writes (record.py adds events)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Select, literal, select, tuple_
from sqlalchemy.orm import Session

from luman.server.db.models import AuditEvent

PageKey = tuple[dt.datetime, uuid.UUID]


@dataclasses.dataclass(frozen=True)
class AuditFilter:
    """Whose events (exactly one of `user_id` and `organization_id`) and which of them."""

    user_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None
    actor_id: uuid.UUID | None = None
    action: str = ""
    start_time: dt.datetime | None = None  # inclusive
    end_time: dt.datetime | None = None  # exclusive


class AuditRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def page(self, where: AuditFilter, before: PageKey | None, limit: int) -> list[AuditEvent]:
        """Events newest first (keyset: time, id, both descending), strictly before `before`.

        The account's or organization's index (user_id or organization_id, time, id) serves
        both the filter and the order."""
        stmt: Select[Any] = select(AuditEvent)
        if where.organization_id is not None:
            stmt = stmt.where(AuditEvent.organization_id == where.organization_id)
        else:
            stmt = stmt.where(AuditEvent.user_id == where.user_id)
        if where.actor_id is not None:
            stmt = stmt.where(AuditEvent.actor_id == where.actor_id)
        if where.action:
            stmt = stmt.where(AuditEvent.action == where.action)
        if where.start_time is not None:
            stmt = stmt.where(AuditEvent.time >= where.start_time)
        if where.end_time is not None:
            stmt = stmt.where(AuditEvent.time < where.end_time)
        if before is not None:
            # Typed literals: the keyset's time must be bound as the column stores it.
            key = tuple_(
                literal(before[0], AuditEvent.time.type), literal(before[1], AuditEvent.id.type)
            )
            stmt = stmt.where(tuple_(AuditEvent.time, AuditEvent.id) < key)
        stmt = stmt.order_by(AuditEvent.time.desc(), AuditEvent.id.desc()).limit(limit)
        return list(self._session.scalars(stmt))
