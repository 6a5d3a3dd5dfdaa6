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

    def lock_active(self, user_id: uuid.UUID, token_id: uuid.UUID) -> CliToken | None:
        """The user's token, locked until the transaction ends (FOR UPDATE on PostgreSQL; SQLite
        write transactions are serialized already), or None when it is missing or revoked.

        CreateCliToken locks its parent so that a revocation running at the same time either
        finishes first (the parent is then seen revoked) or waits for the child's commit (and
        then finds the child among the descendants it revokes)."""
        return self._session.scalars(
            select(CliToken)
            .where(
                CliToken.id == token_id,
                CliToken.user_id == user_id,
                CliToken.revoke_time.is_(None),
            )
            .with_for_update()
        ).one_or_none()

    def revoke_descendants(
        self, user_id: uuid.UUID, token_id: uuid.UUID, now: dt.datetime
    ) -> list[uuid.UUID]:
        """Revoke every token created, directly or through others, with `token_id`; the ids of
        those this call revoked. One query per generation: lineages are a few tokens deep.

        Already-revoked descendants are walked through too, so that a child minted by one of
        them is still found."""
        revoked: list[uuid.UUID] = []
        seen = {token_id}
        parents = [token_id]
        while parents:
            children = list(
                self._session.execute(
                    select(CliToken.id, CliToken.revoke_time).where(
                        CliToken.user_id == user_id, CliToken.parent_id.in_(parents)
                    )
                )
            )
            parents = [child_id for child_id, _ in children if child_id not in seen]
            seen.update(parents)
            active = [child_id for child_id, revoke_time in children if revoke_time is None]
            if active:
                self._session.execute(
                    update(CliToken)
                    .where(CliToken.id.in_(active), CliToken.revoke_time.is_(None))
                    .values(revoke_time=now)
                    .execution_options(synchronize_session=False)
                )
                revoked.extend(active)
        return revoked

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
