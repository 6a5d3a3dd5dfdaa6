"""Queries for managing personal (CLI) tokens: list, find, revoke. Never commits."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from luman.server.db.models import CliToken

PageKey = tuple[dt.datetime, uuid.UUID]


class CliTokenRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def owned(self, user_id: uuid.UUID, token_id: uuid.UUID) -> CliToken | None:
        """The token if it belongs to `user_id`: someone else's is as absent as an unknown one."""
        return self._session.scalars(
            select(CliToken).where(CliToken.id == token_id, CliToken.user_id == user_id)
        ).one_or_none()

    def active_page(self, user_id: uuid.UUID, after: PageKey | None, limit: int) -> list[CliToken]:
        """The user's tokens that are not revoked, in (create time, id) order, after `after`."""
        query = select(CliToken).where(CliToken.user_id == user_id, CliToken.revoke_time.is_(None))
        if after is not None:
            create_time, token_id = after
            query = query.where(
                or_(
                    CliToken.create_time > create_time,
                    and_(CliToken.create_time == create_time, CliToken.id > token_id),
                )
            )
        return list(
            self._session.scalars(query.order_by(CliToken.create_time, CliToken.id).limit(limit))
        )

    def revoke(self, token_id: uuid.UUID, now: dt.datetime) -> bool:
        """False when the token was already revoked: one conditional UPDATE, so two concurrent
        revocations cannot both succeed."""
        result = self._session.execute(
            update(CliToken)
            .where(CliToken.id == token_id, CliToken.revoke_time.is_(None))
            .values(revoke_time=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def revoke_all(self, user_id: uuid.UUID, now: dt.datetime) -> int:
        result = self._session.execute(
            update(CliToken)
            .where(CliToken.user_id == user_id, CliToken.revoke_time.is_(None))
            .values(revoke_time=now)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def touch(self, token_id: uuid.UUID, now: dt.datetime, ip: str | None) -> None:
        self._session.execute(
            update(CliToken)
            .where(CliToken.id == token_id)
            .values(last_use_time=now, last_use_ip=ip)
            .execution_options(synchronize_session=False)
        )
