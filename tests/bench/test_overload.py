"""The overload client (bench/overload.py) against the real server: what it counts matches what
the server did. Counts only, never timings: each run lasts its (short) duration, and the
server's own record (users created, request-log rows) is the reference."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import sqlalchemy as sa

from bench import overload
from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App, build_server
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.support import PASSWORD, FakeClock, GatedHasher, register, unique_email

WAIT = 10.0  # seconds: only a broken test ever waits this long
CALLERS = 4
LOGIN = "/luman.auth.v1.AuthService/Login"


def test_a_register_flood_counts_every_success_the_server_made(
    app: App, sessions: Sessions
) -> None:
    result = overload.run(app.port, "register", CALLERS, duration=1.0)

    assert result.successes > 0
    assert result.refusals == {}
    assert result.reasons == {}
    assert result.attempts == result.successes
    assert len(result.latency_ms) == result.successes
    assert result.p50_ms is not None
    assert result.p99_ms is not None
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.per_second == result.successes / 1.0
    with sessions.engine.connect() as conn:
        users = conn.execute(
            sa.text("SELECT count(*) FROM users WHERE email LIKE 'overload-%'")
        ).scalar_one()
    # Each counted success is a user; at most one more per caller was still in flight when the
    # run ended (cancelled by the client, perhaps completed by the server all the same).
    assert result.successes <= users <= result.successes + CALLERS


@pytest.fixture
def full_server(
    settings: Settings, sessions: Sessions, clock: FakeClock
) -> Iterator[tuple[App, GatedHasher]]:
    """A server whose only hash slot a Login holds, and which lets nobody wait for it."""
    hasher = GatedHasher(4, max_concurrency=1, max_waiting=0)
    app = build_server(settings, sessions, clock=clock, hasher=hasher)
    app.start()
    try:
        yield app, hasher
    finally:
        hasher.gate.set()
        app.stop(None)
        hasher.close()


def test_a_login_flood_on_a_full_server_counts_every_refusal_by_code_and_reason(
    full_server: tuple[App, GatedHasher], sessions: Sessions
) -> None:
    app, hasher = full_server
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        email = unique_email()
        register(auth, email=email)
        assert hasher.inside.acquire(timeout=WAIT)  # Register's hash
        hasher.gate.clear()
        login = auth_service_pb2.LoginRequest(email=email, password=PASSWORD)
        holding = auth.Login.future(login, timeout=WAIT)
        assert hasher.inside.acquire(timeout=WAIT)  # the only slot is held

        result = overload.run(
            app.port, "login", CALLERS, duration=0.5, email=email, password=PASSWORD
        )

        hasher.gate.set()
        assert holding.result(WAIT).user.email == email

    assert result.successes == 0
    assert result.p50_ms is None
    refused = result.refused
    assert refused > 0
    assert result.refusals == {"RESOURCE_EXHAUSTED": refused}
    assert result.reasons == {"RESOURCE_EXHAUSTED SERVER_BUSY": refused}
    assert result.attempts == refused
    # The server logged each refusal the client counted, and at most one more per caller
    # (answered after the run ended).
    assert app.request_log is not None
    assert app.request_log.flush(WAIT)
    with sessions.engine.connect() as conn:
        logged = conn.execute(
            sa.text(
                "SELECT count(*) FROM request_logs "
                "WHERE method = :m AND status = 'RESOURCE_EXHAUSTED'"
            ),
            {"m": LOGIN},
        ).scalar_one()
    assert refused <= logged <= refused + CALLERS


@pytest.mark.parametrize(
    ("method", "callers", "duration"),
    [("logout", 1, 1.0), ("login", 0, 1.0), ("login", 1, 0.0)],
)
def test_a_run_that_cannot_mean_anything_is_refused_before_it_starts(
    method: str, callers: int, duration: float
) -> None:
    with pytest.raises(ValueError, match=r"method|positive"):
        overload.run(1, method, callers, duration)
