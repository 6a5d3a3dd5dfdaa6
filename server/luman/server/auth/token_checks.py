"""The reads behind token verification and GetMe: one query per uncached call.

These run on every call whose token is not in the verified-token cache, so they skip the ORM:
prebuilt Core statements (compiled once, cached by SQLAlchemy) executed on a plain Connection,
returning plain frozen records. A login session or CLI token is read together with its user, so
the same query also answers GetMe. Read-only; the caller owns the connection.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select

from luman.server.db.models import CliToken, LoginSession, User

_users = User.__table__.c
_sessions = LoginSession.__table__.c
_cli_tokens = CliToken.__table__.c
_USER_COLUMNS = (
    _users.id,
    _users.email,
    _users.name,
    _users.create_time,
    _users.email_verify_time,
)

_LOGIN_SESSION_CHECK = (
    select(_sessions.revoke_time, _users.tokens_not_before, *_USER_COLUMNS)
    .select_from(LoginSession.__table__.join(User.__table__, _users.id == _sessions.user_id))
    .where(_sessions.id == bindparam("session_id"))
)
_CLI_TOKEN_CHECK = (
    select(
        _cli_tokens.id,
        _cli_tokens.token_hash,
        _cli_tokens.revoke_time,
        _cli_tokens.last_use_time,
        _cli_tokens.last_use_ip,
        _cli_tokens.expire_time,
        _cli_tokens.scopes,
        *_USER_COLUMNS,
    )
    .select_from(CliToken.__table__.join(User.__table__, _users.id == _cli_tokens.user_id))
    .where(_cli_tokens.token_hash == bindparam("token_hash"))
)
_USER = select(*_USER_COLUMNS).where(_users.id == bindparam("user_id"))


@dataclasses.dataclass(frozen=True)
class UserRecord:
    """What the API shows of a user (no password hash): plain values, safe to cache and share."""

    id: uuid.UUID
    email: str
    name: str
    create_time: dt.datetime
    email_verify_time: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class LoginSessionCheck:
    """What an access-token check needs: the session's revocation, the user's LogoutAll
    not-before time and the user."""

    revoke_time: dt.datetime | None
    tokens_not_before: dt.datetime | None
    user: UserRecord


@dataclasses.dataclass(frozen=True)
class CliTokenCheck:
    """What a CLI-token check needs: the token's state and its user."""

    id: uuid.UUID
    token_hash: str
    revoke_time: dt.datetime | None
    last_use_time: dt.datetime | None
    last_use_ip: str | None
    expire_time: dt.datetime | None
    scopes: str  # space-separated
    user: UserRecord


def login_session_check(conn: Connection, session_id: uuid.UUID) -> LoginSessionCheck | None:
    row = conn.execute(_LOGIN_SESSION_CHECK, {"session_id": session_id}).first()
    return None if row is None else LoginSessionCheck(row[0], row[1], _user(row, 2))


def cli_token_check(conn: Connection, token_hash: str) -> CliTokenCheck | None:
    row = conn.execute(_CLI_TOKEN_CHECK, {"token_hash": token_hash}).first()
    if row is None:
        return None
    return CliTokenCheck(*row[:7], user=_user(row, 7))


def user_record(conn: Connection, user_id: uuid.UUID) -> UserRecord | None:
    row = conn.execute(_USER, {"user_id": user_id}).first()
    return None if row is None else _user(row, 0)


def _user(row: Sequence[Any], start: int) -> UserRecord:
    return UserRecord(*row[start : start + len(_USER_COLUMNS)])
