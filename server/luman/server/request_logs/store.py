"""SQL for the request_logs table: batched inserts and retention pruning (SQLAlchemy Core:
one executemany per batch rather than an ORM object per row)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import cast

from sqlalchemy import Engine, Table, delete, insert, select

from luman.interceptors.request_logging import RequestLogEntry
from luman.server.db.models import RequestLog

TABLE = cast(Table, RequestLog.__table__)
PRUNE_BATCH = 5000


def insert_entries(engine: Engine, entries: Sequence[RequestLogEntry]) -> None:
    rows = [
        {
            "time": e.time,
            "method": e.method[:200],
            "status": e.status,
            "duration_ms": e.duration_ms,
            "user_id": e.user_id,
            "client_ip": e.client_ip[:45],
            "user_agent": e.user_agent[:256],
        }
        for e in entries
    ]
    with engine.begin() as connection:
        connection.execute(insert(TABLE), rows)


def prune_before(engine: Engine, cutoff: dt.datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete rows older than `cutoff`, `batch` rows per transaction; return how many.

    Small transactions keep the SQLite write lock (shared with every RPC that writes) short.
    """
    total = 0
    while True:
        doomed = select(TABLE.c.id).where(TABLE.c.time < cutoff).limit(batch).scalar_subquery()
        with engine.begin() as connection:
            deleted = connection.execute(delete(TABLE).where(TABLE.c.id.in_(doomed))).rowcount
        total += deleted
        if deleted < batch:
            return total


@dataclasses.dataclass(frozen=True)
class WriterStats:
    """Counters since start. `dropped`: refused because the queue was full or closed;
    `failed`: lost because the database write raised."""

    written: int = 0
    dropped: int = 0
    failed: int = 0
    pruned: int = 0
