"""Sessions: ListSessions, RevokeSession and LogoutAll through the real server on SQLite and
PostgreSQL. Access tokens are used once before each revocation, so the verified-token cache
(on in the test settings) holds them: a refusal right after shows the cache was invalidated.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App
from tests.support import (
    PASSWORD,
    FakeClock,
    RichError,
    bearer,
    get_me,
    register,
    rich_error,
    unique_email,
)

Stub = auth_service_pb2_grpc.AuthServiceStub
USER_AGENT = "sessions-test/1.0"


@pytest.fixture
def agent_auth(app: App) -> Iterator[Stub]:
    """A stub whose channel sends its own user agent."""
    options = [("grpc.primary_user_agent", USER_AGENT)]
    with grpc.insecure_channel(f"127.0.0.1:{app.port}", options=options) as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


def _login(auth: Stub, email: str) -> auth_service_pb2.LoginResponse:
    response: auth_service_pb2.LoginResponse = auth.Login(
        auth_service_pb2.LoginRequest(email=email, password=PASSWORD)
    )
    return response


def _cli_token(auth: Stub, email: str) -> str:
    response = auth.CliLogin(auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD))
    return str(response.token)


def _list(auth: Stub, token: str, **request: object) -> auth_service_pb2.ListSessionsResponse:
    response: auth_service_pb2.ListSessionsResponse = auth.ListSessions(
        auth_service_pb2.ListSessionsRequest(**request),  # type: ignore[arg-type]
        metadata=bearer(token),
    )
    return response


def _session_id(auth: Stub, access_token: str) -> str:
    (current,) = [s for s in _list(auth, access_token).sessions if s.current]
    return str(current.id)


def _revoke(auth: Stub, token: str, session_id: str) -> None:
    auth.RevokeSession(
        auth_service_pb2.RevokeSessionRequest(session_id=session_id), metadata=bearer(token)
    )


def _logout_all(auth: Stub, token: str, **request: bool) -> auth_service_pb2.LogoutAllResponse:
    response: auth_service_pb2.LogoutAllResponse = auth.LogoutAll(
        auth_service_pb2.LogoutAllRequest(**request), metadata=bearer(token)
    )
    return response


def _refresh(auth: Stub, token: str) -> auth_service_pb2.RefreshTokenResponse:
    response: auth_service_pb2.RefreshTokenResponse = auth.RefreshToken(
        auth_service_pb2.RefreshTokenRequest(refresh_token=token)
    )
    return response


def _error(call: Callable[[], object]) -> RichError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return rich_error(caught.value)


def _revoked(call: Callable[[], object]) -> None:
    error = _error(call)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")


# --- ListSessions -----------------------------------------------------------------------------


def test_list_sessions_shows_each_sign_in_with_its_client_and_the_current_one(
    agent_auth: Stub, auth: Stub, clock: FakeClock
) -> None:
    email = unique_email()
    first = register(agent_auth, email=email)
    clock.advance(minutes=5)
    second = _login(auth, email)
    _cli_token(auth, email)  # a CLI token is not a session
    clock.advance(minutes=5)
    _refresh(auth, second.tokens.refresh_token)

    listed = _list(auth, first.tokens.access_token).sessions

    assert [s.current for s in listed] == [True, False]
    one, two = listed
    assert one.client_ip == two.client_ip == "127.0.0.1"
    assert one.user_agent.startswith(USER_AGENT + " ")  # grpc appends its own
    assert two.user_agent.startswith("grpc-python/")
    assert one.create_time.ToDatetime(dt.UTC) == clock() - dt.timedelta(minutes=10)
    assert not one.HasField("last_refresh_time")
    assert two.last_refresh_time.ToDatetime(dt.UTC) == clock()
    uuid.UUID(one.id)
    # The other session sees itself as the current one.
    assert [s.current for s in _list(auth, second.tokens.access_token).sessions] == [False, True]


def test_list_sessions_pages_oldest_first_and_leaves_out_expired_ones(
    auth: Stub, clock: FakeClock
) -> None:
    email = unique_email()
    register(auth, email=email)
    clock.advance(days=6)  # the first sign-in's refresh token expires in a day
    for _ in range(3):
        _login(auth, email)
    token = _cli_token(auth, email)  # outlives the access tokens

    page = _list(auth, token, page_size=3)
    assert len(page.sessions) == 3
    assert page.next_page_token
    rest = _list(auth, token, page_size=3, page_token=page.next_page_token)
    assert len(rest.sessions) == 1
    assert not rest.next_page_token
    assert len({s.id for s in [*page.sessions, *rest.sessions]}) == 4

    clock.advance(days=1)  # the first sign-in is over
    assert len(_list(auth, token).sessions) == 3


def test_list_sessions_with_a_cli_token_has_no_current_session(auth: Stub) -> None:
    email = unique_email()
    register(auth, email=email)
    listed = _list(auth, _cli_token(auth, email)).sessions
    assert len(listed) == 1
    assert not listed[0].current


def test_list_sessions_shows_only_the_callers_own(auth: Stub) -> None:
    register(auth)
    mine = register(auth).tokens.access_token
    assert len(_list(auth, mine).sessions) == 1


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [({"page_size": -1}, "page_size"), ({"page_token": "nonsense"}, "page_token")],
)
def test_list_sessions_bad_input_names_the_field(
    auth: Stub, request_fields: dict[str, object], field: str
) -> None:
    token = register(auth).tokens.access_token
    error = _error(lambda: _list(auth, token, **request_fields))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == {field}


# --- RevokeSession ----------------------------------------------------------------------------


def test_revoke_session_ends_its_refresh_and_access_tokens_at_once(auth: Stub) -> None:
    email = unique_email()
    keep = register(auth, email=email).tokens
    gone = _login(auth, email).tokens
    get_me(auth, gone.access_token)  # now in the verified-token cache
    session_id = _session_id(auth, gone.access_token)

    _revoke(auth, keep.access_token, session_id)

    _revoked(lambda: get_me(auth, gone.access_token))
    _revoked(lambda: _refresh(auth, gone.refresh_token))
    assert [s.id for s in _list(auth, keep.access_token).sessions] == [
        _session_id(auth, keep.access_token)
    ]
    get_me(auth, keep.access_token)
    _refresh(auth, keep.refresh_token)

    again = _error(lambda: _revoke(auth, keep.access_token, session_id))
    assert (again.code, again.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_ALREADY_REVOKED",
    )


def test_revoking_the_current_session_ends_the_calling_token(auth: Stub) -> None:
    tokens = register(auth).tokens
    _revoke(auth, tokens.access_token, _session_id(auth, tokens.access_token))
    _revoked(lambda: get_me(auth, tokens.access_token))


def test_another_users_session_is_not_found_like_an_unknown_one(auth: Stub) -> None:
    victim = register(auth).tokens
    victim_session = _session_id(auth, victim.access_token)
    attacker = register(auth).tokens.access_token

    theirs = _error(lambda: _revoke(auth, attacker, victim_session))
    unknown = _error(lambda: _revoke(auth, attacker, str(uuid.uuid4())))

    assert (theirs.code, theirs.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    assert (theirs.code, theirs.reason, theirs.message) == (
        unknown.code,
        unknown.reason,
        unknown.message,
    )
    get_me(auth, victim.access_token)
    _refresh(auth, victim.refresh_token)


@pytest.mark.parametrize("session_id", ["", "not-a-uuid", "123"])
def test_revoke_session_malformed_id_is_invalid_argument_naming_the_field(
    auth: Stub, session_id: str
) -> None:
    token = register(auth).tokens.access_token
    error = _error(lambda: _revoke(auth, token, session_id))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == {"session_id"}


# --- LogoutAll --------------------------------------------------------------------------------


def test_logout_all_refuses_every_earlier_token_at_once_and_keeps_cli_tokens(
    auth: Stub, clock: FakeClock
) -> None:
    email = unique_email()
    first = register(auth, email=email).tokens
    second = _login(auth, email).tokens
    cli = _cli_token(auth, email)
    for token in (first.access_token, second.access_token, cli):
        get_me(auth, token)  # cached

    result = _logout_all(auth, first.access_token)

    assert (result.revoked_session_count, result.revoked_cli_token_count) == (2, 0)
    for access in (first.access_token, second.access_token):
        _revoked(functools.partial(get_me, auth, access))
    for refresh in (first.refresh_token, second.refresh_token):
        _revoked(functools.partial(_refresh, auth, refresh))
    get_me(auth, cli)
    assert list(_list(auth, cli).sessions) == []

    # No clock movement: a sign-in in the very same instant works, and keeps working.
    again = _login(auth, email).tokens
    get_me(auth, again.access_token)
    renewed = _refresh(auth, again.refresh_token).tokens
    get_me(auth, renewed.access_token)
    clock.advance(minutes=1)
    get_me(auth, renewed.access_token)
    assert len(_list(auth, renewed.access_token).sessions) == 1


def test_logout_all_within_a_second_tells_earlier_and_later_tokens_apart(
    auth: Stub, clock: FakeClock
) -> None:
    email = unique_email()
    clock.advance(seconds=0.2)
    before = register(auth, email=email).tokens
    clock.advance(seconds=0.3)  # same whole second: both tokens would carry the same iat
    _logout_all(auth, before.access_token)
    clock.advance(seconds=0.3)
    after = _login(auth, email).tokens

    _revoked(lambda: get_me(auth, before.access_token))
    get_me(auth, after.access_token)
    clock.advance(seconds=1)
    get_me(auth, _refresh(auth, after.refresh_token).tokens.access_token)


def test_logout_all_with_cli_tokens_revokes_them_too(auth: Stub) -> None:
    email = unique_email()
    tokens = register(auth, email=email).tokens
    cli_tokens = [_cli_token(auth, email) for _ in range(2)]
    for token in cli_tokens:
        get_me(auth, token)  # cached

    result = _logout_all(auth, cli_tokens[0], include_cli_tokens=True)

    assert (result.revoked_session_count, result.revoked_cli_token_count) == (1, 2)
    for token in (*cli_tokens, tokens.access_token):
        _revoked(functools.partial(get_me, auth, token))
    get_me(auth, _cli_token(auth, email))  # a new CLI login works


def test_logout_all_leaves_other_users_alone(auth: Stub) -> None:
    other = register(auth).tokens
    _logout_all(auth, register(auth).tokens.access_token)
    get_me(auth, other.access_token)
    _refresh(auth, other.refresh_token)


def test_logout_all_needs_a_token(auth: Stub) -> None:
    error = _error(lambda: auth.LogoutAll(auth_service_pb2.LogoutAllRequest()))
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
