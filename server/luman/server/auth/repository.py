"""Queries for users, login sessions, refresh tokens and CLI tokens. Never commits."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from luman.interceptors.errors import AlreadyExistsError
from luman.server.db.integrity import violates
from luman.server.db.models import CliToken, LoginSession, RefreshToken, User


class AuthRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def user_by_email(self, email: str) -> User | None:
        return self._session.scalars(select(User).where(User.email == email)).one_or_none()

    def user(self, user_id: uuid.UUID) -> User | None:
        return self._session.get(User, user_id)

    def add_user(self, user: User) -> User:
        self._session.add(user)
        try:
            self._session.flush()
        except IntegrityError as exc:
            if violates(exc, "uq_users_email"):
                raise AlreadyExistsError(
                    "EMAIL_TAKEN", "an account with this email already exists"
                ) from None
            raise
        return user

    def add_login_session(self, user_id: uuid.UUID, now: dt.datetime) -> LoginSession:
        login = LoginSession(id=uuid.uuid4(), user_id=user_id, create_time=now)
        self._session.add(login)
        self._session.flush()
        return login

    def add_refresh_token(
        self, jti: uuid.UUID, session_id: uuid.UUID, now: dt.datetime, expire_time: dt.datetime
    ) -> None:
        self._session.add(
            RefreshToken(jti=jti, session_id=session_id, create_time=now, expire_time=expire_time)
        )
        self._session.flush()

    def login_session(self, session_id: uuid.UUID) -> LoginSession | None:
        return self._session.get(LoginSession, session_id)

    def refresh_token(self, jti: uuid.UUID) -> RefreshToken | None:
        return self._session.get(RefreshToken, jti)

    def use_refresh_token(self, jti: uuid.UUID, now: dt.datetime) -> bool:
        """Mark the token used; False when it was already used. One conditional UPDATE, so two
        concurrent refreshes with the same token cannot both win."""
        result = self._session.execute(
            update(RefreshToken)
            .where(RefreshToken.jti == jti, RefreshToken.use_time.is_(None))
            .values(use_time=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def revoke_login_session(self, session_id: uuid.UUID, now: dt.datetime) -> None:
        self._session.execute(
            update(LoginSession)
            .where(LoginSession.id == session_id, LoginSession.revoke_time.is_(None))
            .values(revoke_time=now)
            .execution_options(synchronize_session=False)
        )

    def add_cli_token(self, token: CliToken) -> CliToken:
        self._session.add(token)
        self._session.flush()
        return token

    def touch_cli_token(self, token_id: uuid.UUID, now: dt.datetime) -> None:
        self._session.execute(
            update(CliToken)
            .where(CliToken.id == token_id)
            .values(last_use_time=now)
            .execution_options(synchronize_session=False)
        )

    def revoke_cli_token(self, token_id: uuid.UUID, now: dt.datetime) -> bool:
        result = self._session.execute(
            update(CliToken)
            .where(CliToken.id == token_id, CliToken.revoke_time.is_(None))
            .values(revoke_time=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]
