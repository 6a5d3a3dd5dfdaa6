"""The request log through the real server, on SQLite and PostgreSQL: one row per call with
its final status, nothing secret in any row, the shutdown flush, a failing or locked log
database never failing or stalling a call, retention pruning, and `luman-server logs`."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.request_logging import RequestLogEntry
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import ConfigError, Settings
from luman.server.db.availability import is_unavailable
from luman.server.db.models import RequestLog
from luman.server.db.session import Sessions, is_sqlite, make_engine
from luman.server.main import cli
from luman.server.request_logs import store
from luman.server.request_logs.writer import RequestLogWriter
from tests.database_outage import DatabaseOutage
from tests.support import PASSWORD, FakeClock, bearer, register, rich_error, unique_email

GET_ME = "/luman.auth.v1.AuthService/GetMe"
REGISTER = "/luman.auth.v1.AuthService/Register"
LOGIN = "/luman.auth.v1.AuthService/Login"
CALL_TIMEOUT = 10  # seconds: a stalled call fails the test instead of hanging it


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Running:
    app: App
    auth: auth_service_pb2_grpc.AuthServiceStub

    @property
    def writer(self) -> RequestLogWriter:
        assert self.app.request_log is not None
        return self.app.request_log


StartServer = Callable[..., Running]


@pytest.fixture
def start_server(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[StartServer]:
    with contextlib.ExitStack() as stack:

        def start(request_log: RequestLogWriter | None = None, **changes: object) -> Running:
            app = build_server(
                dataclasses.replace(settings, **changes),  # type: ignore[arg-type]
                sessions,
                clock=clock,
                hasher=hasher,
                request_log=request_log,
            )
            app.start()
            stack.callback(app.stop, None)
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{app.port}"))
            return Running(app, auth_service_pb2_grpc.AuthServiceStub(channel))

        yield start


def _rows(sessions: Sessions) -> list[RequestLog]:
    with sessions.read() as session:
        return list(session.scalars(sa.select(RequestLog).order_by(RequestLog.id)))


def _get_me(auth: auth_service_pb2_grpc.AuthServiceStub, token: str | None) -> None:
    metadata = bearer(token) if token is not None else None
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=metadata, timeout=CALL_TIMEOUT)


def test_one_row_per_call_with_status_user_ip_and_agent(
    start_server: StartServer, sessions: Sessions, clock: FakeClock
) -> None:
    running = start_server(auth_rate_limit_max_requests=2)
    user = register(running.auth)
    _get_me(running.auth, user.tokens.access_token)
    with pytest.raises(grpc.RpcError):
        _get_me(running.auth, "forged")
    with pytest.raises(grpc.RpcError):
        running.auth.Login(auth_service_pb2.LoginRequest(email=unique_email(), password="nope1234"))
    with pytest.raises(grpc.RpcError):  # third auth call: over the limit of 2
        register(running.auth)
    assert running.writer.flush(timeout=CALL_TIMEOUT)

    rows = _rows(sessions)
    assert [(r.method, r.status, r.reason) for r in rows] == [
        (REGISTER, "OK", None),
        (GET_ME, "OK", None),
        (GET_ME, "UNAUTHENTICATED", "TOKEN_INVALID"),
        (LOGIN, "UNAUTHENTICATED", "INVALID_CREDENTIALS"),
        (REGISTER, "RESOURCE_EXHAUSTED", "RATE_LIMITED"),
    ]
    assert [str(r.user_id) if r.user_id else None for r in rows] == [
        None,  # Register is public: no token, so no user on the call
        user.user.id,
        None,
        None,
        None,
    ]
    for row in rows:
        assert row.client_ip == "127.0.0.1"
        assert row.user_agent.startswith("grpc-python/")
        assert row.duration_ms >= 0
        assert row.time == clock()


def test_no_row_holds_a_secret(start_server: StartServer, sessions: Sessions) -> None:
    running = start_server()
    email = unique_email()
    user = register(running.auth, email=email)
    login = running.auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))
    cli_login = running.auth.CliLogin(
        auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD, token_name="laptop")
    )
    running.auth.RefreshToken(
        auth_service_pb2.RefreshTokenRequest(refresh_token=login.tokens.refresh_token)
    )
    _get_me(running.auth, cli_login.token)
    with pytest.raises(grpc.RpcError):
        running.auth.Login(auth_service_pb2.LoginRequest(email=email, password="wrong " + PASSWORD))
    assert running.writer.flush(timeout=CALL_TIMEOUT)

    rows = _rows(sessions)
    assert len(rows) == 6, [(r.method, r.status, r.time, r.user_agent, r.client_ip) for r in rows]
    dumped = repr([[getattr(r, c.key) for c in sa.inspect(RequestLog).columns] for r in rows])
    for secret in (
        PASSWORD,
        email,
        user.tokens.access_token,
        user.tokens.refresh_token,
        login.tokens.access_token,
        login.tokens.refresh_token,
        cli_login.token,
    ):
        assert secret not in dumped


def test_shutdown_writes_every_completed_call(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    # A writer that never flushes on its own: only the shutdown drain can write the rows.
    writer = RequestLogWriter(
        sessions.engine, clock=clock, batch_size=10_000, idle_wait=3600, max_queue=10_000
    )
    app = build_server(settings, sessions, clock=clock, hasher=hasher, request_log=writer)
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            auth = auth_service_pb2_grpc.AuthServiceStub(channel)
            user = register(auth)
            for _ in range(59):
                _get_me(auth, user.tokens.access_token)
    finally:
        app.stop(5)
    assert len(_rows(sessions)) == 60
    assert writer.stats.written == 60


def _broken_url(settings: Settings, tmp_path: Path) -> str:
    """A database on the same backend where request_logs does not exist."""
    if is_sqlite(settings.database_url):
        return f"sqlite:///{tmp_path / 'empty.db'}"
    url = sa.engine.make_url(settings.database_url)
    url = url.update_query_dict({"options": "-csearch_path=luman_no_such_schema"})
    return url.render_as_string(hide_password=False)


def test_a_failing_log_database_never_fails_a_call(
    start_server: StartServer,
    settings: Settings,
    sessions: Sessions,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = make_engine(_broken_url(settings, tmp_path), pool_size=1)
    try:
        writer = RequestLogWriter(broken, retention_days=0)
        running = start_server(request_log=writer)
        user = register(running.auth)
        for _ in range(9):
            _get_me(running.auth, user.tokens.access_token)
        assert writer.flush(timeout=CALL_TIMEOUT)
        assert writer.stats.failed == 10
        assert writer.stats.written == 0
        assert "10 lost to database errors" in caplog.text
        assert _rows(sessions) == []
    finally:
        broken.dispose()


@contextlib.contextmanager
def _log_table_locked(sessions: Sessions) -> Iterator[None]:
    """Hold a lock that makes every write to request_logs wait."""
    if is_sqlite(str(sessions.engine.url)):
        # BEGIN IMMEDIATE takes SQLite's one write lock; readers (WAL) carry on.
        engine = sessions.engine.execution_options(sqlite_immediate=True)
        with engine.connect() as connection, connection.begin():
            yield
    else:
        with sessions.engine.connect() as connection, connection.begin():
            connection.exec_driver_sql("LOCK TABLE request_logs IN ACCESS EXCLUSIVE MODE")
            yield


def test_a_locked_log_database_never_stalls_a_call_and_overflow_is_counted(
    start_server: StartServer, sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    writer = RequestLogWriter(sessions.engine, retention_days=0, max_queue=3, batch_size=2)
    running = start_server(request_log=writer)
    user = register(running.auth)
    assert writer.flush(timeout=CALL_TIMEOUT)
    with _log_table_locked(sessions):
        for _ in range(20):  # reads only: on SQLite, a write would wait for the lock too
            _get_me(running.auth, user.tokens.access_token)
    assert writer.flush(timeout=CALL_TIMEOUT)
    stats = writer.stats
    assert stats.written + stats.dropped == 21
    assert stats.dropped >= 15  # at most one batch in flight and three queued
    assert stats.failed == 0
    assert len(_rows(sessions)) == stats.written
    assert f"{stats.dropped} entries dropped (queue full)" in caplog.text


def _entry(time: dt.datetime) -> RequestLogEntry:
    return RequestLogEntry(
        time=time,
        method=GET_ME,
        status="OK",
        duration_ms=1.5,
        user_id=None,
        client_ip="192.0.2.1",
        user_agent="test",
    )


def test_retention_prunes_old_rows_on_schedule(sessions: Sessions, clock: FakeClock) -> None:
    ticker = Ticker()
    writer = RequestLogWriter(
        sessions.engine, retention_days=30, clock=clock, monotonic=ticker, prune_interval=3600
    )
    writer.start()
    try:
        writer.submit(_entry(clock()))
        assert writer.flush(timeout=CALL_TIMEOUT)
        clock.advance(days=30, seconds=1)
        writer.submit(_entry(clock()))
        assert writer.flush(timeout=CALL_TIMEOUT)
        assert len(_rows(sessions)) == 2  # the first row is stale, but pruning is not due
        ticker.now += 3600
        assert writer.flush(timeout=CALL_TIMEOUT)
        assert [r.time for r in _rows(sessions)] == [clock()]
        assert writer.stats.pruned == 1
    finally:
        writer.close()


def test_retention_zero_keeps_rows_forever(sessions: Sessions, clock: FakeClock) -> None:
    ticker = Ticker()
    writer = RequestLogWriter(sessions.engine, retention_days=0, clock=clock, monotonic=ticker)
    writer.start()
    try:
        writer.submit(_entry(clock()))
        clock.advance(days=3650)
        ticker.now += 10 * 86400
        assert writer.flush(timeout=CALL_TIMEOUT)
        assert len(_rows(sessions)) == 1
    finally:
        writer.close()


def test_pruning_deletes_in_batches(sessions: Sessions, clock: FakeClock) -> None:
    store.insert_entries(sessions.engine, [_entry(clock()) for _ in range(7)])
    store.insert_entries(sessions.engine, [_entry(clock() + dt.timedelta(days=1))])
    assert store.prune_before(sessions.engine, clock() + dt.timedelta(hours=1), batch=2) == 7
    assert len(_rows(sessions)) == 1


def test_a_batch_longer_than_one_statement_is_written_whole_and_in_order(
    sessions: Sessions, clock: FakeClock
) -> None:
    # SQLite gets ROWS_PER_STATEMENT rows per INSERT: 2.5 statements' worth, every field kept.
    count = store.ROWS_PER_STATEMENT * 5 // 2
    user_id = uuid.uuid4()
    entries = [
        RequestLogEntry(
            time=clock() + dt.timedelta(microseconds=i),
            method=f"/luman.test.v1.S/M{i}",
            status="OK" if i % 2 else "UNAUTHENTICATED",
            duration_ms=i / 4,
            user_id=user_id if i % 3 else None,
            client_ip=f"192.0.2.{i % 250}",
            user_agent=f"agent {i}",
        )
        for i in range(count)
    ]
    store.insert_entries(sessions.engine, entries)
    rows = _rows(sessions)
    assert [
        RequestLogEntry(
            r.time, r.method, r.status, r.duration_ms, r.user_id, r.client_ip, r.user_agent
        )
        for r in rows
    ] == entries


def test_batched_rows_store_what_the_orm_stores(sessions: Sessions, clock: FakeClock) -> None:
    # Same stored value (on SQLite: the same text) whichever path wrote the row, so ordering,
    # pruning and `luman-server logs` compare like with like.
    entry = _entry(clock() + dt.timedelta(microseconds=123456))
    store.insert_entries(sessions.engine, [entry])
    with sessions.write.begin() as session:
        session.add(RequestLog(**entry._asdict()))
    with sessions.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT time FROM request_logs ORDER BY id").all()
    assert len(stored) == 2
    assert stored[0] == stored[1]


def test_entries_after_close_are_counted_apart_from_drops(
    sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    # A call grpcio cancelled at the end of the grace period can finish after close(): its
    # entry is lost, but not because the queue was full.
    writer = RequestLogWriter(sessions.engine, retention_days=0)
    writer.start()
    writer.submit(_entry(dt.datetime.now(dt.UTC)))
    writer.close()
    writer.submit(_entry(dt.datetime.now(dt.UTC)))
    assert writer.stats == store.WriterStats(written=1, dropped=0, after_close=1)
    assert not writer.flush(timeout=CALL_TIMEOUT)
    assert len(_rows(sessions)) == 1
    assert "dropped" not in caplog.text


def test_request_log_off_leaves_out_interceptor_and_writer(
    start_server: StartServer, sessions: Sessions
) -> None:
    running = start_server(request_log_enabled=False, rate_limit_max_requests=2)
    assert running.app.request_log is None
    user = register(running.auth)
    _get_me(running.auth, user.tokens.access_token)
    with pytest.raises(grpc.RpcError) as forged:
        _get_me(running.auth, "forged")
    # Token auth and rate limiting work as before (the limit counts per user).
    assert rich_error(forged.value).code == grpc.StatusCode.UNAUTHENTICATED
    _get_me(running.auth, user.tokens.access_token)
    with pytest.raises(grpc.RpcError) as limited:
        _get_me(running.auth, user.tokens.access_token)
    assert rich_error(limited.value).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    running.app.stop(None)
    assert _rows(sessions) == []


@pytest.mark.parametrize(
    ("value", "enabled"), [(None, True), ("true", True), ("false", False), ("0", False)]
)
def test_request_log_enabled_setting(tmp_path: Path, value: str | None, enabled: bool) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path)}
    if value is not None:
        env["REQUEST_LOG_ENABLED"] = value
    assert Settings.from_env(env).request_log_enabled is enabled


def test_request_log_max_queue_setting(tmp_path: Path) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(env).request_log_max_queue == 100_000
    env["REQUEST_LOG_MAX_QUEUE"] = "250000"
    assert Settings.from_env(env).request_log_max_queue == 250_000
    env["REQUEST_LOG_MAX_QUEUE"] = "10"
    with pytest.raises(ConfigError, match=r"^REQUEST_LOG_MAX_QUEUE must be between 1000 and"):
        Settings.from_env(env)


def test_request_log_enabled_must_be_a_boolean(tmp_path: Path) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path), "REQUEST_LOG_ENABLED": "sometimes"}
    with pytest.raises(ConfigError, match=r"^REQUEST_LOG_ENABLED must be true or false"):
        Settings.from_env(env)


def _logs(settings: Settings, *args: str) -> tuple[int, str]:
    env = {
        "DATABASE_URL": settings.database_url,
        "LUMAN_DATA_DIR": str(settings.data_dir),
        "LUMAN_ENV": "test",
    }
    result = CliRunner().invoke(cli, ["logs", *args], env=env)
    return result.exit_code, result.output


@pytest.fixture
def logged_calls(start_server: StartServer) -> tuple[str, str]:
    """Calls by two users plus anonymous failures; returns (first user's id, their email)."""
    running = start_server()
    email = unique_email()
    first = register(running.auth, email=email)
    second = register(running.auth)
    for _ in range(3):
        _get_me(running.auth, first.tokens.access_token)
    _get_me(running.auth, second.tokens.access_token)
    for _ in range(2):
        with pytest.raises(grpc.RpcError):
            _get_me(running.auth, None)
    running.app.stop(None)
    return first.user.id, email


def test_logs_command_filters_by_user_method_and_status(
    settings: Settings, logged_calls: tuple[str, str]
) -> None:
    user_id, email = logged_calls
    code, output = _logs(settings, "--user", email.upper(), "--json")
    assert code == 0, output
    rows = json.loads(output)
    assert [(r["method"], r["user_id"]) for r in rows] == [(GET_ME, user_id)] * 3

    code, output = _logs(settings, "--method", "GetMe", "--status", "unauthenticated", "--json")
    assert code == 0, output
    rows = json.loads(output)
    assert [(r["status"], r["user_id"]) for r in rows] == [("UNAUTHENTICATED", None)] * 2

    code, output = _logs(settings, "--status", "0", "--method", "AuthService/Register", "--json")
    assert [r["method"] for r in json.loads(output)] == [REGISTER] * 2

    code, output = _logs(settings, "--user", user_id, "--limit", "2", "--json")
    assert len(json.loads(output)) == 2


def test_logs_command_prints_a_table(settings: Settings, logged_calls: tuple[str, str]) -> None:
    code, output = _logs(settings, "--limit", "3")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].split()[:4] == ["TIME", "(UTC)", "STATUS", "MS"]
    assert len(lines) == 4
    assert "UNAUTHENTICATED" in lines[-1]
    assert GET_ME in lines[-1]


def test_logs_command_rejects_unknown_filters(
    settings: Settings, logged_calls: tuple[str, str]
) -> None:
    code, output = _logs(settings, "--status", "SOMETIMES")
    assert code == 1
    assert "unknown gRPC status 'SOMETIMES'" in output
    code, output = _logs(settings, "--user", "nobody@example.com")
    assert code == 1
    assert "no user with id or email 'nobody@example.com'" in output


class BatchRecordingWriter(RequestLogWriter):
    """Records the size of every batch the thread writes, and signals each write."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.batches: list[int] = []
        self.wrote = threading.Semaphore(0)

    def _write(self, batch: list[RequestLogEntry]) -> bool:
        done = super()._write(batch)
        self.batches.append(len(batch))
        self.wrote.release()
        return done


def test_the_writer_waits_for_a_full_batch(sessions: Sessions, clock: FakeClock) -> None:
    # One transaction per batch, not one per entry that trickled in while the last insert ran.
    writer = BatchRecordingWriter(
        sessions.engine, retention_days=0, batch_size=3, max_delay=3600, idle_wait=3600
    )
    writer.start()
    try:
        writer.submit(_entry(clock()))
        writer.submit(_entry(clock()))
        writer.submit(_entry(clock()))
        assert writer.wrote.acquire(timeout=CALL_TIMEOUT)
        assert writer.batches == [3]
    finally:
        writer.close()
    assert len(_rows(sessions)) == 3


def test_a_lone_entry_is_written_after_max_delay_without_a_flush(
    sessions: Sessions, clock: FakeClock
) -> None:
    writer = BatchRecordingWriter(
        sessions.engine, retention_days=0, batch_size=500, max_delay=0.05, idle_wait=3600
    )
    writer.start()
    try:
        writer.submit(_entry(clock()))
        # Woken by the first entry, not by the hour-long idle wait.
        assert writer.wrote.acquire(timeout=CALL_TIMEOUT)
        assert writer.batches == [1]
        assert len(_rows(sessions)) == 1
    finally:
        writer.close()


@pytest.fixture
def outage(database_url: str) -> Iterator[DatabaseOutage]:
    """The database behind a proxy (PostgreSQL) or a file lock (SQLite) the test controls."""
    outage = DatabaseOutage(database_url)
    yield outage
    outage.close()


class CountingErrors:
    """The writer's on_error: counts the failed attempts, says whether to keep the batch."""

    def __init__(self) -> None:
        self.attempts = 0

    def __call__(self, exc: Exception) -> bool:
        self.attempts += 1
        return is_unavailable(exc)


def test_an_outage_loses_no_entry_and_retries_with_capped_backoff(
    outage: DatabaseOutage, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    errors = CountingErrors()
    writer = RequestLogWriter(
        outage.engine,
        retention_days=0,
        batch_size=10,
        max_delay=0.01,
        on_error=errors,
        retry_min=0.01,
        retry_max=0.05,
    )
    writer.start()
    try:
        outage.cut()
        for _ in range(25):
            writer.submit(_entry(clock()))
        # Waits 0.01, 0.02, 0.04, then 0.05 s between attempts: a handful, not thousands.
        assert not writer.flush(timeout=0.5)
        assert 3 <= errors.attempts <= 0.5 / 0.05 + 4
        assert writer.stats == store.WriterStats()
        assert writer.queued == 25
        outage.restore()
        assert writer.flush(timeout=CALL_TIMEOUT)
    finally:
        writer.close()
    assert writer.stats == store.WriterStats(written=25)
    assert len(_rows(outage.sessions)) == 25
    assert "lost" not in caplog.text
    assert "dropped" not in caplog.text


def test_past_the_bound_an_outage_drops_new_entries_and_counts_them(
    outage: DatabaseOutage, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    writer = RequestLogWriter(
        outage.engine, retention_days=0, max_queue=20, batch_size=10, retry_min=0.01
    )
    writer.start()
    try:
        outage.cut()
        for _ in range(30):
            writer.submit(_entry(clock()))
        outage.restore()
        assert writer.flush(timeout=CALL_TIMEOUT)
    finally:
        writer.close()
    # The first 20 (the bound) were kept and written; the 10 after them were dropped.
    assert writer.stats == store.WriterStats(written=20, dropped=10)
    assert len(_rows(outage.sessions)) == 20
    assert "10 entries dropped (queue full)" in caplog.text


def test_close_during_an_outage_counts_what_it_could_not_write_as_lost(
    outage: DatabaseOutage, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    writer = RequestLogWriter(outage.engine, retention_days=0, batch_size=5, retry_min=0.01)
    writer.start()
    try:
        outage.cut()
        for _ in range(7):
            writer.submit(_entry(clock()))
        writer.close(timeout=0.3)
    finally:
        outage.restore()
    assert writer.stats == store.WriterStats(failed=7)
    # Queued, or some of them in an insert that failed too: the totals count all 7.
    assert re.search(r"after 0s of shutdown; \d queued entries lost", caplog.text)
    assert "7 lost to database errors" in caplog.text
    writer.submit(_entry(clock()))
    assert writer.stats.after_close == 1
    assert _rows(outage.sessions) == []
