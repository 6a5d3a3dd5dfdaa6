"""PasswordHasher's bounds: hash slots per usable core, and a FIFO queue of waiting callers that
a caller leaves when its call ends, beyond which a sign-in fails at once with
RESOURCE_EXHAUSTED; and the server's worker pool, which keeps threads for cheap calls however
many sign-ins wait.

Slots are held by a hasher whose bcrypt work waits on a threading.Event, so every state is
reached deterministically; nothing here measures time.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.errors import OverloadedError, ResourceExhaustedError
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher, WaitingCall
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.gateway.in_process import InProcessContext
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


def test_slots_default_to_the_usable_cores_and_128_callers_may_wait() -> None:
    hasher = PasswordHasher(4)
    assert hasher.slots == len(os.sched_getaffinity(0))
    assert hasher.max_waiting == 128
    assert hasher.threads_held == hasher.slots + 128
    assert PasswordHasher(4, max_concurrency=3, max_waiting=0).threads_held == 3


class OrderRecordingHasher(GatedHasher):
    """Records the password of each bcrypt check in the order the checks run."""

    def __init__(self, rounds: int, **bounds: int) -> None:
        super().__init__(rounds, **bounds)
        self.checked: list[str] = []

    def _check(self, password: bytes, password_hash: bytes) -> bool:
        self.checked.append(password.decode())
        return super()._check(password, password_hash)


def test_waiters_are_handed_the_slot_in_arrival_order() -> None:
    hasher = OrderRecordingHasher(4, max_concurrency=1, max_waiting=3)
    hasher.gate.clear()
    with ThreadPoolExecutor(4) as pool:
        holder = pool.submit(hasher.verify, "holder", None)
        assert hasher.inside.acquire(timeout=WAIT)  # the one slot is taken
        waiters = []
        for n, name in enumerate(("first", "second", "third"), start=1):
            waiters.append(pool.submit(hasher.verify, name, None))
            assert hasher.wait_for_waiting(n, WAIT)
        hasher.gate.set()
        assert holder.result(WAIT) is False
        assert [w.result(WAIT) for w in waiters] == [False, False, False]
    assert hasher.checked == ["holder", "first", "second", "third"]
    assert hasher.waiting == 0


def test_callers_beyond_the_queue_are_refused_at_once() -> None:
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


def test_a_hash_that_may_not_wait_is_refused_while_every_slot_is_busy() -> None:
    hasher = GatedHasher(4, max_concurrency=1, max_waiting=1)
    hasher.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(hasher.hash, PASSWORD)
        assert hasher.inside.acquire(timeout=WAIT)
        hasher.check_capacity()  # the queue has room ...
        with pytest.raises(OverloadedError) as caught:
            hasher.hash(PASSWORD, wait=False)  # ... but this caller may not use it
        assert caught.value.reason == "SERVER_BUSY"
        assert hasher.waiting == 0
        hasher.gate.set()
        holder.result(WAIT)
    assert hasher.hash(PASSWORD, wait=False)  # a free slot: hashed at once


def test_an_http_sign_in_leaves_the_queue_when_its_client_goes_or_its_deadline_passes() -> None:
    """Through the gateway's in-process context: no gRPC deadline timer ends such a call, so
    the wait's own bound (the deadline plus a backstop) does."""
    hasher = GatedHasher(4, max_concurrency=1, max_waiting=2)
    hasher.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        holder = pool.submit(hasher.hash, PASSWORD)
        assert hasher.inside.acquire(timeout=WAIT)

        client_gone = InProcessContext((), "ipv4:127.0.0.1:0", timeout_seconds=WAIT)
        leaving = pool.submit(hasher.hash, PASSWORD, client_gone)
        assert hasher.wait_for_waiting(1, WAIT)
        client_gone.cancel()
        with pytest.raises(OverloadedError):
            leaving.result(WAIT)
        assert hasher.waiting == 0

        expired = InProcessContext((), "ipv4:127.0.0.1:0", timeout_seconds=0)
        with pytest.raises(OverloadedError) as caught:
            hasher.hash(PASSWORD, expired)
        assert caught.value.reason == "SERVER_BUSY"
        assert hasher.waiting == 0

        hasher.gate.set()
        holder.result(WAIT)
    assert not hasher.inside.acquire(blocking=False)  # neither of them hashed
    hasher.close()


class PriorityGatedHasher(GatedHasher):
    """Records the nice value of each bcrypt computation's thread, then waits at the gate."""

    def __init__(self, rounds: int, **options: int) -> None:
        super().__init__(rounds, **options)
        self.nices: list[int] = []

    def on_bcrypt(self) -> None:
        self.nices.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        super().on_bcrypt()


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are a Linux feature")
def test_the_hash_after_a_refusal_runs_at_the_servers_own_priority() -> None:
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    hasher = PriorityGatedHasher(4, max_concurrency=1, max_waiting=1, nice=5)
    hasher.gate.clear()
    try:
        with ThreadPoolExecutor(2) as pool:
            holder = pool.submit(hasher.hash, PASSWORD)
            assert hasher.inside.acquire(timeout=WAIT)
            waiter = pool.submit(hasher.hash, PASSWORD)
            assert hasher.wait_for_waiting(1, WAIT)
            with pytest.raises(OverloadedError):
                hasher.check_capacity()  # a caller turned away: the next hash is not niced
            hasher.gate.set()
            holder.result(WAIT)
            waiter.result(WAIT)
        hasher.hash(PASSWORD)  # nobody turned away since the last one began: niced again
    finally:
        hasher.close()
    assert hasher.nices == [min(19, own + 5), own, min(19, own + 5)]


@pytest.fixture
def gated() -> Iterator[GatedHasher]:
    hasher = GatedHasher(4, max_concurrency=1, max_waiting=2)
    yield hasher
    hasher.gate.set()
    hasher.close()


@pytest.fixture
def gated_server(
    settings: Settings, sessions: Sessions, clock: FakeClock, gated: GatedHasher
) -> Iterator[auth_service_pb2_grpc.AuthServiceStub]:
    """A server whose one hash slot the test holds, with room for 2 waiters and one worker
    thread for everything else (GRPC_MAX_WORKERS=1)."""
    app = build_server(
        dataclasses.replace(settings, max_workers=1), sessions, clock=clock, hasher=gated
    )
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield auth_service_pb2_grpc.AuthServiceStub(channel)
    finally:
        gated.gate.set()
        app.stop(None)


def _login(
    auth: auth_service_pb2_grpc.AuthServiceStub, email: str, timeout: float = WAIT
) -> Future[auth_service_pb2.LoginResponse]:
    request = auth_service_pb2.LoginRequest(email=email, password=PASSWORD)
    return auth.Login.future(request, timeout=timeout)  # type: ignore[return-value]


def _hold_the_slot(
    auth: auth_service_pb2_grpc.AuthServiceStub, gated: GatedHasher
) -> tuple[auth_service_pb2.RegisterResponse, Future[auth_service_pb2.LoginResponse]]:
    """Register a user, then start a Login of theirs that holds the only slot until the gate
    opens."""
    signed_up = register(auth, email=unique_email())
    assert gated.inside.acquire(timeout=WAIT)  # Register's hash
    gated.gate.clear()
    holding = _login(auth, signed_up.user.email)
    assert gated.inside.acquire(timeout=WAIT)
    return signed_up, holding


def test_waiting_sign_ins_leave_cheap_calls_their_worker_threads(
    gated_server: auth_service_pb2_grpc.AuthServiceStub, gated: GatedHasher
) -> None:
    auth = gated_server
    signed_up, holding = _hold_the_slot(auth, gated)
    waiting = [_login(auth, signed_up.user.email) for _ in range(2)]
    assert gated.wait_for_waiting(2, WAIT)
    # Three sign-ins hold three threads; GRPC_MAX_WORKERS=1 is still free for this call.
    me = auth.GetMe(
        auth_service_pb2.GetMeRequest(),
        metadata=bearer(signed_up.tokens.access_token),
        timeout=WAIT,
    )
    assert me.user == signed_up.user

    gated.gate.set()
    assert holding.result(WAIT).user == signed_up.user
    assert [w.result(WAIT).user for w in waiting] == [signed_up.user, signed_up.user]


def test_sign_ins_beyond_the_queue_are_resource_exhausted_while_cheap_rpcs_answer(
    gated_server: auth_service_pb2_grpc.AuthServiceStub, gated: GatedHasher
) -> None:
    auth = gated_server
    signed_up, holding = _hold_the_slot(auth, gated)
    email = signed_up.user.email
    waiting = [_login(auth, email) for _ in range(2)]
    assert gated.wait_for_waiting(2, WAIT)

    login = auth_service_pb2.LoginRequest(email=email, password=PASSWORD)
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

    # A cheap RPC is answered while the hash slot is held and the queue is full.
    me = auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(signed_up.tokens.access_token))
    assert me.user == signed_up.user

    gated.gate.set()
    assert holding.result(WAIT).user == signed_up.user
    assert [w.result(WAIT).user for w in waiting] == [signed_up.user, signed_up.user]
    # Nothing was counted against the account: the refused attempts were not wrong passwords.
    auth.Login(login, timeout=WAIT)


def test_a_cancelled_sign_in_leaves_the_queue_and_is_never_hashed(
    gated_server: auth_service_pb2_grpc.AuthServiceStub, gated: GatedHasher
) -> None:
    auth = gated_server
    signed_up, holding = _hold_the_slot(auth, gated)
    first = _login(auth, signed_up.user.email)
    assert gated.wait_for_waiting(1, WAIT)
    second = _login(auth, signed_up.user.email)
    assert gated.wait_for_waiting(2, WAIT)

    assert first.cancel()
    assert gated.wait_for_waiting(1, WAIT)  # it left; the second one keeps its place

    gated.gate.set()
    assert holding.result(WAIT).user == signed_up.user
    assert second.result(WAIT).user == signed_up.user
    # After Register and the holder, only the second waiter hashed; the cancelled one never.
    assert gated.inside.acquire(timeout=WAIT)
    assert not gated.inside.acquire(blocking=False)


def test_a_sign_in_whose_deadline_passes_in_the_queue_leaves_it_and_is_never_hashed(
    gated_server: auth_service_pb2_grpc.AuthServiceStub, gated: GatedHasher
) -> None:
    auth = gated_server
    signed_up, holding = _hold_the_slot(auth, gated)
    email = signed_up.user.email

    late = _login(auth, email, timeout=1.0)  # a deadline, not a sleep: nothing is timed
    with pytest.raises(grpc.RpcError) as caught:
        late.result(WAIT)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert gated.wait_for_waiting(0, WAIT)

    gated.gate.set()
    assert holding.result(WAIT).user == signed_up.user
    assert not gated.inside.acquire(blocking=False)  # only Register and the holder hashed
    assert _login(auth, email).result(WAIT).user == signed_up.user  # the slot went back


class RehashRefusingHasher(PasswordHasher):
    """Checks passwords, but every new hash finds the server busy (as under a login burst)."""

    def hash(self, password: str, call: WaitingCall | None = None, *, wait: bool = True) -> str:
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
