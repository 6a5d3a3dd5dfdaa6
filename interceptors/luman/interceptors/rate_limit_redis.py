"""RedisSlidingWindowLimiter: the same sliding log as SlidingWindowLimiter, kept in Redis so
that every replica of the server counts against one budget.

Each key is a sorted set of request times (score) with unique members. One Lua script per
operation keeps check-and-record atomic across replicas. Keys carry a TTL of one window, so
Redis drops idle ones by itself: memory stays bounded without a sweep.

Time comes from the injected clock in wall-clock seconds (replicas share no monotonic clock);
clock skew between replicas shifts window edges by the skew.

When Redis cannot be reached the limiters fail open (admit the call) and log an error at most
once a minute: an outage of the counter must not become an outage of sign-in, and bcrypt still
slows guessing meanwhile. The outage is a property of the Redis, not of one limiter, so it lives
in the RedisBackend that every limiter built on one client shares: one failed command, however
many limiters and concurrent calls, costs one timeout, and then no limiter tries Redis for
`retry_after_failure` seconds; after that one call probes and its success restores them all.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from luman.interceptors.rate_limit import Decision

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# KEYS[1] = key; ARGV = now, window (s), limit, member, ttl (ms).
# Returns {admitted (0/1), count after, oldest live score or ""}.
_HIT = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local admitted = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  count = count + 1
  admitted = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {admitted, count, oldest[2] or ''}
"""

# KEYS[1] = key; ARGV = now, window (s). Returns {count, oldest live score or ""}.
_PEEK = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {redis.call('ZCARD', KEYS[1]), oldest[2] or ''}
"""

ERROR_LOG_INTERVAL = 60.0


def redis_client(
    url: str,
    timeout: float = 0.25,
    *,
    retry_after_failure: float = 5.0,
    monotonic: Callable[[], float] = time.monotonic,
) -> RedisBackend:
    """The shared Redis of a set of limiters: short timeouts and no retries (redis-py's
    default retries with backoff would hold an RPC for seconds while Redis is down).

    Build it once and pass it to every RedisSlidingWindowLimiter, so that they share one
    outage state (see RedisBackend).
    """
    client = redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return RedisBackend(client, retry_after_failure=retry_after_failure, monotonic=monotonic)


class RedisBackend:
    """One Redis client plus the outage state of every limiter that uses it.

    Commands go to Redis one at a time. A frozen Redis therefore holds one command until its
    socket timeout; the calls queued behind it see the failure and fail open without sending
    anything. For `retry_after_failure` seconds after a failure every limiter fails open
    without trying Redis; then one call probes while concurrent ones keep failing open, and a
    success restores every limiter. (One at a time costs no throughput against a local Redis:
    16 threads ran 6.8-7.0k scripts/s one at a time and 6.2-6.8k concurrently, the GIL being
    the bottleneck. Against a distant Redis it caps one process at about one command per
    round trip.)

    Args:
        client: a redis.Redis with short socket timeouts (see redis_client).
        retry_after_failure: seconds to fail open without trying Redis after a failure.
        monotonic: the clock of that interval and of the error log; tests inject a fake one.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        retry_after_failure: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._retry_after_failure = retry_after_failure
        self._monotonic = monotonic
        self._sending = threading.Lock()  # held while a command is out to Redis
        self._state = threading.Lock()  # guards the fields below; never held while sending
        self._down = False  # the last command failed; nothing sent since
        self._down_until = 0.0
        self._probing = False  # a call is trying Redis again after a failure
        self._failures = 0
        self._last_error_log: float | None = None
        self._announced = False  # this outage's error was logged

    @property
    def failures(self) -> int:
        """Commands that failed so far, each costing its call at most one timeout."""
        return self._failures

    def run(self, command: Callable[[], _T]) -> _T | None:
        """`command()`, or None when Redis is unavailable and the caller must fail open."""
        with self._state:
            probe = self._down
            if probe:
                if self._probing or self._monotonic() < self._down_until:
                    return None
                self._probing = True  # this call tries Redis for everyone
        try:
            with self._sending:
                if self._down and not probe:
                    return None  # the command ahead of this one just failed
                try:
                    result = command()
                except redis.RedisError as exc:
                    self._failed(exc)
                    return None
                if probe:
                    self._recovered()
                return result
        finally:
            if probe:
                with self._state:
                    self._probing = False

    def _failed(self, exc: redis.RedisError) -> None:
        # Called while sending is held, so no queued call sends before the state says down.
        with self._state:
            now = self._monotonic()
            self._failures += 1
            self._down = True
            self._down_until = now + self._retry_after_failure
            due = self._last_error_log is None or now - self._last_error_log >= ERROR_LOG_INTERVAL
            if due:
                self._last_error_log = now
                self._announced = True
        if due:
            logger.error(
                "rate limiting is not enforced: Redis is unavailable (%s: %s)",
                type(exc).__name__,
                exc,
            )

    def _recovered(self) -> None:
        with self._state:
            self._down = False
            announced, self._announced = self._announced, False
        if announced:
            logger.info("rate limiting is enforced again: Redis is available")


class RedisSlidingWindowLimiter:
    """Sliding-log limiter in Redis.

    Args:
        backend: the RedisBackend shared by every limiter on that Redis (redis_client(url)).
        limit: requests admitted per window (at least 1).
        window: window length in seconds.
        prefix: namespaces the keys ("luman:ratelimit:auth:").
        clock: wall-clock seconds shared by every replica; tests inject a fake one.
    """

    def __init__(
        self,
        backend: RedisBackend,
        limit: int,
        window: float,
        *,
        prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a limiter needs limit >= 1 and window > 0")
        self._backend = backend
        self._limit = limit
        self._window = window
        self._prefix = prefix
        self._clock = clock
        self._ttl_ms = math.ceil(window * 1000)
        self._hit = backend.client.register_script(_HIT)
        self._peek = backend.client.register_script(_PEEK)

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    def hit(self, key: str) -> Decision:
        now = self._clock()
        member = f"{now!r}:{secrets.token_hex(6)}"  # unique even for equal times
        reply = self._backend.run(
            lambda: self._hit(
                keys=[self._prefix + key],
                args=[repr(now), repr(self._window), self._limit, member, self._ttl_ms],
            )
        )
        if reply is None:
            return self._open()
        admitted, count, oldest = reply
        remaining = max(0, self._limit - int(count))
        reset = self._reset_after(oldest, now)
        return Decision(bool(admitted), self._limit, remaining, reset, member if admitted else None)

    def peek(self, key: str) -> Decision:
        now = self._clock()
        reply = self._backend.run(
            lambda: self._peek(keys=[self._prefix + key], args=[repr(now), repr(self._window)])
        )
        if reply is None:
            return self._open()
        count, oldest = reply
        remaining = self._limit - int(count)
        return Decision(
            remaining > 0, self._limit, max(0, remaining), self._reset_after(oldest, now)
        )

    def cancel(self, key: str, decision: Decision) -> None:
        if decision.ticket is None:
            return
        ticket = str(decision.ticket)
        self._backend.run(lambda: self._backend.client.zrem(self._prefix + key, ticket))

    def _reset_after(self, oldest: Any, now: float) -> float:
        if oldest in ("", b"", None):
            return 0.0
        return max(0.0, float(oldest) + self._window - now)

    def _open(self) -> Decision:
        return Decision(True, self._limit, self._limit, 0.0)
