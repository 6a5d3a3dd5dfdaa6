"""The Redis-backed limiter against a real Redis (LUMAN_TEST_REDIS_URL, default the local one):
the same exact window as in process, shared between replicas, TTLs bounding memory, and
failing open when Redis is down. Skipped when Redis is unreachable, except under CI=true."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import secrets
import uuid
from collections.abc import Iterator

import grpc
import pytest
import redis

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.rate_limit_redis import RedisSlidingWindowLimiter, redis_client
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.support import PASSWORD, FakeClock, rich_error, unique_email

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
WINDOW = 900.0


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
    limiter = RedisSlidingWindowLimiter(client, 5, WINDOW, prefix=prefix, clock=ticker)
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
    limiter = RedisSlidingWindowLimiter(client, 2, WINDOW, prefix=prefix, clock=Ticker())
    assert limiter.peek("k").remaining == 2
    first = limiter.hit("k")
    second = limiter.hit("k")
    assert (first.remaining, second.remaining) == (1, 0)
    assert not limiter.peek("k").allowed
    limiter.cancel("k", first)
    assert limiter.peek("k").remaining == 1
    assert limiter.peek("k").reset_after == WINDOW


def test_redis_keys_expire_after_one_window(client: redis.Redis, prefix: str) -> None:
    limiter = RedisSlidingWindowLimiter(client, 5, WINDOW, prefix=prefix, clock=Ticker())
    for i in range(50):
        limiter.hit(f"ip:192.0.2.{i}")
    keys = list(client.scan_iter(match=prefix + "*"))
    assert len(keys) == 50
    # Redis drops every idle key itself: nothing accumulates.
    assert all(0 < client.pttl(key) <= WINDOW * 1000 for key in keys)


def test_replicas_share_one_budget(client: redis.Redis, prefix: str) -> None:
    ticker = Ticker()
    first = RedisSlidingWindowLimiter(client, 3, WINDOW, prefix=prefix, clock=ticker)
    second = RedisSlidingWindowLimiter(client, 3, WINDOW, prefix=prefix, clock=ticker)
    assert first.hit("ip:a").allowed
    assert second.hit("ip:a").allowed
    assert first.hit("ip:a").allowed
    assert not second.hit("ip:a").allowed


def test_unreachable_redis_fails_open_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    down = redis_client("redis://127.0.0.1:1/0")  # nothing listens on port 1
    limiter = RedisSlidingWindowLimiter(down, 1, WINDOW, prefix="x:", clock=Ticker())
    for _ in range(3):
        assert limiter.hit("ip:a").allowed
        assert limiter.peek("ip:a").allowed
    assert caplog.text.count("rate limiting is not enforced: Redis is unavailable") == 1


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
