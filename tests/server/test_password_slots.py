"""PasswordHasher's bounds: hash slots per usable core, and a bounded queue of waiting callers
beyond which a sign-in fails at once with RESOURCE_EXHAUSTED instead of holding a worker thread.

Slots are held by a hasher whose bcrypt work waits on a threading.Event, so every state is
reached deterministically; nothing here measures time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.errors import OverloadedError, ResourceExhaustedError
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.support import (
    PASSWORD,
    FakeClock,
    GatedHasher,
    bearer,
    register,
    rich_error,
    unique_email,
)

WAIT = 10.0  # seconds: only a broken test ever waits this long


def test_slots_default_to_the_usable_cores_and_waiters_to_twice_that() -> None:
    hasher = PasswordHasher(4)
    assert hasher.slots == len(os.sched_getaffinity(0))
    assert hasher.max_waiting == 2 * hasher.slots
    assert PasswordHasher(4, max_concurrency=3, max_waiting=0).max_waiting == 0


def test_callers_beyond_the_waiting_bound_are_refused_at_once() -> None:
    hasher = GatedHasher(4, max_concurrency=1, max_waiting=1)
    stored = hasher.hash(PASSWORD)
    hasher.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        holder = pool.submit(hasher.verify, PASSWORD, stored)
        assert hasher.inside.acquire(timeout=WAIT)  # the one slot is taken (plus the setup)
        assert hasher.inside.acquire(timeout=WAIT)
        waiter = pool.submit(hasher.verify, PASSWORD, stored)
        assert hasher.wait_for_waiting(1, WAIT)

        with pytest.raises(ResourceExhaustedError) as caught:
            hasher.verify(PASSWORD, stored)
        assert caught.value.reason == "SERVER_BUSY"
        assert caught.value.retry_after_seconds == 1
        with pytest.raises(ResourceExhaustedError):
            hasher.hash(PASSWORD)
        with pytest.raises(ResourceExhaustedError):
            hasher.check_capacity()  # what sign-ins ask before reading the database

        hasher.gate.set()
        assert holder.result(WAIT) is True
        assert waiter.result(WAIT) is True
    assert hasher.waiting == 0
    hasher.check_capacity()
    assert hasher.verify(PASSWORD, stored)  # every slot was given back


@pytest.fixture
def busy_server(
    settings: Settings, sessions: Sessions, clock: FakeClock
) -> Iterator[tuple[GatedHasher, auth_service_pb2_grpc.AuthServiceStub]]:
    """A server whose single hash slot the test can hold, and which lets nobody wait for it."""
    hasher = GatedHasher(4, max_concurrency=1, max_waiting=0)
    app = build_server(settings, sessions, clock=clock, hasher=hasher)
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield hasher, auth_service_pb2_grpc.AuthServiceStub(channel)
    finally:
        hasher.gate.set()
        app.stop(None)


def test_sign_ins_beyond_the_bound_are_resource_exhausted_while_cheap_rpcs_answer(
    busy_server: tuple[GatedHasher, auth_service_pb2_grpc.AuthServiceStub],
) -> None:
    hasher, auth = busy_server
    email = unique_email()
    signed_up = register(auth, email=email)
    assert hasher.inside.acquire(timeout=WAIT)  # Register's hash
    hasher.gate.clear()

    login = auth_service_pb2.LoginRequest(email=email, password=PASSWORD)
    holding = auth.Login.future(login, timeout=WAIT)
    assert hasher.inside.acquire(timeout=WAIT)  # that Login holds the only slot

    register_request = auth_service_pb2.RegisterRequest(
        email=unique_email(), password=PASSWORD, name="Busy"
    )
    cli_login = auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD)
    for attempt in (
        lambda: auth.Login(login, timeout=WAIT),
        lambda: auth.Register(register_request, timeout=WAIT),
        lambda: auth.CliLogin(cli_login, timeout=WAIT),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            attempt()
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.reason == "SERVER_BUSY"
        assert error.retry_delay_seconds == 1

    # A cheap RPC is answered while the hash slot is still held.
    me = auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(signed_up.tokens.access_token))
    assert me.user == signed_up.user

    hasher.gate.set()
    assert holding.result(WAIT).user == signed_up.user
    # Nothing was counted against the account: the refused attempts were not wrong passwords.
    auth.Login(login, timeout=WAIT)


class RehashRefusingHasher(PasswordHasher):
    """Checks passwords, but every new hash finds the server busy (as under a login burst)."""

    def hash(self, password: str) -> str:
        raise OverloadedError("SERVER_BUSY", "busy", retry_after_seconds=1)


def test_login_succeeds_when_only_the_rehash_is_refused(
    auth: auth_service_pb2_grpc.AuthServiceStub,
    settings: Settings,
    sessions: Sessions,
    clock: FakeClock,
) -> None:
    email = unique_email()
    register(auth, email=email)  # stored at cost 4
    app = build_server(settings, sessions, clock=clock, hasher=RehashRefusingHasher(5))
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            costlier = auth_service_pb2_grpc.AuthServiceStub(channel)
            login = auth_service_pb2.LoginRequest(email=email, password=PASSWORD)
            assert costlier.Login(login, timeout=WAIT).user.email == email
    finally:
        app.stop(None)
    auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))  # hash unchanged
