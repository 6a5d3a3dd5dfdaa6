"""The server as an operator sees it: health, reflection, limits, binding, migrations, shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App, BindError, build_server
from luman.server.config import Settings
from luman.server.db import migrate
from luman.server.db.session import Sessions, make_engine
from tests.serve_process import free_port, serve_env, serving, wait_for_work_in_flight
from tests.support import PASSWORD, unique_email


def test_health_reports_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "luman.auth.v1.AuthService", "luman.organization.v1.OrganizationService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_both_services_without_credentials(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = list(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in response.list_services_response.service}
    assert {
        "luman.auth.v1.AuthService",
        "luman.organization.v1.OrganizationService",
        "grpc.health.v1.Health",
    } <= names


def test_oversized_message_is_rejected_before_parsing(
    auth: auth_service_pb2_grpc.AuthServiceStub, settings: Settings
) -> None:
    junk = "x" * (settings.max_message_bytes + 1)
    with pytest.raises(grpc.RpcError) as caught:
        auth.Register(
            auth_service_pb2.RegisterRequest(email=unique_email(), password=PASSWORD, name=junk)
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_second_server_on_the_same_port_fails_to_bind(
    app: App, settings: Settings, sessions: Sessions
) -> None:
    taken = Settings(**{**settings.__dict__, "port": app.port})
    with pytest.raises(BindError, match=f"127.0.0.1:{app.port}"):
        build_server(taken, sessions)


@pytest.fixture
def empty_database_url(database_url: str) -> Iterator[str]:
    """An unmigrated database on the same backend as `database_url`."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        yield f"sqlite:///{Path(url.database).with_name('empty.db')}"
        return
    schema = f"luman_empty_{uuid.uuid4().hex[:8]}"
    admin = make_engine(database_url, pool_size=1)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


def _server_command(
    tmp_path: Path, command: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run `luman-server COMMAND` to completion in `tmp_path` (no stray .env is read)."""
    return subprocess.run(
        [sys.executable, "-m", "luman.server", command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_a_database_whose_schema_is_behind(
    tmp_path: Path, empty_database_url: str
) -> None:
    result = _server_command(
        tmp_path, "serve", serve_env(tmp_path, empty_database_url, free_port())
    )
    assert result.returncode == 1
    assert "luman-server migrate" in result.stderr
    engine = make_engine(empty_database_url, pool_size=1)
    try:
        assert migrate.pending(engine)[0] is None  # nothing was created behind the user's back
    finally:
        engine.dispose()


def test_migrate_brings_an_empty_database_to_head(tmp_path: Path, empty_database_url: str) -> None:
    result = _server_command(
        tmp_path, "migrate", serve_env(tmp_path, empty_database_url, free_port())
    )
    assert result.returncode == 0, result.stderr
    engine = make_engine(empty_database_url, pool_size=1)
    try:
        current, head = migrate.pending(engine)
        assert current == head is not None
    finally:
        engine.dispose()


def test_bad_configuration_stops_startup_with_one_line(tmp_path: Path) -> None:
    env = serve_env(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", free_port(), JWT_EXPIRES_IN="soon")
    result = _server_command(tmp_path, "serve", env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "JWT_EXPIRES_IN" in lines[0]


def _wait_until_serving(port: int, process: subprocess.Popen[str]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            process.kill()
            raise AssertionError(f"server did not start: {process.communicate()[1]}") from None
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)


@pytest.mark.slow
def test_sigterm_lets_in_flight_calls_finish(tmp_path: Path, database_url: str) -> None:
    """An expensive Register (bcrypt cost 13) is in flight when SIGTERM arrives: it completes,
    the process exits 0, and the user it created is in the database."""
    port = free_port()
    env = serve_env(tmp_path, database_url, port, BCRYPT_ROUNDS="13", SHUTDOWN_GRACE_PERIOD="30s")
    with serving(tmp_path, env) as process:
        _wait_until_serving(port, process)
        email = unique_email()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, ThreadPoolExecutor(1) as pool:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            call = pool.submit(
                stub.Register,
                auth_service_pb2.RegisterRequest(email=email, password=PASSWORD, name="In Flight"),
                timeout=60,
            )
            wait_for_work_in_flight(process)
            process.send_signal(signal.SIGTERM)
            response = call.result(timeout=60)
        assert response.user.email == email
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert "shutting down" in stderr
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            count = conn.execute(
                sa.text("SELECT count(*) FROM users WHERE email = :e"), {"e": email}
            ).scalar()
        assert count == 1
    finally:
        engine.dispose()
