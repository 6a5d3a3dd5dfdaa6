"""ListSessions, RevokeSession and LogoutAll over gRPC: AuthServicer inherits these methods.

Kept apart from servicer.py so the sessions feature reads as one piece; the rules are in
auth/sessions.py.
"""

from __future__ import annotations

import datetime as dt
import uuid

import grpc

from luman.auth.v1 import auth_pb2, auth_service_pb2
from luman.interceptors import call_context
from luman.interceptors.client_address import Caller
from luman.interceptors.principal import current_principal
from luman.server.auth.service import NO_CALLER
from luman.server.auth.sessions import PageKey, SessionService, SessionView
from luman.server.convert import write_timestamp
from luman.server.pagination import clamp_page_size, decode_page_token, encode_page_token
from luman.server.validation import Violations, check_uuid

# Page tokens name the listing, so one from ListSessions cannot be replayed elsewhere.
_PAGE_SCOPE = "sessions"


def current_caller() -> Caller:
    """The client address and user agent of the call being served (call_context.py), which a
    sign-in records for ListSessions."""
    record = call_context.optional_call()
    return NO_CALLER if record is None else record.caller


def session_to_proto(view: SessionView) -> auth_pb2.Session:
    message = auth_pb2.Session(
        id=str(view.id),
        client_ip=view.client_ip,
        user_agent=view.user_agent,
        current=view.current,
    )
    write_timestamp(message.create_time, view.create_time)
    if view.last_refresh_time is not None:
        write_timestamp(message.last_refresh_time, view.last_refresh_time)
    return message


def _page_token(key: PageKey | None) -> str:
    return "" if key is None else encode_page_token(_PAGE_SCOPE, [key[0].isoformat(), str(key[1])])


def _page_key(v: Violations, token: str) -> PageKey | None:
    parts = decode_page_token(v, token, _PAGE_SCOPE, 2)
    if parts is None:
        return None
    try:
        after = dt.datetime.fromisoformat(parts[0])
        if after.tzinfo is None:  # ours always carry UTC: a naive time is forged
            raise ValueError("naive time")
        return after.astimezone(dt.UTC), uuid.UUID(parts[1])
    except (ValueError, OverflowError):
        v.add("page_token", "is not a page token from this listing")
        return None


class SessionRpcs:
    """The session RPCs of AuthServicer; `_session_service` is set by its constructor."""

    _session_service: SessionService

    def ListSessions(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.ListSessionsRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.ListSessionsResponse:
        v = Violations()
        limit = clamp_page_size(v, request.page_size)
        after = _page_key(v, request.page_token)
        v.raise_if_any()
        page = self._session_service.list(current_principal(), after, limit)
        return auth_service_pb2.ListSessionsResponse(
            sessions=[session_to_proto(view) for view in page.sessions],
            next_page_token=_page_token(page.next_key),
        )

    def RevokeSession(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.RevokeSessionRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.RevokeSessionResponse:
        v = Violations()
        session_id = check_uuid(v, "session_id", request.session_id)
        v.raise_if_any()
        assert session_id is not None  # check_uuid added a violation otherwise
        self._session_service.revoke(current_principal(), session_id)
        return auth_service_pb2.RevokeSessionResponse()

    def LogoutAll(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.LogoutAllRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.LogoutAllResponse:
        result = self._session_service.logout_all(current_principal(), request.include_cli_tokens)
        return auth_service_pb2.LogoutAllResponse(
            revoked_session_count=result.revoked_sessions,
            revoked_cli_token_count=result.revoked_cli_tokens,
        )
