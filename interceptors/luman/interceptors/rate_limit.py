"""RateLimitInterceptor and the sliding-window limiter behind it.

Algorithm: a sliding log. Each key keeps the (monotonic) times of its counted requests in the
last window; a request is admitted while fewer than `limit` are younger than `window`. That
makes "5 per 15 minutes" exactly true for every 15-minute span, not only for aligned ones: a
fixed window lets 2x the limit through around its edge, and a token bucket (or GCRA) refilling
at limit/window admits a full burst plus the refill, close to 2x in the first window. For the
auth policy, whose whole point is a hard cap on password guesses, exactness matters more than
the few floats per key the log costs (at most `limit` per key, and only while they are live).

Memory per key is bounded whatever the limit. An exact log needs one time per counted request,
so with a high limit (the benchmark runs with 10^9) it would grow with the request rate for a
whole window. Above `slots` (1000 by default) requests per window, the requests counted within
the same 1/`slots` of the window share one entry that holds their latest time and leaves the
window with it: at most `slots` + 1 entries per key. That is never more permissive than the
exact log (no window ever admits more than `limit`); a slot may come back up to window/`slots`
late. At or below `slots` (the product's 5 and 100) every request keeps its own time: exact.

Keys sit in an OrderedDict in order of their last hit, so expired keys are always at the front.
Each hit drops up to `sweep_batch` of them, so the store holds the keys seen in the last window
plus a backlog that shrinks with every call; `sweep()` drops all of them at once.

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
from typing import Any, NamedTuple, Protocol

import grpc

from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor
from luman.interceptors.caller import ResolveCaller
from luman.interceptors.errors import ResourceExhaustedError
from luman.interceptors.principal import Principal

LIMIT_HEADER = "x-ratelimit-limit"
REMAINING_HEADER = "x-ratelimit-remaining"
RESET_HEADER = "x-ratelimit-reset"
RETRY_AFTER_HEADER = "retry-after"
_HEADERS = frozenset((LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER, RETRY_AFTER_HEADER))

MonotonicClock = Callable[[], float]
# Users whose bucket key is remembered per interceptor; when full the memory is dropped.
MAX_CACHED_USER_KEYS = 10_000


class Policy(enum.Enum):
    """Which bucket an RPC counts in (from the `(luman.api.v1.access)` option)."""

    AUTH = "auth"  # per client IP, strict: credential endpoints
    DEFAULT = "default"  # per user, or per client IP for calls without a valid token


class Decision(NamedTuple):
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


DEFAULT_SLOTS = 1000
_new_decision = tuple.__new__


class _Log:
    """One key's counted requests: entries [time, slot, count], oldest first."""

    __slots__ = ("count", "entries")

    def __init__(self) -> None:
        self.entries: collections.deque[list[Any]] = collections.deque()
        self.count = 0


class SlidingWindowLimiter:
    """In-process sliding-log limiter: the embedded default.

    Args:
        limit: requests admitted per window (at least 1).
        window: window length in seconds.
        clock: monotonic seconds; tests inject a fake one.
        sweep_batch: most expired keys dropped per hit (bounds the work one call does).
        slots: above this limit, requests within window/slots of each other share an entry
            (bounded memory, see the module docstring); at or below it the log is exact.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        clock: MonotonicClock = time.monotonic,
        sweep_batch: int = 1024,
        slots: int = DEFAULT_SLOTS,
    ) -> None:
        if limit < 1 or window <= 0 or slots < 1:
            raise ValueError("a limiter needs limit >= 1, window > 0 and slots >= 1")
        self._limit = limit
        self._window = window
        self._clock = clock
        self._sweep_batch = sweep_batch
        self._quantum = window / slots if limit > slots else 0.0
        self._lock = threading.Lock()
        # key -> its log; keys ordered by last counted hit.
        self._logs: collections.OrderedDict[str, _Log] = collections.OrderedDict()
        # No key can expire before this (the front key's last hit + window): until then a hit
        # need not look for keys to sweep.
        self._next_sweep = float("-inf")

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    def __len__(self) -> int:
        """Keys held, expired ones not yet swept included."""
        return len(self._logs)

    def entries(self, key: str) -> int:
        """Entries held for `key`: what its memory is proportional to."""
        with self._lock:
            log = self._logs.get(key)
            return 0 if log is None else len(log.entries)

    def hit(self, key: str) -> Decision:
        window = self._window
        with self._lock:
            now = self._clock()
            if now >= self._next_sweep:
                self._sweep(now, self._sweep_batch)
            log = self._live(key, now)
            entries = log.entries
            if log.count >= self._limit:
                return Decision(False, self._limit, 0, entries[0][0] + window - now)
            slot = self._slot(now)
            if entries and entries[-1][1] == slot:
                last = entries[-1]
                last[0] = now
                last[2] += 1
            else:
                entries.append([now, slot, 1])
            log.count += 1
            self._logs[key] = log
            self._logs.move_to_end(key)
            remaining = self._limit - log.count
            # Decision(...) without the NamedTuple's Python-level __new__: every call admits.
            return _new_decision(
                Decision, (True, self._limit, remaining, entries[0][0] + window - now, now)
            )

    def peek(self, key: str) -> Decision:
        with self._lock:
            now = self._clock()
            log = self._live(key, now)
            remaining = self._limit - log.count
            reset = log.entries[0][0] + self._window - now if log.entries else 0.0
            return Decision(remaining > 0, self._limit, max(0, remaining), reset)

    def cancel(self, key: str, decision: Decision) -> None:
        if decision.ticket is None or isinstance(decision.ticket, str):
            return  # nothing was recorded, or not by this limiter
        slot = self._slot(decision.ticket)
        with self._lock:
            log = self._logs.get(key)
            if log is None:
                return
            for index in range(len(log.entries) - 1, -1, -1):
                entry = log.entries[index]
                if entry[1] == slot:
                    entry[2] -= 1
                    log.count -= 1
                    if entry[2] == 0:
                        del log.entries[index]
                    return
                if entry[1] < slot:
                    return

    def sweep(self) -> None:
        """Drop every expired key now."""
        with self._lock:
            self._sweep(self._clock(), len(self._logs))

    def _slot(self, now: float) -> float:
        """Hits in the same slot share an entry: the exact log's slot is the time itself."""
        return now // self._quantum if self._quantum else now

    def _live(self, key: str, now: float) -> _Log:
        log = self._logs.get(key)
        if log is None:
            return _Log()
        entries, window = log.entries, self._window
        while entries and entries[0][0] + window <= now:
            log.count -= entries.popleft()[2]
        return log

    def _sweep(self, now: float, budget: int) -> None:
        logs = self._logs
        while logs and budget > 0:
            entries = logs[next(iter(logs))].entries
            if entries and entries[-1][0] + self._window > now:
                # Keys are in order of their last counted hit: none expires before this one.
                self._next_sweep = entries[-1][0] + self._window
                return
            logs.popitem(last=False)
            budget -= 1
        if not logs:
            self._next_sweep = now + self._window  # a key added from now on lives that long


@dataclasses.dataclass(frozen=True)
class AccountLimit:
    """Failed sign-ins counted per target account, on top of the per-IP limit.

    Args:
        limiter: the per-account counter.
        key_of: (method name, request) -> account key, or None when the RPC is not a sign-in.
        is_failure: whether an exception from the RPC is a failed sign-in.
        methods: the only methods `key_of` can answer for (None: it is asked on every call).
    """

    limiter: RateLimiter
    key_of: Callable[[str, Any], str | None]
    is_failure: Callable[[BaseException], bool]
    methods: frozenset[str] | None = None


class RateLimitInterceptor(MethodInterceptor):
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
        super().__init__()
        self._policy_of = policy_of
        self._limiters = dict(limiters)
        self._caller_of = caller_of
        self._principal_of = principal_of
        self._accounts = accounts

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        policy = self._policy_of(method.name)
        limiter = self._limiters.get(policy) if policy is not None else None
        if policy is None or limiter is None:
            return behavior
        name, key_of, accounts = method.name, self._key_of(policy), self._accounts
        if accounts is not None and accounts.methods is not None and name not in accounts.methods:
            accounts = None

        def limited(request: Any, context: grpc.ServicerContext) -> Any:
            decision = limiter.hit(key_of(context))
            account_key = accounts.key_of(name, request) if accounts is not None else None
            reserved: Decision | None = None
            if decision.allowed and accounts is not None and account_key is not None:
                reserved = accounts.limiter.hit(account_key)
            shown = decision if reserved is None else _tighter(decision, reserved)
            _set_headers(context, shown)
            if not shown.allowed:
                # One answer whichever bucket is full: nothing tells the per-account limit apart.
                raise ResourceExhaustedError(
                    "RATE_LIMITED", "too many requests; retry later", shown.retry_after
                )
            if reserved is None or accounts is None or account_key is None:
                return behavior(request, context)
            failed = False
            try:
                return behavior(request, context)
            except BaseException as exc:
                failed = accounts.is_failure(exc)
                raise
            finally:
                if not failed:
                    accounts.limiter.cancel(account_key, reserved)
                    peeked = _tighter(decision, accounts.limiter.peek(account_key))
                    _set_headers(context, peeked)

        return limited

    def _key_of(self, policy: Policy) -> Callable[[grpc.ServicerContext], str]:
        caller_of, principal_of = self._caller_of, self._principal_of

        def by_ip(context: grpc.ServicerContext) -> str:
            return "ip:" + caller_of(context).ip

        if policy is not Policy.DEFAULT:
            return by_ip

        # user id (int) -> its key: UUID.hex formats the number on every read.
        user_keys: dict[int, str] = {}

        def by_user(context: grpc.ServicerContext) -> str:
            principal = principal_of(context)
            if principal is None:
                return "ip:" + caller_of(context).ip
            key = user_keys.get(principal.user_id.int)
            if key is None:
                if len(user_keys) >= MAX_CACHED_USER_KEYS:
                    user_keys.clear()
                key = user_keys[principal.user_id.int] = "user:" + principal.user_id.hex
            return key

        return by_user


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
    # Up to the next second, ignoring float noise below half a millisecond (900.0000001 is
    # 900, not 901). round(seconds, 3) said the same at five times the cost, on every call.
    return max(0, math.ceil(seconds - 0.0005))


# The limit header of each configured limit, built once (limits come from the settings).
_LIMIT_HEADERS: dict[int, tuple[str, str]] = {}


def _set_headers(context: grpc.ServicerContext, decision: Decision) -> None:
    limit_header = _LIMIT_HEADERS.get(decision.limit)
    if limit_header is None:
        limit_header = _LIMIT_HEADERS.setdefault(
            decision.limit, (LIMIT_HEADER, str(decision.limit))
        )
    headers: tuple[tuple[str, str | bytes], ...] = (
        limit_header,
        (REMAINING_HEADER, str(decision.remaining)),
        (RESET_HEADER, str(_whole_seconds(decision.reset_after))),
    )
    if not decision.allowed:
        retry_after = str(max(1, _whole_seconds(decision.retry_after)))
        headers = (*headers, (RETRY_AFTER_HEADER, retry_after))
    existing = context.trailing_metadata()
    if existing:
        headers = (*((k, v) for k, v in existing if k not in _HEADERS), *headers)
    context.set_trailing_metadata(headers)
