"""Sessions: a user's sign-ins, listed, revoked one at a time, or all at once (LogoutAll).

A session is one Register or Login (a LoginSession row) and the chain of refresh tokens it
rotated through. Revoking it refuses its refresh tokens at once and its access tokens on their
next call: the access-token check reads the session (token_checks.py), and the verified-token
cache forgets the session's tokens once the revocation has committed.

LogoutAll revokes everything the user signed in with before now:
- It sets the user's not-before time; the access-token check refuses a token whose iat is
  earlier, and so does RefreshToken.
- It revokes every open session of the user, so that ListSessions shows none of them.
- With include_cli_tokens, it revokes the user's CLI tokens too (they carry no iat).

What guarantees it, with replicas whose clocks disagree: the session revocation, not the clocks.
A sign-in and a LogoutAll of one user commit one after the other: both take the user's row first
(LogoutAll updates it, Login locks it: AuthRepository.lock_user; SQLite runs one write
transaction at a time). A sign-in that commits first is one of the sessions LogoutAll revokes,
whatever iat its replica's clock gave its tokens (the access-token check reads the session). A
sign-in that commits after reads the new not-before time and issues from it at the earliest
(service._issue_time), so its tokens work whatever the clock of the replica that ran LogoutAll.
The not-before time comes from the process clock, and a skewed one does no harm: it only ever
refuses tokens whose session LogoutAll revoked anyway. The one clock bound: a replica whose
clock is more than the 60 seconds of iat leeway behind the one that ran LogoutAll issues tokens
"from the future" that verification refuses until its clock catches up; keep replicas' clocks
synchronised (NTP) well within that.

iat has whole seconds, so the not-before time is the whole second after LogoutAll: every token
issued up to LogoutAll, in the same second included, is earlier. A token issued after it, in
that same second, gets the not-before time itself as its issue time (service._issue_time), at
most one second ahead of the clock, well within the 60 seconds of skew verification allows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Select, literal, or_, select, tuple_, update
from sqlalchemy.orm import Session

from luman.interceptors.errors import FailedPreconditionError, NotFoundError
from luman.interceptors.principal import Credential, Principal
from luman.server.audit.record import Event, record
from luman.server.auth.cli_token_repository import CliTokenRepository
from luman.server.auth.credential_locks import lock_user_against_mints
from luman.server.auth.token_cache import TokenCache
from luman.server.clock import Clock
from luman.server.db.models import LoginSession, User
from luman.server.db.session import Sessions

PageKey = tuple[dt.datetime, uuid.UUID]


@dataclasses.dataclass(frozen=True)
class SessionView:
    """One open sign-in as ListSessions shows it."""

    id: uuid.UUID
    create_time: dt.datetime
    last_refresh_time: dt.datetime | None
    client_ip: str
    user_agent: str
    current: bool


@dataclasses.dataclass(frozen=True)
class SessionPage:
    sessions: list[SessionView]
    next_key: PageKey | None


@dataclasses.dataclass(frozen=True)
class LogoutAllResult:
    revoked_sessions: int
    revoked_cli_tokens: int


def not_before_after(now: dt.datetime) -> dt.datetime:
    """The whole second after `now`: the first iat a token issued after `now` can be told by."""
    return now.replace(microsecond=0) + dt.timedelta(seconds=1)


def _session_not_found() -> NotFoundError:
    # Someone else's session and no session at all answer alike: ids cannot be probed.
    return NotFoundError("SESSION_NOT_FOUND", "session not found")


class SessionService:
    """ListSessions, RevokeSession and LogoutAll. `token_cache` is AuthService's verified-token
    cache: every revocation here forgets what it cached, once committed."""

    def __init__(self, sessions: Sessions, clock: Clock, token_cache: TokenCache) -> None:
        self._sessions = sessions
        self._clock = clock
        self._token_cache = token_cache

    def list(self, principal: Principal, after: PageKey | None, limit: int) -> SessionPage:
        """The caller's open sessions (not revoked, not expired), oldest first."""
        now = self._clock()
        with self._sessions.read.begin() as session:
            rows = SessionRepository(session).open_sessions(
                principal.user_id, now, after, limit + 1
            )
        current = (
            principal.credential_id if principal.credential is Credential.ACCESS_TOKEN else None
        )
        views = [
            SessionView(
                id=row.id,
                create_time=row.create_time,
                last_refresh_time=row.last_refresh_time,
                client_ip=row.client_ip,
                user_agent=row.user_agent,
                current=row.id == current,
            )
            for row in rows[:limit]
        ]
        next_key = (rows[limit - 1].create_time, rows[limit - 1].id) if len(rows) > limit else None
        return SessionPage(views, next_key)

    def revoke(self, principal: Principal, session_id: uuid.UUID) -> None:
        """Revoke one of the caller's sessions.

        Raises:
            NotFoundError: SESSION_NOT_FOUND, for another user's session too.
            FailedPreconditionError: SESSION_ALREADY_REVOKED.
        """
        now = self._clock()
        with self._sessions.write.begin() as session:
            login = session.get(LoginSession, session_id)
            if login is None or login.user_id != principal.user_id:
                raise _session_not_found()
            if login.revoke_time is not None:
                raise FailedPreconditionError(
                    "SESSION_ALREADY_REVOKED", "the session is already revoked"
                )
            login.revoke_time = now
            record(
                session,
                Event(
                    "session.revoked",
                    principal.user_id,
                    target_type="session",
                    target_id=str(session_id),
                ),
                now,
            )
        # Committed: its access tokens fail on their very next call here.
        self._token_cache.forget(credential_id=session_id)

    def logout_all(self, principal: Principal, include_cli_tokens: bool) -> LogoutAllResult:
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = SessionRepository(session)
            # The user's row even when the not-before time stays (two LogoutAlls in a second):
            # a token being minted meanwhile is then among those revoked (credential_locks.py).
            lock_user_against_mints(session, principal.user_id)
            repo.set_tokens_not_before(principal.user_id, not_before_after(now))
            revoked_sessions = repo.revoke_sessions(principal.user_id, now)
            revoked_cli_tokens = (
                CliTokenRepository(session).revoke_all(principal.user_id, now)
                if include_cli_tokens
                else 0
            )
            event = Event(
                "auth.signed_out_everywhere",
                principal.user_id,
                target_type="user",
                target_id=str(principal.user_id),
                details={
                    "sessions": revoked_sessions,
                    "cli_tokens": revoked_cli_tokens,
                    "include_cli_tokens": include_cli_tokens,
                },
            )
            record(session, event, now)
        # Committed: every cached token of the user is checked in full on its next call.
        self._token_cache.forget(user_id=principal.user_id)
        return LogoutAllResult(revoked_sessions, revoked_cli_tokens)


class SessionRepository:
    """Queries for a user's sessions. Never commits."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def open_sessions(
        self, user_id: uuid.UUID, now: dt.datetime, after: PageKey | None, limit: int
    ) -> list[LoginSession]:
        stmt: Select[Any] = (
            select(LoginSession)
            .where(
                LoginSession.user_id == user_id,
                LoginSession.revoke_time.is_(None),
                LoginSession.expire_time > now,
            )
            .order_by(LoginSession.create_time, LoginSession.id)
            .limit(limit)
        )
        if after is not None:
            # Typed literals: the keyset's time must be bound as the column stores it.
            key = tuple_(
                literal(after[0], LoginSession.create_time.type),
                literal(after[1], LoginSession.id.type),
            )
            stmt = stmt.where(tuple_(LoginSession.create_time, LoginSession.id) > key)
        return list(self._session.scalars(stmt))

    def set_tokens_not_before(self, user_id: uuid.UUID, not_before: dt.datetime) -> None:
        # Never moved back: two LogoutAlls in one second keep the later time.
        self._session.execute(
            update(User)
            .where(
                User.id == user_id,
                or_(User.tokens_not_before.is_(None), User.tokens_not_before < not_before),
            )
            .values(tokens_not_before=not_before)
            .execution_options(synchronize_session=False)
        )

    def revoke_sessions(self, user_id: uuid.UUID, now: dt.datetime) -> int:
        """Revoke the user's open sessions; the count is what ListSessions showed."""
        result = self._session.execute(
            update(LoginSession)
            .where(
                LoginSession.user_id == user_id,
                LoginSession.revoke_time.is_(None),
                LoginSession.expire_time > now,
            )
            .values(revoke_time=now)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
