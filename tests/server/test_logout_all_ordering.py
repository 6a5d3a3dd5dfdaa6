"""LogoutAll against sign-ins: ordered by the database, not by clocks (auth/sessions.py).

A sign-in whose password check straddles a LogoutAll gets tokens that work: the login reads
the user's not-before time in the transaction that starts its session, not before bcrypt. The
LogoutAll runs from inside the password check (a hasher hook), within one whole second of the
injected clock. With replicas whose clocks disagree, a sign-in before LogoutAll is refused and
one after it works, whichever replica runs ahead.

Through real servers on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import build_server
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.conftest import TEST_BCRYPT_ROUNDS
from tests.server import test_signing_keys
from tests.server.test_signing_keys import StartReplica
from tests.support import (
    PASSWORD,
    FakeClock,
    HookedHasher,
    bearer,
    register,
    rich_error,
    unique_email,
)

Stub = auth_service_pb2_grpc.AuthServiceStub
start_replica = test_signing_keys.start_replica  # the fixture: replicas on one database


class DuringCheckHasher(HookedHasher):
    """Runs `during` (once) inside the next bcrypt computation."""

    during: Callable[[], None] | None = None

    def on_bcrypt(self) -> None:
        action, self.during = self.during, None
        if action is not None:
            action()


@pytest.fixture
def hooked() -> Iterator[DuringCheckHasher]:
    hasher = DuringCheckHasher(TEST_BCRYPT_ROUNDS)
    yield hasher
    hasher.close()


@pytest.fixture
def hooked_auth(
    settings: Settings, sessions: Sessions, clock: FakeClock, hooked: DuringCheckHasher
) -> Iterator[Stub]:
    app = build_server(settings, sessions, clock=clock, hasher=hooked)
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield Stub(channel)
    finally:
        app.stop(None)


def test_a_login_finishing_after_a_logout_all_in_the_same_second_gets_working_tokens(
    hooked_auth: Stub, hooked: DuringCheckHasher, clock: FakeClock
) -> None:
    email = unique_email()
    clock.advance(seconds=0.1)
    before = register(hooked_auth, email=email).tokens

    def logout_all() -> None:
        clock.advance(seconds=0.2)
        hooked_auth.LogoutAll(
            auth_service_pb2.LogoutAllRequest(), metadata=bearer(before.access_token)
        )
        clock.advance(seconds=0.2)  # the login goes on in the same whole second

    hooked.during = logout_all
    after = hooked_auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))
    assert hooked.during is None  # the LogoutAll ran inside the password check

    me = hooked_auth.GetMe(
        auth_service_pb2.GetMeRequest(), metadata=bearer(after.tokens.access_token)
    )
    assert me.user.email == email
    with pytest.raises(grpc.RpcError) as caught:
        hooked_auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(before.access_token))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    refreshed = hooked_auth.RefreshToken(
        auth_service_pb2.RefreshTokenRequest(refresh_token=after.tokens.refresh_token)
    )
    assert refreshed.tokens.access_token


def _refused_as_revoked(auth: Stub, token: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(token))
    assert rich_error(caught.value).reason == "TOKEN_REVOKED"


@pytest.mark.parametrize("skew_seconds", [30, -30])
def test_logout_all_across_replicas_whose_clocks_disagree(
    start_replica: StartReplica, skew_seconds: int
) -> None:
    start = FakeClock()()
    # The replica whose clock is behind starts first: the first key signs from its "now".
    clocks = [FakeClock(start), FakeClock(start + dt.timedelta(seconds=skew_seconds))]
    order = sorted(range(2), key=lambda i: clocks[i]())
    replicas = {i: start_replica(clocks[i]) for i in order}
    here, there = replicas[0], replicas[1]
    email = unique_email()
    register(here.auth, email=email)
    earlier = _login(there.auth, email)  # its iat: by the clock of `there`

    here.auth.LogoutAll(
        auth_service_pb2.LogoutAllRequest(), metadata=bearer(earlier.tokens.access_token)
    )

    later = _login(there.auth, email)
    for replica in (here, there):
        _refused_as_revoked(replica.auth, earlier.tokens.access_token)
        me = replica.auth.GetMe(
            auth_service_pb2.GetMeRequest(), metadata=bearer(later.tokens.access_token)
        )
        assert me.user.email == email
    with pytest.raises(grpc.RpcError):
        here.auth.RefreshToken(
            auth_service_pb2.RefreshTokenRequest(refresh_token=earlier.tokens.refresh_token)
        )
    there.auth.RefreshToken(
        auth_service_pb2.RefreshTokenRequest(refresh_token=later.tokens.refresh_token)
    )


def _login(auth: Stub, email: str) -> auth_service_pb2.LoginResponse:
    response: auth_service_pb2.LoginResponse = auth.Login(
        auth_service_pb2.LoginRequest(email=email, password=PASSWORD)
    )
    return response
