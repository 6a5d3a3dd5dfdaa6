"""Probes, binding and shutdown of the gateway, in-process and as `luman-server serve` runs it."""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from luman.server.app import App, BindError
from luman.server.config import Settings
from luman.server.db.session import Sessions, make_engine, make_sessions
from luman.server.gateway import GatewayServer, build_gateway
from tests.serve_process import free_port, serve_env, serving, wait_for_work_in_flight
from tests.support import PASSWORD, unique_email


def test_healthz_and_readyz(http: httpx.Client) -> None:
    live = http.get("/healthz")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = http.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


@pytest.fixture
def dead_sessions(database_url: str, tmp_path: Path) -> Iterator[Sessions]:
    """Sessions on a database of the same backend that cannot be reached."""
    if sa.engine.make_url(database_url).get_backend_name() == "sqlite":
        url = f"sqlite:///{tmp_path}"  # a directory: SQLite cannot open it
    else:
        url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
    engine = make_engine(url, pool_size=1)
    yield make_sessions(engine)
    engine.dispose()


def test_readyz_is_503_when_the_database_does_not_answer(
    gateway_settings: Settings, dead_sessions: Sessions, app: App
) -> None:
    gateway = build_gateway(gateway_settings, dead_sessions, app)
    gateway.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", trust_env=False) as http:
            response = http.get("/readyz")
            assert (response.status_code, response.json()) == (503, {"status": "unavailable"})
            assert http.get("/healthz").status_code == 200  # the process itself is fine
    finally:
        gateway.stop(None)


def test_readyz_is_503_while_draining(gateway: GatewayServer, http: httpx.Client) -> None:
    gateway.app.draining = True
    assert http.get("/readyz").status_code == 503


def test_second_gateway_on_the_same_port_fails_to_bind(
    gateway: GatewayServer, gateway_settings: Settings, sessions: Sessions, app: App
) -> None:
    taken = dataclasses.replace(gateway_settings, http_port=gateway.port)
    with pytest.raises(BindError, match="HTTP_PORT"):
        build_gateway(taken, sessions, app)


def test_a_stopped_gateway_refuses_connections(
    gateway_settings: Settings, sessions: Sessions, app: App
) -> None:
    gateway = build_gateway(gateway_settings, sessions, app)
    gateway.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", trust_env=False) as http:
        assert http.get("/healthz").status_code == 200
    gateway.stop(5)
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5),
    ):
        pass


def _wait_until_answering(http: httpx.Client, process: subprocess.Popen[str]) -> None:
    for _ in range(300):  # bounded: up to 30 s for the process to come up
        assert process.poll() is None, process.communicate()[1]
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling interval, not a timing assumption
    raise AssertionError("the HTTP gateway never answered")


@pytest.mark.slow
def test_sigterm_lets_an_http_request_in_flight_finish(tmp_path: Path, database_url: str) -> None:
    """`luman-server serve` answers HTTP on HTTP_PORT; an expensive Register (bcrypt cost 13)
    sent over HTTP is in flight when SIGTERM arrives: it completes with 200 and the process
    exits 0."""
    http_port = free_port()
    env = serve_env(
        tmp_path,
        database_url,
        free_port(),
        HTTP_PORT=str(http_port),
        BCRYPT_ROUNDS="13",
        SHUTDOWN_GRACE_PERIOD="30s",
    )
    with serving(tmp_path, env) as process:
        with (
            httpx.Client(
                base_url=f"http://127.0.0.1:{http_port}", timeout=60, trust_env=False
            ) as http,
            ThreadPoolExecutor(1) as pool,
        ):
            _wait_until_answering(http, process)
            email = unique_email()
            call = pool.submit(
                http.post,
                "/auth/register",
                json={"email": email, "password": PASSWORD, "name": "In Flight"},
            )
            wait_for_work_in_flight(process, done=call.done)
            process.send_signal(signal.SIGTERM)
            response = call.result(timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["user"]["email"] == email
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert f"serving HTTP/JSON on 127.0.0.1:{http_port}" in stderr
