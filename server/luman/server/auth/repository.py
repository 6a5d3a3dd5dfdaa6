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

    def lock_user(self, user_id: uuid.UUID, *, key_share: bool = False) -> User | None:
        """The user, its row locked until commit (PostgreSQL: FOR UPDATE; SQLite's write
        transactions are serial already): a sign-in and a LogoutAll of that user then commit
        one after the other, never interleaved. `key_share`: FOR NO KEY UPDATE, which still
        orders against those but lets inserts that merely reference the user (their foreign-key
        checks take FOR KEY SHARE) go ahead."""
        lock: bool | dict[str, bool] = {"key_share": True} if key_share else True
        return self._session.get(User, user_id, with_for_update=lock, populate_existing=True)

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

    def add_login_session(self, login: LoginSession) -> LoginSession:
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

    def lock_refresh_token(self, jti: uuid.UUID) -> RefreshToken | None:
        """The refresh token's row, locked until the transaction ends (PostgreSQL; SQLite's
        write transactions hold the database lock already), as last committed: concurrent
        refreshes of one token take turns, and each sees what the one before it did."""
        return self._session.scalars(
            select(RefreshToken)
            .where(RefreshToken.jti == jti)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()

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
