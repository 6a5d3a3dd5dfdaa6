"""Reading the request log for `luman-server logs`: filters, the query, and its rendering."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid

import grpc
from sqlalchemy import ColumnElement, Engine, select

from luman.server.db.models import RequestLog, User
from luman.server.request_logs import store
from luman.server.validation import normalize_email

MAX_LIMIT = 10_000
_STATUS_BY_NUMBER = {code.value[0]: code.name for code in grpc.StatusCode}
_STATUS_NAMES = frozenset(code.name for code in grpc.StatusCode)


class QueryError(Exception):
    """A filter the operator gave cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class LogFilter:
    user_id: uuid.UUID | None = None
    method: str | None = None
    status: str | None = None
    limit: int = 50


@dataclasses.dataclass(frozen=True)
class LogRow:
    time: dt.datetime
    method: str
    status: str
    duration_ms: float
    user_id: uuid.UUID | None
    client_ip: str
    user_agent: str
    # The call's OpenTelemetry trace id when it was traced (README, "Tracing").
    trace_id: str | None = None
    # The ErrorInfo reason of a failed call, when it had one.
    reason: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.time.isoformat(),
            "method": self.method,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "user_id": str(self.user_id) if self.user_id else None,
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "trace_id": self.trace_id,
            "reason": self.reason,
        }


def parse_status(text: str) -> str:
    """'unauthenticated', 'UNAUTHENTICATED' or '16' -> 'UNAUTHENTICATED'."""
    value = text.strip()
    if value.isdigit() and int(value) in _STATUS_BY_NUMBER:
        return _STATUS_BY_NUMBER[int(value)]
    if value.upper() in _STATUS_NAMES:
        return value.upper()
    raise QueryError(f"unknown gRPC status {text!r}: use a name such as NOT_FOUND or a number")


def resolve_user(engine: Engine, text: str) -> uuid.UUID:
    """A user id as given, or the id of the user with that email.

    Raises:
        QueryError: neither a UUID nor the email of a user.
    """
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        pass
    with engine.connect() as connection:
        user_id = connection.execute(
            select(User.id).where(User.email == normalize_email(text))
        ).scalar_one_or_none()
    if user_id is None:
        raise QueryError(f"no user with id or email {text!r}")
    return user_id


def recent(engine: Engine, log_filter: LogFilter) -> list[LogRow]:
    """The newest `limit` matching rows, returned oldest first (like `tail`)."""
    table = store.TABLE
    query = select(RequestLog).order_by(RequestLog.time.desc(), RequestLog.id.desc())
    if log_filter.user_id is not None:
        query = query.where(table.c.user_id == log_filter.user_id)
    if log_filter.method:
        query = query.where(_method_matches(log_filter.method))
    if log_filter.status:
        query = query.where(table.c.status == log_filter.status)
    query = query.limit(max(1, min(log_filter.limit, MAX_LIMIT)))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        LogRow(
            time=row.time,
            method=row.method,
            status=row.status,
            duration_ms=row.duration_ms,
            user_id=row.user_id,
            client_ip=row.client_ip,
            user_agent=row.user_agent,
            trace_id=row.trace_id,
            reason=row.reason,
        )
        for row in reversed(rows)
    ]


def _method_matches(method: str) -> ColumnElement[bool]:
    """'/luman.auth.v1.AuthService/Login' exactly, or a suffix: 'AuthService/Login', 'Login'."""
    column = store.TABLE.c.method
    if method.startswith("/"):
        return column == method
    if "/" in method:
        return (column == "/" + method) | column.endswith("." + method, autoescape=True)
    return column.endswith("/" + method, autoescape=True)


def render_json(rows: list[LogRow]) -> str:
    return json.dumps([row.to_json() for row in rows], indent=2)


def render_table(rows: list[LogRow]) -> str:
    if not rows:
        return "no matching requests"
    header = ("TIME (UTC)", "STATUS", "MS", "METHOD", "USER", "CLIENT IP", "USER AGENT")
    lines = [
        (
            row.time.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            f"{row.status} {row.reason}" if row.reason else row.status,
            f"{row.duration_ms:.1f}",
            row.method,
            str(row.user_id) if row.user_id else "-",
            row.client_ip,
            row.user_agent or "-",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in (header, *lines)) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in (header, *lines)
    )
