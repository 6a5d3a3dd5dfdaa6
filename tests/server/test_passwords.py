"""PasswordHasher (unit) and rehash-on-login when the configured cost changes (through gRPC)."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import uuid
from collections.abc import Iterator

import bcrypt
import grpc
import pytest
from sqlalchemy import select

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.models import User
from luman.server.db.session import Sessions
from tests.support import PASSWORD, FakeClock, HookedHasher, register, unique_email


def _cost(password_hash: bytes | str) -> int:
    text = password_hash.decode() if isinstance(password_hash, bytes) else password_hash
    return int(text.split("$")[2])


@pytest.mark.parametrize("rounds", [4, 5])
def test_dummy_hash_is_a_real_bcrypt_hash_at_the_configured_cost(rounds: int) -> None:
    hasher = PasswordHasher(rounds)
    dummy = hasher.dummy_hash
    assert dummy.startswith(b"$2b$")
    assert len(dummy) == 60
    assert _cost(dummy) == rounds
    # Well formed: bcrypt runs the full computation and says "no" rather than raising.
    assert bcrypt.checkpw(PASSWORD.encode(), dummy) is False


def test_hash_then_verify(hasher: PasswordHasher) -> None:
    stored = hasher.hash(PASSWORD)
    assert stored.startswith("$2b$04$")
    assert PASSWORD not in stored
    assert hasher.verify(PASSWORD, stored)
    assert not hasher.verify(PASSWORD + "x", stored)
    assert hasher.hash(PASSWORD) != stored  # salted


def test_verify_without_a_hash_is_false_even_for_the_dummy_secret(hasher: PasswordHasher) -> None:
    assert not hasher.verify(PASSWORD, None)
    assert not hasher.verify("", None)


def test_needs_rehash_compares_cost() -> None:
    hasher = PasswordHasher(5)
    assert hasher.needs_rehash(PasswordHasher(4).hash(PASSWORD))
    assert not hasher.needs_rehash(hasher.hash(PASSWORD))
    assert hasher.needs_rehash("garbage")


@pytest.fixture
def auth_at_cost_5(
    settings: Settings, sessions: Sessions, clock: FakeClock
) -> Iterator[auth_service_pb2_grpc.AuthServiceStub]:
    """A second server on the same database whose hasher is configured one step costlier."""
    app = build_server(settings, sessions, clock=clock, hasher=PasswordHasher(5))
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield auth_service_pb2_grpc.AuthServiceStub(channel)
    finally:
        app.stop(None)


def _stored_hash(sessions: Sessions, user_id: str) -> str:
    with sessions.read() as session:
        return session.scalars(
            select(User.password_hash).where(User.id == uuid.UUID(user_id))
        ).one()


def test_login_rehashes_a_password_stored_at_another_cost(
    auth: auth_service_pb2_grpc.AuthServiceStub,
    auth_at_cost_5: auth_service_pb2_grpc.AuthServiceStub,
    sessions: Sessions,
) -> None:
    email = unique_email()
    user_id = register(auth, email=email).user.id
    assert _cost(_stored_hash(sessions, user_id)) == 4

    with pytest.raises(grpc.RpcError):
        auth_at_cost_5.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD + "x"))
    assert _cost(_stored_hash(sessions, user_id)) == 4  # a failed login changes nothing

    auth_at_cost_5.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))
    rehashed = _stored_hash(sessions, user_id)
    assert rehashed.startswith("$2b$05$")
    assert bcrypt.checkpw(PASSWORD.encode(), rehashed.encode())
    # The new hash still verifies, on either server.
    auth_at_cost_5.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))
    auth.CliLogin(auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD))


def test_unknown_user_is_checked_against_the_dummy_hash(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No timing assertion: record that the real bcrypt ran, and against which hash.
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def recording_checkpw(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording_checkpw)
    assert not hasher.verify(PASSWORD, None)
    assert checked == [hasher.dummy_hash]


def test_password_with_a_nul_byte_is_not_truncated(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    email = unique_email()
    register(auth, email=email, password="password\x00suffix")
    auth.Login(auth_service_pb2.LoginRequest(email=email, password="password\x00suffix"))
    for wrong in ("password", "password\x00other"):
        with pytest.raises(grpc.RpcError) as caught:
            auth.Login(auth_service_pb2.LoginRequest(email=email, password=wrong))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


class PriorityRecordingHasher(HookedHasher):
    """Records the nice value and thread of each bcrypt computation as it runs."""

    def __init__(self, rounds: int, **options: int) -> None:
        super().__init__(rounds, **options)
        self.seen: list[tuple[int, int]] = []  # (native thread id, nice)

    def on_bcrypt(self) -> None:
        thread = threading.get_native_id()
        self.seen.append((thread, os.getpriority(os.PRIO_PROCESS, thread)))


linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="per-thread nice values are a Linux feature"
)


@linux_only
def test_bcrypt_runs_on_its_own_threads_at_the_lowered_priority() -> None:
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    hasher = PriorityRecordingHasher(4, nice=5)
    try:
        stored = hasher.hash(PASSWORD)
        assert hasher.verify(PASSWORD, stored)
        assert not hasher.verify("wrong password", stored)
        assert not hasher.verify(PASSWORD, None)  # the dummy check runs there too
    finally:
        hasher.close()
    assert len(hasher.seen) == 4
    assert all(thread != threading.get_native_id() for thread, _ in hasher.seen)
    assert {nice for _, nice in hasher.seen} == {min(19, own + 5)}
    # The caller's own priority is untouched.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own


@linux_only
def test_nice_zero_hashes_at_the_servers_priority() -> None:
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    hasher = PriorityRecordingHasher(4, nice=0)
    try:
        hasher.hash(PASSWORD)
    finally:
        hasher.close()
    assert [nice for _, nice in hasher.seen] == [own]


def test_server_hashes_at_bcrypt_nice_and_stops_its_hashing_threads(
    settings: Settings, sessions: Sessions, clock: FakeClock
) -> None:
    app = build_server(dataclasses.replace(settings, bcrypt_nice=3), sessions, clock=clock)
    assert app.own_hasher is not None
    assert app.own_hasher.nice == 3
    before = set(threading.enumerate())
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            register(auth_service_pb2_grpc.AuthServiceStub(channel), unique_email())
        started = [t for t in set(threading.enumerate()) - before if t.name.startswith("bcrypt")]
        assert started
    finally:
        app.stop(None)
    assert not [t for t in started if t.is_alive()]
