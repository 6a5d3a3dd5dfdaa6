"""The gateway calls the methods in process: what grpcio does for a gRPC call, it does too."""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from luman.server.app import App, build_server
from luman.server.config import Settings
from luman.server.db.models import RequestLog
from luman.server.db.session import Sessions
from luman.server.gateway import build_gateway
from luman.server.gateway.in_process import grpc_peer
from tests.gateway.helpers import error_of
from tests.support import PASSWORD, FakeClock, GatedHasher, unique_email

WAIT = 10.0


@pytest.mark.parametrize(
    ("ip", "peer"),
    [
        ("203.0.113.5", "ipv4:203.0.113.5:0"),
        ("2001:db8::1", "ipv6:[2001:db8::1]:0"),
        ("::ffff:198.51.100.7", "ipv4:198.51.100.7:0"),
        ("", "unknown:"),
    ],
)
def test_the_http_client_address_is_handed_over_as_grpcio_writes_a_peer(ip: str, peer: str) -> None:
    assert grpc_peer(ip) == peer


@pytest.fixture
def one_call_gateway(
    settings: Settings, sessions: Sessions, clock: FakeClock
) -> Iterator[tuple[GatedHasher, App, httpx.Client]]:
    """A server and gateway that run one gateway call at a time, with a hash the test holds."""
    settings = dataclasses.replace(settings, http_port=0, max_concurrent_rpcs=1)
    hasher = GatedHasher(4)
    app = build_server(settings, sessions, clock=clock, hasher=hasher)
    app.start()
    gateway = build_gateway(settings, sessions, app)
    gateway.start()
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{gateway.port}", timeout=WAIT, trust_env=False
        ) as http:
            yield hasher, app, http
    finally:
        hasher.gate.set()
        gateway.stop(None)
        app.stop(None)
        hasher.close()


def test_gateway_calls_past_the_concurrency_bound_are_told_to_retry(
    one_call_gateway: tuple[GatedHasher, App, httpx.Client], sessions: Sessions
) -> None:
    hasher, app, http = one_call_gateway
    hasher.gate.clear()
    body = {"email": unique_email(), "password": PASSWORD, "name": "Held"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(http.post, "/auth/register", json=body)
        assert hasher.inside.acquire(timeout=WAIT)  # the register holds the one call slot

        refused = http.get("/auth/me")
        error = error_of(refused)
        assert (refused.status_code, error.reason) == (429, "SERVER_BUSY")
        assert refused.headers["retry-after"] == "1"
        assert error.retry_delay == "1s"

        hasher.gate.set()
        assert held.result(WAIT).status_code == 200
    # The slot is given back: the next call runs (and is refused by authentication instead).
    assert error_of(http.get("/auth/me")).reason == "CREDENTIALS_MISSING"
    assert app.request_log is not None
    assert app.request_log.flush(timeout=WAIT)
    with sessions.read() as session:
        methods = session.scalars(sa.select(RequestLog.method)).all()
    # Refused before the chain, as grpcio refuses calls past its bound: no request-log row.
    assert methods.count("/luman.auth.v1.AuthService/GetMe") == 1
