"""Typed results of the session calls (ListSessions, LogoutAll)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from luman.auth.v1 import auth_pb2, auth_service_pb2


@dataclasses.dataclass(frozen=True)
class Session:
    """One sign-in (Register or Login) of the caller that is neither revoked nor expired."""

    id: str
    create_time: dt.datetime | None
    last_refresh_time: dt.datetime | None  # None: never refreshed
    client_ip: str
    user_agent: str
    current: bool  # the sign-in whose access token made the call

    @classmethod
    def from_proto(cls, session: auth_pb2.Session) -> Session:
        return cls(
            id=session.id,
            create_time=(
                session.create_time.ToDatetime(tzinfo=dt.UTC)
                if session.HasField("create_time")
                else None
            ),
            last_refresh_time=(
                session.last_refresh_time.ToDatetime(tzinfo=dt.UTC)
                if session.HasField("last_refresh_time")
                else None
            ),
            client_ip=session.client_ip,
            user_agent=session.user_agent,
            current=session.current,
        )


@dataclasses.dataclass(frozen=True)
class LogoutAllResult:
    """What LogoutAll revoked."""

    revoked_sessions: int
    revoked_cli_tokens: int

    @classmethod
    def from_proto(cls, response: auth_service_pb2.LogoutAllResponse) -> LogoutAllResult:
        return cls(response.revoked_session_count, response.revoked_cli_token_count)
