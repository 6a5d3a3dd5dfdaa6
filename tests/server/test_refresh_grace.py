"""The refresh-token grace (REFRESH_REUSE_GRACE_SECONDS), through real servers on SQLite and
PostgreSQL: a just-rotated refresh token presented again within the grace gets the same new
pair; any other reuse still revokes the whole sign-in. Time moves only through the FakeClock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from luman.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import ConfigError, Settings
from luman.server.db.session import Sessions
from tests.support import FakeClock, bearer, get_me, register, rich_error

Stub = auth_service_pb2_grpc.AuthServiceStub
GRACE = 10  # the default, which the test settings keep


def _refresh(auth: Stub, token: str) -> auth_pb2.TokenPair:
    response = auth.RefreshToken(auth_service_pb2.RefreshTokenRequest(refresh_token=token))
    return response.tokens


def _refused(call: Callable[[], object]) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    return error.reason


def test_settings_has_the_default_grace(settings: Settings) -> None:
    assert settings.refresh_reuse_grace_seconds == GRACE


def test_refresh_again_within_the_grace_returns_the_same_pair(auth: Stub, clock: FakeClock) -> None:
    first = register(auth).tokens
    clock.advance(minutes=1)
    renewed = _refresh(auth, first.refresh_token)
    clock.advance(seconds=GRACE - 1)

    again = _refresh(auth, first.refresh_token)

    # Byte for byte: the same claims (jti, iat, exp) signed with the same key.
    assert again == renewed
    assert again.access_token != first.access_token
    # The sign-in lives on: the pair works, and its refresh token rotates normally.
    get_me(auth, again.access_token)
    get_me(auth, first.access_token)
    newest = _refresh(auth, again.refresh_token)
    get_me(auth, newest.access_token)


def test_parallel_refreshes_of_one_token_all_get_one_pair_and_keep_the_session(
    auth: Stub,
) -> None:
    tokens = register(auth).tokens
    request = auth_service_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token)
    barrier = threading.Barrier(5)

    def refresh() -> auth_pb2.TokenPair:
        barrier.wait()
        response: auth_service_pb2.RefreshTokenResponse = auth.RefreshToken(request)
        return response.tokens

    with ThreadPoolExecutor(max_workers=5) as pool:
        pairs = list(pool.map(lambda _: refresh(), range(5)))

    assert len({(p.access_token, p.refresh_token) for p in pairs}) == 1
    get_me(auth, tokens.access_token)
    get_me(auth, pairs[0].access_token)
    get_me(auth, _refresh(auth, pairs[0].refresh_token).access_token)


def test_reuse_after_the_grace_revokes_the_whole_sign_in(auth: Stub, clock: FakeClock) -> None:
    first = register(auth).tokens
    renewed = _refresh(auth, first.refresh_token)
    clock.advance(seconds=GRACE)  # the grace is over at exactly GRACE seconds

    assert _refused(lambda: _refresh(auth, first.refresh_token)) == "REFRESH_TOKEN_REUSED"
    assert _refused(lambda: _refresh(auth, renewed.refresh_token)) == "TOKEN_REVOKED"
    for access in (first.access_token, renewed.access_token):
        assert _refused(functools.partial(get_me, auth, access)) == "TOKEN_REVOKED"


def test_no_grace_once_the_new_refresh_token_has_been_used(auth: Stub) -> None:
    first = register(auth).tokens
    second = _refresh(auth, first.refresh_token)
    third = _refresh(auth, second.refresh_token)

    # Within the grace in time, but `first` is two rotations behind: it was copied.
    assert _refused(lambda: _refresh(auth, first.refresh_token)) == "REFRESH_TOKEN_REUSED"
    assert _refused(lambda: get_me(auth, third.access_token)) == "TOKEN_REVOKED"


def test_the_grace_pair_is_not_handed_out_after_the_sign_in_is_revoked(
    auth: Stub, clock: FakeClock
) -> None:
    first = register(auth).tokens
    renewed = _refresh(auth, first.refresh_token)
    auth.LogoutAll(auth_service_pb2.LogoutAllRequest(), metadata=bearer(renewed.access_token))
    assert _refused(lambda: _refresh(auth, first.refresh_token)) == "TOKEN_REVOKED"


@pytest.fixture
def start_server(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[Callable[..., Stub]]:
    with contextlib.ExitStack() as stack:

        def start(**changes: Any) -> Stub:
            app = build_server(
                dataclasses.replace(settings, **changes), sessions, clock=clock, hasher=hasher
            )
            app.start()
            stack.callback(app.stop, None)
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{app.port}"))
            return auth_service_pb2_grpc.AuthServiceStub(channel)

        yield start


def test_grace_zero_turns_it_off(start_server: Callable[..., Stub]) -> None:
    auth = start_server(refresh_reuse_grace_seconds=0)
    first = register(auth).tokens
    renewed = _refresh(auth, first.refresh_token)
    assert _refused(lambda: _refresh(auth, first.refresh_token)) == "REFRESH_TOKEN_REUSED"
    assert _refused(lambda: get_me(auth, renewed.access_token)) == "TOKEN_REVOKED"


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, 10), ("0", 0), ("1", 1), ("60", 60), (" 5 ", 5)]
)
def test_grace_setting_is_read_from_the_environment(
    tmp_path: object, value: str | None, seconds: int
) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path)}
    if value is not None:
        env["REFRESH_REUSE_GRACE_SECONDS"] = value
    assert Settings.from_env(env).refresh_reuse_grace_seconds == seconds


@pytest.mark.parametrize("value", ["-1", "61", "10s", "ten"])
def test_bad_grace_setting_names_the_variable(tmp_path: object, value: str) -> None:
    with pytest.raises(ConfigError, match="REFRESH_REUSE_GRACE_SECONDS"):
        Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path), "REFRESH_REUSE_GRACE_SECONDS": value})
