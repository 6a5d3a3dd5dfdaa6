"""Queries for organization configurations (the organization_configs table). Never commits.

Writes are compare-and-set: an UPDATE only matches the version the writer read, and the first
write's INSERT only succeeds while no row exists. Of two concurrent writers based on the same
version, the second therefore changes nothing and learns it, on SQLite and PostgreSQL alike,
whatever else serializes them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from luman.server.db.models import OrganizationConfig

_configs = OrganizationConfig.__table__.c


class ConfigRow(NamedTuple):
    """A stored configuration: the canonical JSON document and who wrote which version when."""

    document: str
    version: int
    update_time: dt.datetime
    updated_by: uuid.UUID


_CURRENT = select(
    _configs.document, _configs.version, _configs.update_time, _configs.updated_by
).where(_configs.organization_id == bindparam("organization_id"))


def current(conn: Connection | Session, organization_id: uuid.UUID) -> ConfigRow | None:
    """The stored configuration, or None when it was never written."""
    row = conn.execute(_CURRENT, {"organization_id": organization_id}).first()
    return None if row is None else ConfigRow._make(row)


def insert_first(session: Session, organization_id: uuid.UUID, row: ConfigRow) -> bool:
    """Store the first version; False when a row exists already (another writer's first).

    In a savepoint, so that the losing INSERT leaves the transaction usable on PostgreSQL.
    """
    try:
        with session.begin_nested():
            session.execute(
                insert(OrganizationConfig).values(organization_id=organization_id, **row._asdict())
            )
    except IntegrityError as exc:
        if _is_existing_row(exc):
            return False
        raise
    return True


def replace_if_version(
    session: Session, organization_id: uuid.UUID, expected_version: int, row: ConfigRow
) -> bool:
    """Replace the stored version `expected_version` with `row`; False when it is no longer the
    stored one."""
    result = session.execute(
        update(OrganizationConfig)
        .where(
            OrganizationConfig.organization_id == organization_id,
            OrganizationConfig.version == expected_version,
        )
        .values(**row._asdict())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def _is_existing_row(exc: IntegrityError) -> bool:
    """The primary key refused the INSERT. PostgreSQL names the constraint; SQLite the column
    (db/integrity.py)."""
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name is not None:
        return bool(name == "pk_organization_configs")
    return "UNIQUE constraint failed: organization_configs.organization_id" in str(exc.orig)
