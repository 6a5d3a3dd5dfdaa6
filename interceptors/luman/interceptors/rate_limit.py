"""RateLimitInterceptor and the sliding-window limiter behind it.

Algorithm: a sliding log. Each key keeps the (monotonic) times of its counted requests in the
last window; a request is admitted while fewer than `limit` are younger than `window`. That
makes "5 per 15 minutes" exactly true for every 15-minute span, not only for aligned ones: a
fixed window lets 2x the limit through around its edge, and a token bucket (or GCRA) refilling
at limit/window admits a full burst plus the refill, close to 2x in the first window. For the
auth policy, whose whole point is a hard cap on password guesses, exactness matters more than
the few floats per key the log costs (at most `limit` per key, and only while they are live).

Memory: keys sit in an OrderedDict in order of their last hit, so expired keys are always at
the front. Each hit drops up to `sweep_batch` of them, so the store holds the keys seen in the
last window plus a backlog that shrinks with every call; `sweep()` drops all of them at once.

Rejected requests are not recorded, so a client that keeps hammering gets back in as soon as
its oldest counted request leaves the window.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import grpc
from grpc_interceptor import ServerInterceptor

from luman.interceptors.caller import ResolveCaller
from luman.interceptors.principal import Principal
from luman.server.errors import ResourceExhaustedError

LIMIT_HEADER = "x-ratelimit-limit"
REMAINING_HEADER = "x-ratelimit-remaining"
RESET_HEADER = "x-ratelimit-reset"
RETRY_AFTER_HEADER = "retry-after"
_HEADERS = frozenset((LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER, RETRY_AFTER_HEADER))

MonotonicClock = Callable[[], float]


class Policy(enum.Enum):
    """Which bucket an RPC counts in (from the `(luman.api.v1.access)` option)."""

    AUTH = "auth"  # per client IP, strict: credential endpoints
    DEFAULT = "default"  # per user, or per client IP for calls without a valid token


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of one check.

    `reset_after` is the time (seconds) until the oldest counted request leaves the window,
    i.e. until `remaining` next goes up; 0 when nothing is counted. A rejected request may
    retry after exactly that long. `ticket` identifies the recorded hit for `cancel()`.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    ticket: float | str | None = None

    @property
    def retry_after(self) -> float:
        return 0.0 if self.allowed else self.reset_after


class RateLimiter(Protocol):
    """A counter of requests per key over a sliding window. Implementations are thread-safe."""

    @property
    def limit(self) -> int: ...

    @property
    def window(self) -> float: ...

    def hit(self, key: str) -> Decision:
        """Count one request for `key` if the limit allows it."""
        ...

    def peek(self, key: str) -> Decision:
        """What `hit` would answer, without counting anything."""
        ...

    def cancel(self, key: str, decision: Decision) -> None:
        """Un-count the request that `decision` (an admitted hit) recorded."""
        ...


class SlidingWindowLimiter:
    """In-process sliding-log limiter: the embedded default.

    Args:
        limit: requests admitted per window (at least 1).
        window: window length in seconds.
        clock: monotonic seconds; tests inject a fake one.
        sweep_batch: most expired keys dropped per hit (bounds the work one call does).
    """

    def __init__(
        self,
        limit: int,
        window: float,
        clock: MonotonicClock = time.monotonic,
        sweep_batch: int = 1024,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a limiter needs limit >= 1 and window > 0")
        self._limit = limit
        self._window = window
        self._clock = clock
        self._sweep_batch = sweep_batch
        self._lock = threading.Lock()
        # key -> times of its counted requests, oldest first; keys ordered by last hit.
        self._hits: collections.OrderedDict[str, list[float]] = collections.OrderedDict()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    def __len__(self) -> int:
        """Keys held, expired ones not yet swept included."""
        return len(self._hits)

    def hit(self, key: str) -> Decision:
        with self._lock:
            now = self._clock()
            self._sweep(now, self._sweep_batch)
            stamps = self._live(key, now)
            if len(stamps) >= self._limit:
                return Decision(False, self._limit, 0, stamps[0] + self._window - now)
            stamps.append(now)
            self._hits[key] = stamps
            self._hits.move_to_end(key)
            remaining = self._limit - len(stamps)
            return Decision(True, self._limit, remaining, stamps[0] + self._window - now, now)

    def peek(self, key: str) -> Decision:
        with self._lock:
            now = self._clock()
            stamps = self._live(key, now)
            remaining = self._limit - len(stamps)
            reset = stamps[0] + self._window - now if stamps else 0.0
            return Decision(remaining > 0, self._limit, max(0, remaining), reset)

    def cancel(self, key: str, decision: Decision) -> None:
        if decision.ticket is None:
            return
        with self._lock:
            stamps = self._hits.get(key)
            if stamps is not None and decision.ticket in stamps:
                stamps.remove(decision.ticket)

    def sweep(self) -> None:
        """Drop every expired key now."""
        with self._lock:
            self._sweep(self._clock(), len(self._hits))

    def _live(self, key: str, now: float) -> list[float]:
        stamps = self._hits.get(key)
        if stamps is None:
            return []
        expired = 0
        while expired < len(stamps) and stamps[expired] + self._window <= now:
            expired += 1
        if expired:
            del stamps[:expired]
        return stamps

    def _sweep(self, now: float, budget: int) -> None:
        hits = self._hits
        while hits and budget > 0:
            stamps = hits[next(iter(hits))]
            if stamps and stamps[-1] + self._window > now:
                return
            hits.popitem(last=False)
            budget -= 1


@dataclasses.dataclass(frozen=True)
class AccountLimit:
    """Failed sign-ins counted per target account, on top of the per-IP limit.

    Args:
        limiter: the per-account counter.
        key_of: (method name, request) -> account key, or None when the RPC is not a sign-in.
        is_failure: whether an exception from the RPC is a failed sign-in.
    """

    limiter: RateLimiter
    key_of: Callable[[str, Any], str | None]
    is_failure: Callable[[BaseException], bool]


class RateLimitInterceptor(ServerInterceptor):
    """Admits or rejects each call and sets the x-ratelimit-* trailers on every response.

    The headers travel as trailing metadata: trailers are sent with errors as well as with
    successes (ErrorMappingInterceptor keeps them), where initial metadata would be lost on a
    rejected call. A sign-in with an account key reserves a slot in the account's bucket
    before it runs and gives it back unless it fails with bad credentials, so that many
    concurrent guesses cannot all slip past a check made before any of them failed.

    Args:
        policy_of: method name -> Policy, or None for calls that are never limited.
        limiters: one limiter per policy; a policy without one is not limited.
        caller_of: the call's Caller (its client IP is the key for anonymous calls).
        principal_of: the verified caller of a call, or None without a valid token.
        accounts: per-account counting of failed sign-ins.
    """

    def __init__(
        self,
        *,
        policy_of: Callable[[str], Policy | None],
        limiters: Mapping[Policy, RateLimiter],
        caller_of: ResolveCaller,
        principal_of: Callable[[grpc.ServicerContext], Principal | None],
        accounts: AccountLimit | None = None,
    ) -> None:
        self._policy_of = policy_of
        self._limiters = dict(limiters)
        self._caller_of = caller_of
        self._principal_of = principal_of
        self._accounts = accounts

    def intercept(
        self,
        method: Callable[[Any, grpc.ServicerContext], Any],
        request_or_iterator: Any,
        context: grpc.ServicerContext,
        method_name: str,
    ) -> Any:
        policy = self._policy_of(method_name)
        limiter = self._limiters.get(policy) if policy is not None else None
        if limiter is None:
            return method(request_or_iterator, context)
        decision = limiter.hit(self._key(policy, context))
        accounts = self._accounts
        account_key = accounts.key_of(method_name, request_or_iterator) if accounts else None
        reserved: Decision | None = None
        if decision.allowed and accounts is not None and account_key is not None:
            reserved = accounts.limiter.hit(account_key)
        shown = _tighter(decision, reserved)
        _set_headers(context, shown)
        if not shown.allowed:
            # One answer whichever bucket is full: nothing tells the per-account limit apart.
            raise ResourceExhaustedError(
                "RATE_LIMITED", "too many requests; retry later", shown.retry_after
            )
        if reserved is None or accounts is None or account_key is None:
            return method(request_or_iterator, context)
        failed = False
        try:
            return method(request_or_iterator, context)
        except BaseException as exc:
            failed = accounts.is_failure(exc)
            raise
        finally:
            if not failed:
                accounts.limiter.cancel(account_key, reserved)
                _set_headers(context, _tighter(decision, accounts.limiter.peek(account_key)))

    def _key(self, policy: Policy | None, context: grpc.ServicerContext) -> str:
        if policy is Policy.DEFAULT:
            principal = self._principal_of(context)
            if principal is not None:
                return f"user:{principal.user_id}"
        return f"ip:{self._caller_of(context).ip}"


def _tighter(first: Decision, second: Decision | None) -> Decision:
    """The decision the client should see: a rejection, else the one with less left."""
    if second is None or not first.allowed:
        return first
    if not second.allowed:
        return second
    if (second.remaining, -second.reset_after) < (first.remaining, -first.reset_after):
        return second
    return first


def _whole_seconds(seconds: float) -> int:
    # Round to the millisecond first, so float noise does not turn 900.0 into 901.
    return max(0, math.ceil(round(seconds, 3)))


def _set_headers(context: grpc.ServicerContext, decision: Decision) -> None:
    headers: list[tuple[str, str]] = [
        (LIMIT_HEADER, str(decision.limit)),
        (REMAINING_HEADER, str(decision.remaining)),
        (RESET_HEADER, str(_whole_seconds(decision.reset_after))),
    ]
    if not decision.allowed:
        headers.append((RETRY_AFTER_HEADER, str(max(1, _whole_seconds(decision.retry_after)))))
    kept = [(k, v) for k, v in context.trailing_metadata() or () if k not in _HEADERS]
    context.set_trailing_metadata((*kept, *headers))
