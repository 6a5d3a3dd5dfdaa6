"""Signing keys: creation on first start, rotation end to end, replicas, the key at rest, the
algorithms, and `luman-server keys`, through real servers on both databases.

Time is the injected clock: rotation schedules, key retirement and the key reloads all follow it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App, build_server
from luman.server.auth.key_ring import (
    PUBLISH_AHEAD,
    RELOAD_INTERVAL,
    KeyRing,
    LoadedKey,
)
from luman.server.auth.passwords import PasswordHasher
from luman.server.auth.signing_keys import KeyCipher, SigningKeyError
from luman.server.config import ConfigError, Settings
from luman.server.db.models import SigningKey
from luman.server.db.session import Sessions, make_engine, make_sessions
from luman.server.main import cli
from tests.support import FakeClock, get_me, refused_reason, register

Stub = auth_service_pb2_grpc.AuthServiceStub


@dataclasses.dataclass
class Replica:
    app: App
    auth: Stub
    clock: FakeClock

    @property
    def keys(self) -> KeyRing:
        assert self.app.keys is not None
        return self.app.keys


StartReplica = Callable[..., Replica]


@pytest.fixture
def start_replica(settings: Settings, hasher: PasswordHasher) -> Iterator[StartReplica]:
    """Start a server process's worth of state on the test database: its own engine, its own
    key ring, and (unless given one) its own clock at the shared start time."""
    with contextlib.ExitStack() as stack:

        def start(clock: FakeClock | None = None, **changes: Any) -> Replica:
            clock = clock or FakeClock()
            engine = make_engine(settings.database_url, pool_size=4)
            stack.callback(engine.dispose)
            changed = dataclasses.replace(settings, **changes)
            app = build_server(changed, make_sessions(engine), clock=clock, hasher=hasher)
            app.start()
            stack.callback(app.stop, None)
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{app.port}"))
            return Replica(app, Stub(channel), clock)

        yield start


def _kid(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def _jwks_kids(auth: Stub) -> list[str]:
    return [key.kid for key in auth.GetJwks(auth_service_pb2.GetJwksRequest()).keys]


def _forge(key: LoadedKey, token: str, **changes: Any) -> str:
    """`token`'s claims, changed, signed with `key` as the server would sign them."""
    claims = jwt.decode(token, options={"verify_signature": False}) | changes
    assert key.private_key is not None
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})


def _rows(sessions: Sessions) -> list[SigningKey]:
    with sessions.read() as session:
        return list(session.scalars(sa.select(SigningKey).order_by(SigningKey.generation)))


# --- First start ------------------------------------------------------------------------------


def test_the_first_start_creates_one_active_ed25519_key(
    app: App, auth: Stub, sessions: Sessions
) -> None:
    rows = _rows(sessions)
    assert len(rows) == 1
    assert (rows[0].generation, rows[0].algorithm, rows[0].retire_time) == (1, "EdDSA", None)
    token = register(auth).tokens.access_token
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert _kid(token) == rows[0].kid
    assert _jwks_kids(auth) == [rows[0].kid]
    # Public, and cacheable: gRPC callers see the max-age the HTTP route sends.
    _, call = auth.GetJwks.with_call(auth_service_pb2.GetJwksRequest())
    assert ("cache-control", "public, max-age=300") in call.initial_metadata()


def test_replicas_starting_at_once_on_an_empty_table_agree_on_one_key(
    settings: Settings, clock: FakeClock
) -> None:
    # Four processes' worth of key rings, each on its own engine, released together.
    count = 4
    engines = [make_engine(settings.database_url, pool_size=1) for _ in range(count)]
    rings = [KeyRing.from_settings(settings, make_sessions(e), clock) for e in engines]
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def start(ring: KeyRing) -> None:
        barrier.wait()
        try:
            ring.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(ring,)) for ring in rings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert errors == []
        kids = {ring.signing_key().kid for ring in rings}
        assert len(kids) == 1
        rows = _rows(make_sessions(engines[0]))
        assert [row.kid for row in rows] == list(kids)
    finally:
        for engine in engines:
            engine.dispose()


# --- Rotation ---------------------------------------------------------------------------------


def test_rotation_end_to_end(app: App, auth: Stub, clock: FakeClock) -> None:
    assert app.keys is not None
    old_token = register(auth).tokens.access_token
    old = app.keys.signing_key()
    # A token the old key signs with a long life: its key's retirement is what refuses it.
    long_lived = _forge(old, old_token, exp=int((clock() + dt.timedelta(days=30)).timestamp()))

    new = app.keys.rotate()
    # Published at once, not signing yet.
    assert _jwks_kids(auth) == [new.kid, old.kid]
    assert _kid(register(auth).tokens.access_token) == old.kid
    assert [state for _, state in app.keys.all_keys()] == ["active", "next"]

    clock.advance(seconds=PUBLISH_AHEAD.total_seconds())
    fresh = register(auth).tokens.access_token
    assert _kid(fresh) == new.kid
    assert [state for _, state in app.keys.all_keys()] == ["verifying", "active"]
    # Tokens of the old key stay valid until they expire.
    get_me(auth, old_token)
    get_me(auth, long_lived)
    assert _jwks_kids(auth) == [new.kid, old.kid]

    retire_time = app.keys.all_keys()[0][0].retire_time
    assert retire_time is not None
    # Retire = stopped signing + one reload interval + access-token lifetime + 60 s skew.
    assert retire_time == clock() + RELOAD_INTERVAL + dt.timedelta(minutes=15, seconds=60)
    clock.advance(seconds=(retire_time - clock()).total_seconds() - 1)
    get_me(auth, long_lived)
    clock.advance(seconds=1)
    assert refused_reason(auth, long_lived) == "TOKEN_INVALID"
    assert _jwks_kids(auth) == [new.kid]
    assert [state for _, state in app.keys.all_keys()] == ["retired", "active"]
    get_me(auth, register(auth).tokens.access_token)


def test_rotate_now_signs_at_once_and_activates_a_scheduled_key(
    app: App, auth: Stub, clock: FakeClock
) -> None:
    assert app.keys is not None
    first = app.keys.signing_key()
    scheduled = app.keys.rotate()
    with pytest.raises(SigningKeyError, match="already scheduled"):
        app.keys.rotate()
    # --now with a rotation pending starts that key rather than adding a third.
    assert app.keys.rotate(immediately=True).kid == scheduled.kid
    assert _kid(register(auth).tokens.access_token) == scheduled.kid
    third = app.keys.rotate(immediately=True)
    assert _kid(register(auth).tokens.access_token) == third.kid
    assert [(k.kid, s) for k, s in app.keys.all_keys()] == [
        (first.kid, "verifying"),
        (scheduled.kid, "verifying"),
        (third.kid, "active"),
    ]


def test_a_token_signed_after_a_rotation_verifies_at_once_on_another_replica(
    start_replica: StartReplica,
) -> None:
    one = start_replica()
    two = start_replica()
    assert one.keys.signing_key().kid == two.keys.signing_key().kid
    user = register(one.auth)

    new = one.keys.rotate(immediately=True)
    token = one.auth.Login(
        auth_service_pb2.LoginRequest(email=user.user.email, password="correct horse battery")
    ).tokens.access_token
    assert _kid(token) == new.kid
    # Replica two has not reloaded (its clock has not moved): the unknown kid makes it look.
    assert get_me(two.auth, token).user.id == user.user.id
    # It keeps signing with its key until its next reload (one minute), then switches.
    assert _kid(register(two.auth).tokens.access_token) == new.kid
    assert two.keys.signing_key().kid == new.kid


def test_an_unknown_kid_reloads_the_keys_at_most_once_a_second(
    app: App, auth: Stub, clock: FakeClock, sessions: Sessions
) -> None:
    assert app.keys is not None
    token = register(auth).tokens.access_token
    key = app.keys.signing_key()
    reads = []

    @sa.event.listens_for(sessions.engine, "before_cursor_execute")
    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM signing_keys" in statement:
            reads.append(statement)

    try:
        for _ in range(5):
            assert app.keys.verification_key("made-up") is None
        assert len(reads) == 1
        clock.advance(seconds=1)
        assert app.keys.verification_key("made-up") is None
        assert len(reads) == 2
        # A known kid costs no query.
        assert app.keys.verification_key(key.kid) is not None
        get_me(auth, token)
        assert len(reads) == 2
    finally:
        sa.event.remove(sessions.engine, "before_cursor_execute", count)


# --- Algorithms -------------------------------------------------------------------------------


def test_es256_configuration_signs_with_a_p256_key(
    start_replica: StartReplica, sessions: Sessions
) -> None:
    replica = start_replica(jwt_algorithm="ES256")
    token = register(replica.auth).tokens.access_token
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    (key,) = replica.auth.GetJwks(auth_service_pb2.GetJwksRequest()).keys
    assert (key.kty, key.crv, key.alg, key.use, key.kid) == (
        "EC",
        "P-256",
        "ES256",
        "sig",
        _kid(token),
    )
    assert key.HasField("x")
    assert key.HasField("y")
    assert get_me(replica.auth, token).user.email
    assert [row.algorithm for row in _rows(sessions)] == ["ES256"]


def test_changing_jwt_algorithm_schedules_a_rotation_to_it(
    start_replica: StartReplica, sessions: Sessions
) -> None:
    first = start_replica()
    token = register(first.auth).tokens.access_token
    second = start_replica(jwt_algorithm="ES256")
    rows = _rows(sessions)
    assert [row.algorithm for row in rows] == ["EdDSA", "ES256"]
    # Published ahead, as `keys rotate` does: tokens already out keep working everywhere.
    assert _jwks_kids(second.auth) == [rows[1].kid, rows[0].kid]
    assert _kid(register(second.auth).tokens.access_token) == rows[0].kid
    get_me(second.auth, token)
    second.clock.advance(seconds=PUBLISH_AHEAD.total_seconds())
    assert jwt.get_unverified_header(register(second.auth).tokens.access_token)["alg"] == "ES256"


def test_hs256_configuration_signs_with_jwt_secret_and_publishes_nothing(
    start_replica: StartReplica, settings: Settings, sessions: Sessions
) -> None:
    replica = start_replica(jwt_algorithm="HS256")
    assert replica.app.keys is None
    token = register(replica.auth).tokens.access_token
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    jwt.decode(
        token,
        settings.jwt_secret,
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert get_me(replica.auth, token).user.email
    assert list(replica.auth.GetJwks(auth_service_pb2.GetJwksRequest()).keys) == []
    assert _rows(sessions) == []


# --- The key at rest --------------------------------------------------------------------------


def test_the_private_key_is_not_readable_from_the_database_row(
    app: App, sessions: Sessions, settings: Settings
) -> None:
    assert app.keys is not None
    key = app.keys.signing_key()
    assert key.private_key is not None
    raw = key.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    der = key.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (row,) = _rows(sessions)
    assert raw not in row.private_key_encrypted
    assert der not in row.private_key_encrypted
    assert set(json.loads(row.public_jwk)) == {"kty", "crv", "x", "kid", "alg", "use"}
    # Only the configured secret opens it, and only for this row's kid and algorithm.
    opened = KeyCipher(settings.signing_key_secret).decrypt(
        row.kid, row.algorithm, row.private_key_encrypted
    )
    assert (
        opened.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        == raw
    )
    with pytest.raises(SigningKeyError):
        KeyCipher(settings.signing_key_secret + "x").decrypt(
            row.kid, row.algorithm, row.private_key_encrypted
        )
    with pytest.raises(SigningKeyError):
        KeyCipher(settings.signing_key_secret).decrypt(
            "another-kid", row.algorithm, row.private_key_encrypted
        )


def test_a_wrong_signing_key_secret_fails_at_start_with_a_clear_message(
    app: App,
    settings: Settings,
    sessions: Sessions,
    clock: FakeClock,
    hasher: PasswordHasher,
    tmp_path: Path,
) -> None:
    wrong = dataclasses.replace(settings, signing_key_secret="another-secret-" + "d" * 32)
    with pytest.raises(SigningKeyError, match="SIGNING_KEY_SECRET does not decrypt"):
        build_server(wrong, sessions, clock=clock, hasher=hasher)
    # `luman-server serve` says so in one line, before it listens.
    result = CliRunner().invoke(cli, ["serve"], env=_env(wrong, tmp_path))
    assert result.exit_code == 1
    assert "Error: SIGNING_KEY_SECRET does not decrypt signing key" in result.output
    assert "Traceback" not in result.output


# --- `luman-server keys` ----------------------------------------------------------------------


def _env(settings: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "LUMAN_ENV": "test",
        "LUMAN_DATA_DIR": str(tmp_path / "cli-data"),
        "DATABASE_URL": settings.database_url,
        "JWT_SECRET": settings.jwt_secret,
        "JWT_REFRESH_SECRET": settings.jwt_refresh_secret,
        "SIGNING_KEY_SECRET": settings.signing_key_secret,
        "PORT": "0",
        "HTTP_PORT": "0",
        "HOST": "127.0.0.1",
        **extra,
    }


def test_keys_list_and_rotate_commands(
    app: App, auth: Stub, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    assert app.keys is not None
    runner = CliRunner()
    env = _env(settings, tmp_path)
    first = app.keys.signing_key().kid

    def invoke(*args: str) -> Any:
        return runner.invoke(cli, ["keys", *args], env=env, obj={"clock": clock})

    listed = invoke("list")
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[0].split() == [
        "KID", "ALGORITHM", "STATE", "CREATED", "SIGNS", "FROM", "RETIRES"
    ]  # fmt: skip
    assert listed.output.splitlines()[1].split()[:3] == [first, "EdDSA", "active"]

    rotated = invoke("rotate")
    assert rotated.exit_code == 0, rotated.output
    as_json = json.loads(invoke("list", "--json").output)
    assert [(k["kid"], k["state"]) for k in as_json] == [
        (first, "active"),
        (as_json[1]["kid"], "next"),
    ]
    second = as_json[1]["kid"]
    assert f"key {second} (EdDSA) is published and signs from " in rotated.output
    assert f"key {first} (active) retires at {as_json[0]['retire_time']}" in rotated.output
    assert as_json[1]["activate_time"] == (clock() + PUBLISH_AHEAD).isoformat()

    again = invoke("rotate")
    assert again.exit_code == 1
    assert "already scheduled" in again.output
    now = invoke("rotate", "--now")
    assert now.exit_code == 0, now.output
    assert [k["state"] for k in json.loads(invoke("list", "--json").output)] == [
        "verifying",
        "active",
    ]
    # The running server learns of it within a reload interval.
    clock.advance(seconds=RELOAD_INTERVAL.total_seconds())
    assert _kid(register(auth).tokens.access_token) == second


def test_keys_commands_refuse_hs256_and_a_wrong_secret(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    hs256 = runner.invoke(
        cli, ["keys", "list"], env=_env(settings, tmp_path, JWT_ALGORITHM="HS256")
    )
    assert hs256.exit_code == 1
    assert "JWT_ALGORITHM is HS256" in hs256.output
    empty = runner.invoke(cli, ["keys", "list"], env=_env(settings, tmp_path))
    assert empty.exit_code == 0
    assert "no signing keys yet" in empty.output
    assert (
        runner.invoke(cli, ["keys", "rotate", "--now"], env=_env(settings, tmp_path)).exit_code == 0
    )
    wrong = _env(settings, tmp_path, SIGNING_KEY_SECRET="another-secret-" + "d" * 32)
    refused = runner.invoke(cli, ["keys", "rotate"], env=wrong)
    assert refused.exit_code == 1
    assert "SIGNING_KEY_SECRET does not decrypt" in refused.output


# --- Configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("EdDSA", "EdDSA"), ("eddsa", "EdDSA"), ("es256", "ES256"), ("HS256", "HS256")],
)
def test_jwt_algorithm_setting(value: str, expected: str, tmp_path: Path) -> None:
    settings = Settings.from_env({"JWT_ALGORITHM": value, "LUMAN_DATA_DIR": str(tmp_path)})
    assert settings.jwt_algorithm == expected


def test_jwt_algorithm_setting_refuses_others(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JWT_ALGORITHM must be one of EdDSA, ES256, HS256"):
        Settings.from_env({"JWT_ALGORITHM": "RS256", "LUMAN_DATA_DIR": str(tmp_path)})


def test_production_requires_a_long_signing_key_secret_unless_hs256() -> None:
    production = {
        "LUMAN_ENV": "production",
        "JWT_SECRET": "a" * 32,
        "JWT_REFRESH_SECRET": "b" * 32,
        "SMTP_URL": "smtp://127.0.0.1:25",
        "PUBLIC_URL": "https://id.example.com",
    }
    with pytest.raises(ConfigError, match="SIGNING_KEY_SECRET is required"):
        Settings.from_env(production)
    with pytest.raises(ConfigError, match="SIGNING_KEY_SECRET must be at least 32 bytes"):
        Settings.from_env(production | {"SIGNING_KEY_SECRET": "short"})
    assert Settings.from_env(production | {"SIGNING_KEY_SECRET": "c" * 32}).signing_key_secret
    assert Settings.from_env(production | {"JWT_ALGORITHM": "HS256"}).signing_key_secret == ""


def test_development_generates_a_signing_key_secret_and_keeps_older_jwt_secrets(
    tmp_path: Path,
) -> None:
    # A dev-secrets.json written before signing keys: its JWT secrets survive the upgrade.
    path = tmp_path / "dev-secrets.json"
    path.write_text(json.dumps({"jwt_secret": "a" * 64, "jwt_refresh_secret": "b" * 64}))
    first = Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path)})
    assert (first.jwt_secret, first.jwt_refresh_secret) == ("a" * 64, "b" * 64)
    assert len(first.signing_key_secret) >= 32
    second = Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path)})
    assert second.signing_key_secret == first.signing_key_secret
    assert json.loads(path.read_text())["signing_key_secret"] == first.signing_key_secret
