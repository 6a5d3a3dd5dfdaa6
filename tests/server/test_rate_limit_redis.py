"""The Redis-backed limiter against a real Redis (LUMAN_TEST_REDIS_URL, default the local one):
the same exact window as in process, shared between replicas, TTLs bounding memory, and
failing open when Redis is down. Skipped when Redis is unreachable, except under CI=true.

The outage tests freeze (SIGSTOP) a redis-server of their own on a free loopback port, never
the shared one, which other tests use."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import redis

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.rate_limit import Decision
from luman.interceptors.rate_limit_redis import (
    RedisBackend,
    RedisSlidingWindowLimiter,
    redis_client,
)
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.serve_process import free_port
from tests.support import PASSWORD, FakeClock, rich_error, unique_email

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
WINDOW = 900.0
UNAVAILABLE = "rate limiting is not enforced: Redis is unavailable"
RETRY_AFTER_FAILURE = 5.0


class Ticker:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url() -> str:
    url = os.environ.get("LUMAN_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Redis unreachable at {url}: {exc} (CI=true requires Redis)")
        pytest.skip(f"Redis unreachable at {url}: {exc}")
    finally:
        client.close()
    return url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """A key namespace of this test's own (parallel workers share the Redis)."""
    prefix = f"luman-test:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


def test_redis_window_edge_is_exact(client: redis.Redis, prefix: str) -> None:
    ticker = Ticker()
    limiter = RedisSlidingWindowLimiter(
        RedisBackend(client), 5, WINDOW, prefix=prefix, clock=ticker
    )
    start = ticker.now
    remaining = []
    for _ in range(5):
        ticker.now += 1.0
        remaining.append(limiter.hit("ip:a").remaining)
    assert remaining == [4, 3, 2, 1, 0]
    ticker.now = start + 1.0 + WINDOW - 0.001
    decision = limiter.hit("ip:a")
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(0.001, abs=1e-6)
    ticker.now = start + 1.0 + WINDOW
    assert limiter.hit("ip:a").allowed
    assert not limiter.hit("ip:a").allowed


def test_redis_peek_and_cancel(client: redis.Redis, prefix: str) -> None:
    limiter = RedisSlidingWindowLimiter(
        RedisBackend(client), 2, WINDOW, prefix=prefix, clock=Ticker()
    )
    assert limiter.peek("k").remaining == 2
    first = limiter.hit("k")
    second = limiter.hit("k")
    assert (first.remaining, second.remaining) == (1, 0)
    assert not limiter.peek("k").allowed
    limiter.cancel("k", first)
    assert limiter.peek("k").remaining == 1
    assert limiter.peek("k").reset_after == WINDOW


def test_redis_keys_expire_after_one_window(client: redis.Redis, prefix: str) -> None:
    limiter = RedisSlidingWindowLimiter(
        RedisBackend(client), 5, WINDOW, prefix=prefix, clock=Ticker()
    )
    for i in range(50):
        limiter.hit(f"ip:192.0.2.{i}")
    keys = list(client.scan_iter(match=prefix + "*"))
    assert len(keys) == 50
    # Redis drops every idle key itself: nothing accumulates.
    assert all(0 < client.pttl(key) <= WINDOW * 1000 for key in keys)


def test_replicas_share_one_budget(client: redis.Redis, prefix: str) -> None:
    ticker = Ticker()
    # Each replica has its own connection and outage state.
    first = RedisSlidingWindowLimiter(RedisBackend(client), 3, WINDOW, prefix=prefix, clock=ticker)
    second = RedisSlidingWindowLimiter(RedisBackend(client), 3, WINDOW, prefix=prefix, clock=ticker)
    assert first.hit("ip:a").allowed
    assert second.hit("ip:a").allowed
    assert first.hit("ip:a").allowed
    assert not second.hit("ip:a").allowed


def test_unreachable_redis_fails_open_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    down = redis_client("redis://127.0.0.1:1/0")  # nothing listens on port 1
    auth, accounts = (
        RedisSlidingWindowLimiter(down, 1, WINDOW, prefix=prefix, clock=Ticker())
        for prefix in ("auth:", "account:")
    )
    for _ in range(3):
        assert auth.hit("ip:a").allowed
        assert accounts.peek("account:a").allowed
    assert down.failures == 1  # the first limiter's failure spares the second one
    assert caplog.text.count(UNAVAILABLE) == 1
    down.client.close()


class PrivateRedis:
    """A redis-server of one test's own, which the test may freeze."""

    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self._process = process

    def freeze(self) -> None:
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._process.send_signal(signal.SIGCONT)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("redis-server not found (CI=true requires it)")
        pytest.skip("redis-server not found")
    for _ in range(3):  # another process may take the free port before redis-server does
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            if _wait_until_up(url, process):
                yield PrivateRedis(url, process)
                return
        finally:
            process.send_signal(signal.SIGCONT)  # a frozen process would not die on SIGTERM
            process.kill()
            process.wait(timeout=10)
    pytest.fail("could not start a private redis-server")


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> bool:
    """Whether `process` answers at `url` within 10 s (False once it has exited)."""
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                return bool(client.ping())
            time.sleep(0.01)
        return False
    finally:
        client.close()


@pytest.fixture
def outage_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="luman.interceptors.rate_limit_redis")
    return caplog


def _three_limiters(
    backend: RedisBackend,
) -> tuple[RedisSlidingWindowLimiter, RedisSlidingWindowLimiter, RedisSlidingWindowLimiter]:
    """The limiters build_limiters makes on one Redis: auth and default policy, per account."""
    wall = Ticker()
    return (
        RedisSlidingWindowLimiter(backend, 5, WINDOW, prefix="auth:", clock=wall),
        RedisSlidingWindowLimiter(backend, 100, WINDOW, prefix="default:", clock=wall),
        RedisSlidingWindowLimiter(backend, 5, WINDOW, prefix="account:", clock=wall),
    )


def _counted(decision: Decision, limiter: RedisSlidingWindowLimiter) -> bool:
    """Whether a first hit on a key was counted (failing open answers a full budget)."""
    return decision.allowed and decision.remaining == limiter.limit - 1


def test_frozen_redis_costs_one_timeout_whatever_the_limiters(
    private_redis: PrivateRedis, outage_log: pytest.LogCaptureFixture
) -> None:
    steady = Ticker()
    backend = redis_client(
        private_redis.url, retry_after_failure=RETRY_AFTER_FAILURE, monotonic=steady
    )
    auth, default, accounts = _three_limiters(backend)
    assert _counted(auth.hit("ip:before"), auth)
    private_redis.freeze()
    try:
        decisions = []
        for i in range(3):  # what sign-ins ask of the limiters, three times over
            decisions += [
                auth.hit(f"ip:{i}"),
                accounts.peek("account:a"),
                accounts.hit("account:a"),
                default.hit(f"user:{i}"),
            ]
        assert all(decision.allowed for decision in decisions)
        assert backend.failures == 1
        assert outage_log.text.count(UNAVAILABLE) == 1
    finally:
        private_redis.thaw()
    # Redis is back, but the limiters leave it alone until the retry time.
    assert not _counted(default.hit("user:early"), default)
    assert backend.client.exists("default:user:early") == 0
    steady.now += RETRY_AFTER_FAILURE
    # One call finds Redis again, for every limiter.
    assert _counted(default.hit("user:after"), default)
    assert _counted(accounts.hit("account:after"), accounts)
    assert _counted(auth.hit("ip:after"), auth)
    assert backend.failures == 1
    assert "rate limiting is enforced again" in outage_log.text
    backend.client.close()


def test_frozen_redis_costs_concurrent_calls_one_timeout(
    private_redis: PrivateRedis, outage_log: pytest.LogCaptureFixture
) -> None:
    steady = Ticker()
    backend = redis_client(
        private_redis.url, retry_after_failure=RETRY_AFTER_FAILURE, monotonic=steady
    )
    auth, default, _ = _three_limiters(backend)
    assert _counted(auth.hit("ip:before"), auth)
    threads = 16
    barrier = threading.Barrier(threads)

    def call(i: int) -> list[Decision]:
        barrier.wait(timeout=10)
        return [auth.hit(f"ip:{i}"), default.hit(f"user:{i}")]

    private_redis.freeze()
    try:
        with ThreadPoolExecutor(threads) as pool:
            # The calls queued behind the one that times out do not try Redis themselves.
            decisions = [d for ds in pool.map(call, range(threads)) for d in ds]
            assert all(decision.allowed for decision in decisions)
            assert backend.failures == 1
            # At the retry time one call probes the still frozen Redis; the concurrent ones
            # fail open without waiting for it or trying Redis too.
            steady.now += RETRY_AFTER_FAILURE
            decisions = [d for ds in pool.map(call, range(threads)) for d in ds]
            assert all(decision.allowed for decision in decisions)
            assert backend.failures == 2
    finally:
        private_redis.thaw()
    assert outage_log.text.count(UNAVAILABLE) == 1  # once a minute
    steady.now += RETRY_AFTER_FAILURE
    assert _counted(default.hit("user:after"), default)
    assert backend.failures == 2
    backend.client.close()


def test_two_servers_share_the_auth_budget_through_redis(
    settings: Settings,
    sessions: Sessions,
    clock: FakeClock,
    hasher: PasswordHasher,
    redis_url: str,
    client: redis.Redis,
) -> None:
    # The servers use the real key names; a client address of this test's own (through a
    # trusted proxy) keeps parallel runs and anything else on this Redis out of its bucket.
    ip = str(ipaddress.IPv4Address("198.18.0.0") + secrets.randbelow(2**17))
    metadata = (("x-forwarded-for", ip),)
    limited = dataclasses.replace(
        settings,
        auth_rate_limit_max_requests=5,
        auth_rate_limit_window_ms=int(WINDOW * 1000),
        rate_limit_redis_url=redis_url,
        trusted_proxies=("127.0.0.1/32",),
    )
    with contextlib.ExitStack() as stack:
        stack.callback(client.delete, f"luman:ratelimit:auth:ip:{ip}")
        stubs = []
        for _ in range(2):
            app = build_server(limited, sessions, clock=clock, hasher=hasher)
            app.start()
            stack.callback(app.stop, None)
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{app.port}"))
            stubs.append(auth_service_pb2_grpc.AuthServiceStub(channel))
        remaining = []
        for i in range(5):
            _, call = stubs[i % 2].Register.with_call(_register_request(), metadata=metadata)
            remaining.append(dict(call.trailing_metadata())["x-ratelimit-remaining"])
        assert remaining == ["4", "3", "2", "1", "0"]
        for stub in stubs:
            with pytest.raises(grpc.RpcError) as caught:
                stub.Register(_register_request(), metadata=metadata)
            assert rich_error(caught.value).code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 0 < client.pttl(f"luman:ratelimit:auth:ip:{ip}") <= WINDOW * 1000


def _register_request() -> auth_service_pb2.RegisterRequest:
    return auth_service_pb2.RegisterRequest(email=unique_email(), password=PASSWORD, name="R")
