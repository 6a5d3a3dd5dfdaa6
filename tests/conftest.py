"""Fixtures: real databases (SQLite and PostgreSQL), a real server on a free loopback port,
real channels.

Every test that asks for `database_url` (directly or through `sessions`, `app`, `channel`, …)
runs twice: on a fresh SQLite file and on PostgreSQL. PostgreSQL comes from
LUMAN_TEST_DATABASE_URL (default: the local server, database `test`); when it is unreachable
those runs skip with the reason, except under CI=true, where they fail.

A test marked `shape_check` runs once, on SQLite: see `pytest_generate_tests` below.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from luman.auth.v1 import auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2_grpc
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db import migrate
from luman.server.db.base import Base
from luman.server.db.session import Sessions, make_engine, make_sessions
from tests.mail_support import Mailbox
from tests.support import FakeClock

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")
TEST_BCRYPT_ROUNDS = 4  # bcrypt's minimum: hashing is the point of few tests
SHAPE_CHECK = "shape_check"  # the marker below


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{SHAPE_CHECK}: every request the test sends is refused before it reaches the database "
        "(bad shape, no token), so the test runs on SQLite only (tests/conftest.py)",
    )


@pytest.hookimpl(tryfirst=True)  # before pytest's own hooks read the parametrize marks
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Pin `database_url` to SQLite for tests marked `shape_check`.

    Such a test only sends requests that are refused before any query: by the servicer's
    field checks, for want of a token, or by the gateway's parsing. The backend cannot change
    the answer, so a PostgreSQL run would only double the time. (The server still writes each
    call's request_logs row, here to SQLite; tests/server/test_request_logs.py covers that
    on both backends.) A test that also registers a user, signs in or reads anything back
    reaches the database and stays unmarked, as do the tests that run every RPC end to end.
    """
    if metafunc.definition.get_closest_marker(SHAPE_CHECK) is None:
        return
    if "database_url" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: marked {SHAPE_CHECK} but uses no database; "
            "drop the mark"
        )
    # A parametrize mark of the test's own takes precedence over the fixture's params.
    metafunc.definition.add_marker(
        pytest.mark.parametrize("database_url", ["sqlite"], indirect=True), append=False
    )


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test copies it instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}", pool_size=1)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_schema_url(worker_id: str) -> Iterator[str]:
    """A migrated schema of its own per xdist worker, dropped at the end of the session."""
    base_url = os.environ.get("LUMAN_TEST_DATABASE_URL", DEFAULT_PG_URL)
    schema = f"luman_test_{worker_id}_{uuid.uuid4().hex[:6]}"
    admin = make_engine(base_url, pool_size=1)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        where = sa.engine.make_url(base_url).render_as_string()
        message = f"PostgreSQL unreachable at {where}: {exc.orig}"
        if _in_ci():
            pytest.fail(f"{message} (CI=true requires PostgreSQL)")
        pytest.skip(message)
    url = sa.engine.make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    schema_url = url.render_as_string(hide_password=False)
    engine = make_engine(schema_url, pool_size=1)
    migrate.upgrade(engine)
    engine.dispose()
    yield schema_url
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A freshly migrated, empty database on each backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "luman.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_schema_url")
    engine = make_engine(url, pool_size=1)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.exec_driver_sql(f"TRUNCATE {tables} CASCADE")
    engine.dispose()
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        host="127.0.0.1",
        port=0,
        database_url=database_url,
        embedded_database=False,
        data_dir=tmp_path / "data",
        jwt_secret="test-access-secret-" + "a" * 32,
        jwt_refresh_secret="test-refresh-secret-" + "b" * 32,
        signing_key_secret="test-signing-key-secret-" + "c" * 32,
        bcrypt_rounds=TEST_BCRYPT_ROUNDS,
        max_workers=8,
        # Generous limits keep the limiter in every call's path without throttling tests that
        # sign up many users from 127.0.0.1; rate-limit tests replace() in real limits.
        rate_limit_max_requests=1_000_000,
        auth_rate_limit_max_requests=1_000_000,
        introspection_rate_limit_max_requests=1_000_000,
        service_token_rate_limit_max_requests=1_000_000,
        device_start_rate_limit_max_requests=1_000_000,
        device_poll_rate_limit_max_requests=1_000_000,
        device_code_attempts_per_ip=1_000_000,
        device_code_attempts_per_account=1_000_000,
        device_code_attempts_global=1_000_000,
        email_rate_limit_max_requests=1_000_000,
        provider_login_rate_limit_max_requests=1_000_000,
        # Every organization may introspect here (tests make them with random slugs);
        # tests/server/test_introspection_trust.py covers the production default, nobody.
        introspection_organizations=frozenset({"*"}),
    )


@pytest.fixture
def sessions(settings: Settings) -> Iterator[Sessions]:
    engine = make_engine(settings.database_url, pool_size=8)
    yield make_sessions(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def hasher() -> PasswordHasher:
    # The default queue (128 waiting callers) has room for the 50-way races in test_concurrency:
    # those test constraints, not load shedding (test_password_slots covers SERVER_BUSY).
    return PasswordHasher(TEST_BCRYPT_ROUNDS)


@pytest.fixture
def app(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[App]:
    """The real server, full interceptor chain, on a free loopback port."""
    server = build_server(settings, sessions, clock=clock, hasher=hasher)
    server.start()
    yield server
    server.stop(None)


@pytest.fixture
def limited_app(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[App]:
    """The server with the default policy at 3 calls per window."""
    server = build_server(
        dataclasses.replace(settings, rate_limit_max_requests=3),
        sessions,
        clock=clock,
        hasher=hasher,
    )
    server.start()
    yield server
    server.stop(None)


@pytest.fixture
def channel(app: App) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        yield ch


@pytest.fixture
def auth(channel: grpc.Channel) -> auth_service_pb2_grpc.AuthServiceStub:
    return auth_service_pb2_grpc.AuthServiceStub(channel)


@pytest.fixture
def orgs(channel: grpc.Channel) -> organization_service_pb2_grpc.OrganizationServiceStub:
    return organization_service_pb2_grpc.OrganizationServiceStub(channel)


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server on a free loopback port (tests/mail_support.py)."""
    box = Mailbox()
    box.start()
    yield box
    box.stop()
