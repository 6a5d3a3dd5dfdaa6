"""RedisSlidingWindowLimiter: the same sliding log as SlidingWindowLimiter, kept in Redis so
that every replica of the server counts against one budget.

Each key is a sorted set of request times (score) with unique members. One Lua script per
operation keeps check-and-record atomic across replicas. Keys carry a TTL of one window, so
Redis drops idle ones by itself: memory stays bounded without a sweep.

Time comes from the injected clock in wall-clock seconds (replicas share no monotonic clock);
clock skew between replicas shifts window edges by the skew. When Redis cannot be reached the
limiter fails open (admits the call) and logs an error at most once a minute: an outage of the
counter must not become an outage of sign-in, and bcrypt still slows guessing meanwhile. After
a failure it stops trying for `retry_after_failure` seconds, so an unreachable Redis costs
one call a timeout rather than every call.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from luman.interceptors.rate_limit import Decision

logger = logging.getLogger(__name__)

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


def redis_client(url: str, timeout: float = 0.25) -> redis.Redis:
    """A client for the limiter: short timeouts and no retries (redis-py's default retries
    with backoff would hold an RPC for seconds while Redis is down)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


class RedisSlidingWindowLimiter:
    """Sliding-log limiter in Redis.

    Args:
        client: a redis.Redis (decode_responses either way).
        limit: requests admitted per window (at least 1).
        window: window length in seconds.
        prefix: namespaces the keys ("luman:ratelimit:auth:").
        clock: wall-clock seconds shared by every replica; tests inject a fake one.
        retry_after_failure: seconds to fail open without trying Redis after an error.
    """

    def __init__(
        self,
        client: redis.Redis,
        limit: int,
        window: float,
        *,
        prefix: str,
        clock: Callable[[], float] = time.time,
        retry_after_failure: float = 5.0,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a limiter needs limit >= 1 and window > 0")
        self._client = client
        self._limit = limit
        self._window = window
        self._prefix = prefix
        self._clock = clock
        self._ttl_ms = math.ceil(window * 1000)
        self._hit = client.register_script(_HIT)
        self._peek = client.register_script(_PEEK)
        self._retry_after_failure = retry_after_failure
        self._lock = threading.Lock()
        self._last_error_log: float | None = None
        self._down_until = 0.0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    def hit(self, key: str) -> Decision:
        if self._skipping():
            return self._open()
        now = self._clock()
        member = f"{now!r}:{secrets.token_hex(6)}"  # unique even for equal times
        try:
            admitted, count, oldest = self._hit(
                keys=[self._prefix + key],
                args=[repr(now), repr(self._window), self._limit, member, self._ttl_ms],
            )
        except redis.RedisError as exc:
            return self._fail_open(exc)
        remaining = max(0, self._limit - int(count))
        reset = self._reset_after(oldest, now)
        return Decision(bool(admitted), self._limit, remaining, reset, member if admitted else None)

    def peek(self, key: str) -> Decision:
        if self._skipping():
            return self._open()
        now = self._clock()
        try:
            count, oldest = self._peek(
                keys=[self._prefix + key], args=[repr(now), repr(self._window)]
            )
        except redis.RedisError as exc:
            return self._fail_open(exc)
        remaining = self._limit - int(count)
        return Decision(
            remaining > 0, self._limit, max(0, remaining), self._reset_after(oldest, now)
        )

    def cancel(self, key: str, decision: Decision) -> None:
        if decision.ticket is None or self._skipping():
            return
        try:
            self._client.zrem(self._prefix + key, str(decision.ticket))
        except redis.RedisError as exc:
            self._fail_open(exc)

    def _reset_after(self, oldest: Any, now: float) -> float:
        if oldest in ("", b"", None):
            return 0.0
        return max(0.0, float(oldest) + self._window - now)

    def _skipping(self) -> bool:
        return time.monotonic() < self._down_until

    def _open(self) -> Decision:
        return Decision(True, self._limit, self._limit, 0.0)

    def _fail_open(self, exc: redis.RedisError) -> Decision:
        now = time.monotonic()
        with self._lock:
            self._down_until = now + self._retry_after_failure
            due = self._last_error_log is None or now - self._last_error_log >= ERROR_LOG_INTERVAL
            if due:
                self._last_error_log = now
        if due:
            logger.error(
                "rate limiting is not enforced: Redis is unavailable (%s: %s)",
                type(exc).__name__,
                exc,
            )
        return self._open()
