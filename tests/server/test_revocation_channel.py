"""Revocations and key rotations reach every server on the database before its next call
(auth/invalidations.py).

Two servers on one database, each with its own engine, verified-token cache and key ring: on
SQLite (the shared events file next to the database) and on PostgreSQL (LISTEN/NOTIFY). A
token is first answered from the other server's cache (a hit, counted); the revocation on one
server is then refused by the other on the very next call. Time moves only through the
FakeClock; waits for a thread (the PostgreSQL listener) are bounded polls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import jwt
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.principal import Credential, Principal
from luman.organization.v1 import organization_pb2, organization_service_pb2
from luman.organization.v1 import organization_service_pb2_grpc as org_grpc
from luman.server import main as server_main
from luman.server.app import App, build_server
from luman.server.auth import invalidations
from luman.server.auth.invalidations import FileChannel, PostgresChannel
from luman.server.auth.passwords import PasswordHasher
from luman.server.auth.token_cache import TokenCache
from luman.server.config import Settings
from luman.server.db.session import make_engine, make_sessions
from tests.server.organization_support import (
    add_member,
    create_organization,
    error_of,
    sign_up,
)
from tests.support import (
    PASSWORD,
    FakeClock,
    bearer,
    get_me,
    refused_reason,
    register,
    unique_email,
)

AuthStub = auth_service_pb2_grpc.AuthServiceStub
OrgStub = org_grpc.OrganizationServiceStub
WAIT = 10.0  # seconds: only a broken channel makes a test wait this long
CHANNEL_LOGGER = "luman.server.auth.invalidations"
# joserfc warns that RFC 9864 deprecates the "EdDSA" name; see tests/gateway/test_gateway_jwks.py.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")


@dataclasses.dataclass(frozen=True)
class Server:
    app: App
    auth: AuthStub
    orgs: OrgStub

    @property
    def cache(self) -> TokenCache:
        return self.app.auth.token_cache


@pytest.fixture
def servers(
    settings: Settings, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[tuple[Server, Server]]:
    """Two servers on the test database, as two processes would be: an engine each."""
    with contextlib.ExitStack() as stack:

        def start() -> Server:
            engine = make_engine(settings.database_url, pool_size=4)
            stack.callback(engine.dispose)
            app = build_server(settings, make_sessions(engine), clock=clock, hasher=hasher)
            app.start()
            stack.callback(app.stop, None)
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{app.port}"))
            return Server(app, AuthStub(channel), OrgStub(channel))

        yield start(), start()


def _cached_on(server: Server, token: str) -> None:
    """Verify `token` on `server`, then see the next call answered from its cache."""
    get_me(server.auth, token)
    hits = server.cache.hits
    get_me(server.auth, token)
    assert server.cache.hits == hits + 1


def _cli_token(server: Server, email: str) -> str:
    response = server.auth.CliLogin(
        auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD)
    )
    token: str = response.token
    return token


def _principal(credential_id: uuid.UUID) -> Principal:
    return Principal(uuid.uuid4(), Credential.CLI_TOKEN, credential_id)


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the invalidation channel did not get there"
        time.sleep(0.01)


# --- Revocations --------------------------------------------------------------------------------


def test_cli_logout_on_one_server_is_refused_by_the_other_on_its_next_call(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    email = unique_email()
    register(a.auth, email=email)
    token, other = _cli_token(a, email), _cli_token(a, email)
    _cached_on(b, token)
    _cached_on(b, other)

    a.auth.CliLogout(auth_service_pb2.CliLogoutRequest(), metadata=bearer(token))

    assert refused_reason(b.auth, token) == "TOKEN_REVOKED"
    assert get_me(b.auth, other).user.email == email  # only that token


def test_logout_all_on_one_server_is_refused_by_the_other_on_its_next_call(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    email = unique_email()
    access = register(a.auth, email=email).tokens.access_token
    cli = _cli_token(a, email)
    _cached_on(b, access)
    _cached_on(b, cli)

    a.auth.LogoutAll(
        auth_service_pb2.LogoutAllRequest(include_cli_tokens=True), metadata=bearer(access)
    )

    assert refused_reason(b.auth, access) == "TOKEN_REVOKED"
    assert refused_reason(b.auth, cli) == "TOKEN_REVOKED"


def test_a_password_change_on_one_server_signs_the_other_sessions_out_on_the_other(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    email = unique_email()
    mine = register(a.auth, email=email).tokens.access_token
    elsewhere = a.auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))
    _cached_on(b, mine)
    _cached_on(b, elsewhere.tokens.access_token)

    a.auth.ChangePassword(
        auth_service_pb2.ChangePasswordRequest(
            current_password=PASSWORD, new_password="another horse battery"
        ),
        metadata=bearer(mine),
    )

    assert refused_reason(b.auth, elsewhere.tokens.access_token) == "TOKEN_REVOKED"
    assert get_me(b.auth, mine).user.email == email  # the caller's own sign-in stays


def test_refresh_token_reuse_on_one_server_revokes_the_sign_in_on_the_other(
    servers: tuple[Server, Server], settings: Settings, clock: FakeClock
) -> None:
    a, b = servers
    first = register(a.auth).tokens
    _cached_on(b, first.access_token)
    a.auth.RefreshToken(auth_service_pb2.RefreshTokenRequest(refresh_token=first.refresh_token))
    clock.advance(seconds=settings.refresh_reuse_grace_seconds + 1)  # past the grace

    reused = error_of(
        lambda: a.auth.RefreshToken(
            auth_service_pb2.RefreshTokenRequest(refresh_token=first.refresh_token)
        )
    )
    assert reused.reason == "REFRESH_TOKEN_REUSED"

    assert refused_reason(b.auth, first.access_token) == "TOKEN_REVOKED"


def test_a_session_revoked_on_one_server_is_refused_by_the_other_on_its_next_call(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    email = unique_email()
    doomed = register(a.auth, email=email).tokens.access_token
    mine = a.auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))
    _cached_on(b, doomed)
    listed = a.auth.ListSessions(
        auth_service_pb2.ListSessionsRequest(), metadata=bearer(mine.tokens.access_token)
    )
    (other,) = [s for s in listed.sessions if not s.current]

    a.auth.RevokeSession(
        auth_service_pb2.RevokeSessionRequest(session_id=other.id),
        metadata=bearer(mine.tokens.access_token),
    )

    assert refused_reason(b.auth, doomed) == "TOKEN_REVOKED"


def test_a_service_account_deleted_on_one_server_is_refused_by_the_other_on_its_next_call(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    owner = sign_up(a.auth)
    organization = create_organization(a.orgs, owner)
    created = a.orgs.CreateServiceAccount(
        organization_service_pb2.CreateServiceAccountRequest(
            slug=organization.slug, name="billing", scopes=["introspect"]
        ),
        metadata=owner.metadata,
    )
    token = a.auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=created.secret)
    ).access_token
    request = auth_service_pb2.IntrospectTokenRequest(token=token)
    b.auth.IntrospectToken(request, metadata=bearer(token))
    hits = b.cache.hits
    assert b.auth.IntrospectToken(request, metadata=bearer(token)).active
    assert b.cache.hits == hits + 1

    a.orgs.DeleteServiceAccount(
        organization_service_pb2.DeleteServiceAccountRequest(
            slug=organization.slug, service_account_id=created.service_account.id
        ),
        metadata=owner.metadata,
    )

    refused = error_of(lambda: b.auth.IntrospectToken(request, metadata=bearer(token)))
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")


def test_a_member_removed_on_one_server_is_refused_by_the_other_without_an_event(
    servers: tuple[Server, Server],
) -> None:
    # Memberships and roles are read in every call's transaction, never cached: the removal
    # holds at once everywhere, and the member's token (still cached on B) stays valid.
    a, b = servers
    owner, member = sign_up(a.auth, "owner"), sign_up(a.auth, "member")
    organization = create_organization(a.orgs, owner)
    add_member(a.orgs, owner, organization, member, organization_pb2.ORGANIZATION_ROLE_ADMIN)
    members = organization_service_pb2.ListMembersRequest(organization_id=organization.id)
    b.orgs.ListMembers(members, metadata=member.metadata)
    _cached_on(b, member.token)

    a.orgs.RemoveMember(
        organization_service_pb2.RemoveMemberRequest(
            organization_id=organization.id, user_id=member.id
        ),
        metadata=owner.metadata,
    )

    refused = error_of(lambda: b.orgs.ListMembers(members, metadata=member.metadata))
    assert (refused.code, refused.reason) == (grpc.StatusCode.NOT_FOUND, "ORGANIZATION_NOT_FOUND")
    _cached_on(b, member.token)


# --- Signing keys -------------------------------------------------------------------------------


def _kid(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def test_a_key_rotated_now_on_one_server_signs_on_the_other_at_once(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    assert a.app.keys is not None
    assert b.app.keys is not None
    old = b.app.keys.signing_key().kid

    new = a.app.keys.rotate(immediately=True)

    assert new.kid != old
    assert _kid(register(b.auth).tokens.access_token) == new.kid
    published = b.auth.GetJwks(auth_service_pb2.GetJwksRequest()).keys
    assert [key.kid for key in published][:2] == [new.kid, old]


def test_keys_rotate_command_reaches_running_servers_at_once(
    servers: tuple[Server, Server], settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    a, b = servers
    env = {
        "LUMAN_ENV": "test",
        "LUMAN_DATA_DIR": str(tmp_path / "cli-data"),
        "DATABASE_URL": settings.database_url,
        "JWT_SECRET": settings.jwt_secret,
        "JWT_REFRESH_SECRET": settings.jwt_refresh_secret,
        "SIGNING_KEY_SECRET": settings.signing_key_secret,
    }
    published = CliRunner().invoke(
        server_main.cli, ["keys", "rotate"], env=env, obj={"clock": clock}
    )
    assert published.exit_code == 0, published.output
    # Scheduled: published at once by both servers, signing later.
    for server in (a, b):
        kids = [k.kid for k in server.auth.GetJwks(auth_service_pb2.GetJwksRequest()).keys]
        assert len(kids) == 2
    scheduled = kids[0]

    now = CliRunner().invoke(
        server_main.cli, ["keys", "rotate", "--now"], env=env, obj={"clock": clock}
    )
    assert now.exit_code == 0, now.output

    for server in (a, b):
        assert _kid(register(server.auth).tokens.access_token) == scheduled


# --- The channel down -----------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lost_listen_connection_falls_back_to_the_ttl_and_recovers(
    servers: tuple[Server, Server],
    settings: Settings,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = servers
    channel = b.app.invalidations
    assert isinstance(channel, PostgresChannel)
    channel.retry_delays = (3600.0,)  # no reconnection until the test asks for it
    email = unique_email()
    register(a.auth, email=email)
    first, second = _cli_token(a, email), _cli_token(a, email)
    _cached_on(b, first)
    caplog.set_level(logging.INFO, logger=CHANNEL_LOGGER)

    admin = make_engine(settings.database_url, pool_size=1)
    try:
        with admin.connect() as conn:
            # Waits (up to 5 s) until the backend has gone.
            assert conn.execute(
                sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": channel.backend_pid}
            ).scalar()
    finally:
        admin.dispose()
    _wait_until(lambda: not channel.connected)
    assert "invalidation channel down" in caplog.text

    a.auth.CliLogout(auth_service_pb2.CliLogoutRequest(), metadata=bearer(first))
    # Nothing tells B: its cached entry is believed until its recheck, TOKEN_CACHE_TTL.
    assert get_me(b.auth, first).user.email == email
    clock.advance(seconds=settings.token_cache_ttl)
    assert refused_reason(b.auth, first) == "TOKEN_REVOKED"

    channel.reconnect()
    _wait_until(lambda: "invalidation channel back" in caplog.text)
    assert channel.connected
    _cached_on(b, second)
    a.auth.CliLogout(auth_service_pb2.CliLogoutRequest(), metadata=bearer(second))
    assert refused_reason(b.auth, second) == "TOKEN_REVOKED"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgresql_forget_returns_once_every_other_process_has_applied_it(
    settings: Settings,
) -> None:
    # No lookup on B catches up here (len() does not): B's listener thread has applied the
    # event, and acknowledged it, before A's forget() returned.
    clock = FakeClock()
    caches = (TokenCache(30, clock), TokenCache(30, clock))
    with contextlib.ExitStack() as stack:
        for cache in caches:
            engine = make_engine(settings.database_url, pool_size=2)
            stack.callback(engine.dispose)
            channel = PostgresChannel(engine)
            channel.attach(cache, None)
            channel.start()
            stack.callback(channel.close)
            assert channel.connected
        a, b = caches
        for _ in range(20):
            credential = uuid.uuid4()
            b.put(
                b"token", _principal(credential), None, expire_time=None, generation=b.generation()
            )
            assert len(b) == 1
            a.forget(credential_id=credential)
            assert len(b) == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_process_that_does_not_acknowledge_is_waited_for_at_most_ack_timeout(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(invalidations, "ACK_TIMEOUT", 0.2)
    engine = make_engine(settings.database_url, pool_size=2)
    channel = PostgresChannel(engine)
    try:
        channel.start()
        assert channel.connected
        with engine.connect() as silent:
            # Looks like a listening server (its application_name: another sender's id),
            # never answers.
            listening = silent.execute(
                sa.text("SELECT application_name FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": channel.backend_pid},
            ).scalar_one()
            prefix, _, sender = listening.rpartition(" ")
            assert sender == channel.sender.hex()
            silent.execute(
                sa.text("SELECT set_config('application_name', :name, false)"),
                {"name": f"{prefix} {'f' * 16}"},  # silent_sender
            )
            silent_sender = "f" * 16

            def publish() -> float:
                started = time.monotonic()
                channel.publish(invalidations.Invalidation(invalidations.Kind.USER, uuid.uuid4()))
                return time.monotonic() - started

            waited = publish()
            # Once silent, it is not waited for again...
            again = publish()
            # ...until it is heard from.
            schema = silent.execute(sa.text("SELECT current_schema()")).scalar_one()
            silent.execute(
                sa.text("SELECT pg_notify(:channel, :payload)"),
                {
                    "channel": invalidations._channel_for(schema),
                    "payload": f"a {silent_sender} 0 -",
                },
            )
            silent.commit()
            deadline = time.monotonic() + WAIT
            while silent_sender in channel._silent and time.monotonic() < deadline:
                channel.catch_up()
                time.sleep(0.01)
            heard = publish()
            silent.execute(sa.text("RESET application_name"))
        assert 0.2 <= waited < WAIT
        assert again < 0.2
        assert 0.2 <= heard < WAIT
        assert "1 other process(es) did not acknowledge an invalidation" in caplog.text
    finally:
        channel.close()
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_listen_connection_whose_heartbeat_does_not_come_back_is_taken_for_lost(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A connection dropped without a word (a NAT entry gone) cannot be made here: its
    # heartbeat is lost on the way out instead, which looks the same from the listener.
    monkeypatch.setattr(invalidations, "HEARTBEAT_INTERVAL", 0.05)
    monkeypatch.setattr(invalidations, "HEARTBEAT_TIMEOUT", 0.3)
    monkeypatch.setattr(invalidations, "IDLE_WAKE", 0.05)
    engine = make_engine(settings.database_url, pool_size=2)
    nowhere = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    channel = PostgresChannel(engine)
    channel.retry_delays = (3600.0,)
    try:
        channel.start()
        # Heartbeats that come back keep it up.
        _wait_until(
            lambda: (
                channel._heartbeat_time is not None and channel._heard >= channel._heartbeat_time
            )
        )
        assert channel.connected
        monkeypatch.setattr(channel, "_notify_engine", nowhere)
        _wait_until(lambda: not channel.connected)
        assert "its own heartbeat did not come back" in caplog.text
    finally:
        channel.close()
        nowhere.dispose()
        engine.dispose()


def test_an_in_memory_sqlite_database_has_no_channel() -> None:
    engine = sa.create_engine("sqlite://")
    try:
        assert invalidations.open_channel(engine) is None
    finally:
        engine.dispose()


# --- The SQLite file, on its own ------------------------------------------------------------


@pytest.fixture
def file_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TokenCache, TokenCache]]:
    """A writer and a reader cache on one events file that holds 4 records before it is
    replaced; the reader reads only when a lookup asks (its thread never wakes)."""
    monkeypatch.setattr(invalidations, "IDLE_WAKE", 3600.0)
    clock = FakeClock()
    caches = (TokenCache(30, clock), TokenCache(30, clock))
    channels = [FileChannel(tmp_path / "luman.db-invalidations", max_bytes=4 * 32) for _ in caches]
    for channel, cache in zip(channels, caches, strict=True):
        channel.attach(cache, None)
        channel.start()
    yield caches
    for channel in channels:
        channel.close()


def test_the_events_file_is_replaced_when_full_and_readers_follow_it(
    file_caches: tuple[TokenCache, TokenCache], tmp_path: Path
) -> None:
    writer, reader = file_caches
    kept = uuid.uuid4()
    reader.put(b"kept", _principal(kept), None, expire_time=None, generation=reader.generation())
    for n in range(10):  # three files' worth
        credential = uuid.uuid4()
        key = f"token-{n}".encode()
        reader.put(
            key, _principal(credential), None, expire_time=None, generation=reader.generation()
        )
        assert reader.get(key) is not None
        writer.forget(credential_id=credential)
        assert reader.get(key) is None
    assert reader.get(b"kept") is not None
    assert (tmp_path / "luman.db-invalidations").stat().st_size <= 5 * 32


def test_a_reader_that_skipped_a_whole_events_file_forgets_everything(
    file_caches: tuple[TokenCache, TokenCache],
) -> None:
    writer, reader = file_caches
    reader.put(
        b"kept", _principal(uuid.uuid4()), None, expire_time=None, generation=reader.generation()
    )
    for _ in range(8):  # the reader's file is replaced, and then its replacement
        writer.forget(credential_id=uuid.uuid4())
    assert reader.get(b"kept") is None


def test_an_events_file_deleted_by_hand_makes_readers_forget_everything(
    tmp_path: Path,
) -> None:
    # Not "the next call" (nothing in the deleted file says what happened): the reader's
    # thread notices the new file within IDLE_WAKE and forgets everything it holds.
    path = tmp_path / "luman.db-invalidations"
    clock = FakeClock()
    writer, reader = TokenCache(30, clock), TokenCache(30, clock)
    channels = [FileChannel(path), FileChannel(path)]
    for channel, cache in zip(channels, (writer, reader), strict=True):
        channel.attach(cache, None)
        channel.start()
    try:
        reader.put(
            b"kept",
            _principal(uuid.uuid4()),
            None,
            expire_time=None,
            generation=reader.generation(),
        )
        path.unlink()
        writer.forget(credential_id=uuid.uuid4())  # writes a new file
        assert path.exists()
        _wait_until(lambda: len(reader) == 0)
        # And it reads the new file from then on.
        credential = uuid.uuid4()
        reader.put(
            b"next", _principal(credential), None, expire_time=None, generation=reader.generation()
        )
        writer.forget(credential_id=credential)
        assert reader.get(b"next") is None
    finally:
        for channel in channels:
            channel.close()


def test_an_event_written_by_another_os_process_is_applied_on_the_next_lookup(
    tmp_path: Path,
) -> None:
    path = tmp_path / "luman.db-invalidations"
    cache = TokenCache(30, FakeClock())
    channel = FileChannel(path)
    channel.attach(cache, None)
    channel.start()
    try:
        credential = uuid.uuid4()
        cache.put(
            b"token", _principal(credential), None, expire_time=None, generation=cache.generation()
        )
        assert cache.get(b"token") is not None
        script = (
            "import sys, uuid\n"
            "from pathlib import Path\n"
            "from luman.server.auth.invalidations import FileChannel, Invalidation, Kind\n"
            "FileChannel(Path(sys.argv[1])).publish("
            "Invalidation(Kind.CREDENTIAL, uuid.UUID(sys.argv[2])))\n"
        )
        subprocess.run(
            [sys.executable, "-c", script, str(path), str(credential)],
            check=True,
            timeout=WAIT * 3,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert cache.get(b"token") is None
    finally:
        channel.close()
