"""A database that goes away and comes back, through the real server, on both backends.

While it is away, a call that needs it answers UNAVAILABLE with reason DATABASE_UNAVAILABLE
and a RetryInfo (HTTP: 503 with Retry-After), gRPC health says NOT_SERVING for the server and
every service, the process log gets one line when it goes and one when it is back, calls
answered from caches go on working, and the request log keeps every row until it can write
them. After it is back, everything works again.

The outage (tests/database_outage.py) is a loopback proxy between the server and PostgreSQL
that the test cuts and restores (the shared PostgreSQL is never stopped), and on SQLite the
database file write-locked by another connection past a short busy timeout: an embedded
database cannot go away over a network, and a lock held by another process is how it becomes
unavailable in practice. Reads go on there (WAL), so the calls that need the database are
writes (Register) on both backends.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2, organization_service_pb2_grpc
from luman.server import methods
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.availability import REASON, is_unavailable
from luman.server.db.models import RequestLog
from luman.server.gateway import build_gateway
from tests.database_outage import PG_CONNECT_TIMEOUT, DatabaseOutage
from tests.gateway.helpers import error_of
from tests.server.organization_support import create_organization, sign_up
from tests.support import PASSWORD, FakeClock, bearer, register, rich_error, unique_email

CALL_TIMEOUT = 10  # seconds: a stalled call fails the test instead of hanging it
WAIT = 10  # seconds: the most any condition below is waited for
GET_ME = "/luman.auth.v1.AuthService/GetMe"
HEALTH_NAMES = ("", *(s.full_name for s in methods.SERVICES))
AWAY = "database unavailable"
BACK = "database available again"


@pytest.fixture
def outage(database_url: str) -> Iterator[DatabaseOutage]:
    outage = DatabaseOutage(database_url)
    yield outage
    outage.close()


@dataclasses.dataclass
class Running:
    app: App
    channel: grpc.Channel
    auth: auth_service_pb2_grpc.AuthServiceStub
    health: health_pb2_grpc.HealthStub

    def statuses(self) -> set[int]:
        """The health of the server and of every service (one status if they agree)."""
        return {
            self.health.Check(
                health_pb2.HealthCheckRequest(service=name), timeout=CALL_TIMEOUT
            ).status
            for name in HEALTH_NAMES
        }

    def wait_for_health(self, status: int) -> None:
        """Watch the server's health until it is `status` (a bounded wait, no polling)."""
        stream = self.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=WAIT)
        try:
            for response in stream:
                if response.status == status:
                    return
        finally:
            stream.cancel()


@pytest.fixture
def running(
    settings: Settings, outage: DatabaseOutage, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[Running]:
    app = build_server(settings, outage.sessions, clock=clock, hasher=hasher)
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield Running(
                app,
                channel,
                auth_service_pb2_grpc.AuthServiceStub(channel),
                health_pb2_grpc.HealthStub(channel),
            )
    finally:
        outage.restore()  # a failed test must not leave shutdown waiting for the database
        app.stop(None)


def _register_request() -> auth_service_pb2.RegisterRequest:
    return auth_service_pb2.RegisterRequest(
        email=unique_email(), password=PASSWORD, name="Outage Test"
    )


def _get_me(auth: auth_service_pb2_grpc.AuthServiceStub, token: str) -> None:
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(token), timeout=CALL_TIMEOUT)


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(text)]


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_calls_needing_the_database_answer_unavailable_and_health_follows(
    running: Running, outage: DatabaseOutage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    user = register(running.auth)
    _get_me(running.auth, user.tokens.access_token)  # now answered from the token cache
    unchecked = register(running.auth)  # its token has never been verified
    assert running.statuses() == {health_pb2.HealthCheckResponse.SERVING}

    outage.cut()
    refused = 8
    for _ in range(refused):
        with pytest.raises(grpc.RpcError) as caught:
            running.auth.Register(_register_request(), timeout=CALL_TIMEOUT)
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert error.reason == REASON
        assert error.domain == "luman.auth.v1"
        assert error.retry_delay_seconds == 1.0
    # The first refused call switched health over before it was answered.
    assert running.statuses() == {health_pb2.HealthCheckResponse.NOT_SERVING}
    _get_me(running.auth, user.tokens.access_token)  # a cached token still works
    if outage.sqlite:
        _get_me(running.auth, unchecked.tokens.access_token)  # a read: WAL lets it through
    else:
        with pytest.raises(grpc.RpcError) as caught:  # verifying a token needs the database
            _get_me(running.auth, unchecked.tokens.access_token)
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, REASON)
        refused += 1

    outage.restore()
    running.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
    assert running.statuses() == {health_pb2.HealthCheckResponse.SERVING}
    assert register(running.auth).user.id

    assert len(_lines(caplog, AWAY)) == 1
    [back] = _lines(caplog, BACK)
    assert f"{refused} calls were answered {REASON}" in back
    # No traceback per call: nothing was logged as an unhandled exception.
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_list_pages_answer_unavailable_and_work_again_after(
    running: Running, outage: DatabaseOutage
) -> None:
    # The list pages read on the driver's cursor (db/reads.py), not on a Connection: the same
    # answer, and a fresh connection once the database is back. (PostgreSQL: on SQLite, reads
    # go on during this kind of outage.)
    orgs = organization_service_pb2_grpc.OrganizationServiceStub(running.channel)
    owner = sign_up(running.auth, "lister")
    organization = create_organization(orgs, owner)
    list_members = organization_service_pb2.ListMembersRequest(organization_id=organization.id)
    list_organizations = organization_service_pb2.ListOrganizationsRequest()

    def both() -> tuple[int, int]:
        members = orgs.ListMembers(list_members, metadata=owner.metadata, timeout=CALL_TIMEOUT)
        mine = orgs.ListOrganizations(
            list_organizations, metadata=owner.metadata, timeout=CALL_TIMEOUT
        )
        return len(members.members), len(mine.organizations)

    assert both() == (1, 1)
    outage.cut()
    with pytest.raises(grpc.RpcError) as members_refused:
        orgs.ListMembers(list_members, metadata=owner.metadata, timeout=CALL_TIMEOUT)
    with pytest.raises(grpc.RpcError) as organizations_refused:
        orgs.ListOrganizations(list_organizations, metadata=owner.metadata, timeout=CALL_TIMEOUT)
    for caught in (members_refused, organizations_refused):
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, REASON)
        assert error.retry_delay_seconds == 1.0
    outage.restore()
    running.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
    assert both() == (1, 1)


def test_the_http_gateway_answers_503_with_retry_after(
    running: Running, outage: DatabaseOutage, settings: Settings
) -> None:
    gateway = build_gateway(
        dataclasses.replace(settings, http_port=0), outage.sessions, running.app
    )
    gateway.start()
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{gateway.port}", timeout=CALL_TIMEOUT, trust_env=False
        ) as http:
            body = {"email": unique_email(), "password": PASSWORD, "name": "Outage Test"}
            outage.cut()
            try:
                response = http.post("/auth/register", json=body)
            finally:
                outage.restore()
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            error = error_of(response)
            assert error.code == grpc.StatusCode.UNAVAILABLE.value[0]
            assert error.reason == REASON
            assert error.retry_delay == "1s"
            running.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
            assert http.post("/auth/register", json=body).status_code == 200
    finally:
        gateway.stop(None)


def test_request_log_rows_of_calls_answered_during_an_outage_are_all_kept(
    running: Running, outage: DatabaseOutage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    writer = running.app.request_log
    database = running.app.database
    assert writer is not None
    assert database is not None
    user = register(running.auth)
    _get_me(running.auth, user.tokens.access_token)
    assert writer.flush(timeout=WAIT)

    ok = 0
    count_lock = threading.Lock()
    stop = threading.Event()
    errors: list[grpc.RpcError] = []

    def call_get_me() -> None:
        nonlocal ok
        while not stop.is_set():
            try:
                _get_me(running.auth, user.tokens.access_token)
            except grpc.RpcError as exc:
                errors.append(exc)
                return
            with count_lock:
                ok += 1

    callers = [threading.Thread(target=call_get_me) for _ in range(4)]
    for caller in callers:
        caller.start()
    try:
        _wait_until(lambda: ok >= 100 or bool(errors))
        outage.cut()
        # Only the request-log writer touches the database now (GetMe is answered from the
        # caches): its failed insert is what reports the outage.
        _wait_until(lambda: not database.available or bool(errors))
        assert running.statuses() == {health_pb2.HealthCheckResponse.NOT_SERVING}
        calls_before = ok
        _wait_until(lambda: ok >= calls_before + 200 or bool(errors))
    finally:
        outage.restore()
        stop.set()
        for caller in callers:
            caller.join(timeout=WAIT)
    assert errors == []  # answered from the caches, every GetMe succeeded
    running.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
    assert writer.flush(timeout=WAIT)

    stats = writer.stats
    assert (stats.dropped, stats.failed) == (0, 0)
    with outage.engine.connect() as connection:
        logged = connection.scalar(
            sa.select(sa.func.count())
            .select_from(RequestLog)
            .where(RequestLog.method == GET_ME, RequestLog.status == "OK")
        )
    assert logged == ok + 1
    assert len(_lines(caplog, AWAY)) == 1
    assert len(_lines(caplog, BACK)) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_blackholed_database_fails_calls_within_the_connect_timeout(
    running: Running, outage: DatabaseOutage
) -> None:
    # Connections accepted and never answered: without a connect timeout, psycopg waits 130 s.
    outage.cut("blackhole")
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            running.auth.Register(_register_request(), timeout=CALL_TIMEOUT)
        assert time.monotonic() - started < PG_CONNECT_TIMEOUT + 2
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, REASON)
    finally:
        outage.restore()
    running.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
    assert register(running.auth).user.id


def test_only_an_unreachable_database_counts_as_unavailable(outage: DatabaseOutage) -> None:
    # Bugs (a missing table, a broken constraint) are not outages: they stay INTERNAL.
    with pytest.raises(sa.exc.DBAPIError) as missing_table, outage.engine.connect() as connection:
        connection.exec_driver_sql("SELECT * FROM no_such_table")
    assert not is_unavailable(missing_table.value)
    with pytest.raises(sa.exc.IntegrityError) as null_id, outage.sessions.write.begin() as session:
        session.execute(sa.text("INSERT INTO users (id) VALUES (NULL)"))
    assert not is_unavailable(null_id.value)

    outage.cut()
    try:
        with pytest.raises(sa.exc.DBAPIError) as cut, outage.sessions.write.begin() as session:
            session.execute(sa.text("SELECT 1"))
    finally:
        outage.restore()
    assert is_unavailable(cut.value)
    # Re-raised by other code as its own error (`raise … from`), it is still recognised.
    wrapped = RuntimeError("while verifying a token")
    wrapped.__cause__ = cut.value
    assert is_unavailable(wrapped)


def test_a_pool_that_hands_out_no_connection_in_time_counts_as_unavailable(
    database_url: str,
) -> None:
    # Every connection busy past the pool timeout: the database is not answering this server.
    engine = sa.create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.05)
    try:
        with engine.connect(), pytest.raises(sa.exc.TimeoutError) as timed_out:
            engine.connect()
        assert is_unavailable(timed_out.value)
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_after_a_restart_no_call_is_handed_a_dead_pooled_connection(
    outage: DatabaseOutage,
) -> None:
    # A restarting server closes every connection; the pool still holds them. Each checkout
    # must notice and connect afresh, so not one statement after the restart fails.
    held = [outage.engine.connect() for _ in range(8)]
    for connection in held:
        connection.exec_driver_sql("SELECT 1")
        connection.close()  # back to the pool, alive
    outage.cut()
    outage.restore()
    for engine in (outage.sessions.statements, outage.engine):
        for _ in range(len(held)):
            with engine.connect() as connection:
                assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    with outage.sessions.write.begin() as session:
        assert session.execute(sa.text("SELECT 1")).scalar() == 1
