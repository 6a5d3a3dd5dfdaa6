"""The rate-limit stages (per client address, then per user) and the sliding-window limiter.

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
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol

import grpc

from luman.interceptors import call_context, metadata_keys
from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor
from luman.interceptors.call_context import CallRecord
from luman.interceptors.client_address import limit_key
from luman.interceptors.errors import (
    OverloadedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from luman.interceptors.malformed import MalformedRequest
from luman.interceptors.token_auth import TokenAuthRefusedError

MonotonicClock = Callable[[], float]
# A refusal that attempts still in flight may undo (a shed sign-in is given back, a successful
# one gives back its account reservation) says to retry this soon, not after the whole window.
IN_FLIGHT_RETRY_SECONDS = 1.0


class Policy(enum.Enum):
    """Which bucket an RPC counts in (from the `(luman.api.v1.access)` option)."""

    AUTH = "auth"  # per client IP, strict: credential endpoints
    DEFAULT = "default"  # per user, or per client IP for calls without a valid token
    # Per service account, generous: a service may introspect every request it serves.
    INTROSPECTION = "introspection"
    # Per client IP, apart from AUTH: services behind one address must not starve sign-ins.
    SERVICE_TOKEN = "service_token"  # noqa: S105 - a policy name, not a secret
    # Per client IP, each in a bucket of its own: device logins started, and their polls.
    DEVICE_START = "device_start"
    DEVICE_POLL = "device_poll"
    # Per client IP: public calls that send mail or check an emailed code.
    EMAIL = "email"
    # Per client IP: sign-ins through an identity provider, started and completed.
    PROVIDER_LOGIN = "provider_login"


class Decision(NamedTuple):
    """The outcome of one check.

    `reset_after` is the time (seconds) until the oldest counted request leaves the window,
    i.e. until `remaining` next goes up; 0 when nothing is counted. A rejected request may
    retry after exactly that long. `ticket` identifies an admitted hit to the limiter that
    recorded it, for its `cancel()`; nothing else reads it.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    ticket: object = None

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


def slot_length(limit: int, window: float, slots: int) -> float:
    """How close in time requests must be to share a log entry: window/slots above `slots`
    requests per window, 0.0 (every request its own entry: exact) at or below it.

    Raises:
        ValueError: limit < 1, window <= 0 or slots < 1.
    """
    if limit < 1 or window <= 0 or slots < 1:
        raise ValueError("a limiter needs limit >= 1, window > 0 and slots >= 1")
    return window / slots if limit > slots else 0.0


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
        self._quantum = slot_length(limit, window, slots)
        self._limit = limit
        self._window = window
        self._clock = clock
        self._sweep_batch = sweep_batch
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
            return Decision(True, self._limit, remaining, entries[0][0] + window - now, now)

    def peek(self, key: str) -> Decision:
        with self._lock:
            now = self._clock()
            log = self._live(key, now)
            remaining = self._limit - log.count
            reset = log.entries[0][0] + self._window - now if log.entries else 0.0
            return Decision(remaining > 0, self._limit, max(0, remaining), reset)

    def cancel(self, key: str, decision: Decision) -> None:
        if not decision.allowed:
            return  # nothing was recorded
        assert isinstance(decision.ticket, float), "a decision of another limiter"
        slot = self._slot(decision.ticket)  # the time hit() recorded
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
        methods: the only methods `key_of` can answer for.
    """

    limiter: RateLimiter
    key_of: Callable[[str, Any], str | None]
    is_failure: Callable[[BaseException], bool]
    methods: frozenset[str]


class ClientRateLimitInterceptor(MethodInterceptor):
    """The per-IP stage: counts every call that has no verified user to count against, per
    client address (an IPv6 client with its whole /`ipv6_prefix` network).

    - Auth-policy calls (the sign-ins) always, before they run. A call refused by its account's
      limit, or shed by the server (OverloadedError: it never happened), is given back, and so
      is the account reservation of a sign-in that did not fail with bad credentials
      (`accounts`). A refusal that calls still in flight may undo says to retry in a second.
    - Public calls, undecodable requests and calls without credentials, before they run.
    - Calls with credentials are left to token authentication, which runs next: one whose token
      it rejects is counted when the rejection comes back, and once the address's budget is
      spent its answer is RESOURCE_EXHAUSTED instead of UNAUTHENTICATED. So is a valid token
      refused for lacking the method's scope (INSUFFICIENT_SCOPE), which never reaches the
      per-user stage. A valid token's call counts for its user in the per-user stage instead.

    Args:
        policy_of: method name -> Policy, or None for calls that are never limited.
        limiters: one limiter per policy; a policy without one is not limited.
        public_methods: full method names that need no token.
        ipv6_prefix: the prefix length an IPv6 client is counted by.
        accounts: per-account counting of failed sign-ins.
    """

    def __init__(
        self,
        *,
        policy_of: Callable[[str], Policy | None],
        limiters: Mapping[Policy, RateLimiter],
        public_methods: frozenset[str] = frozenset(),
        ipv6_prefix: int = 64,
        accounts: AccountLimit | None = None,
        has_certificate: Callable[[grpc.ServicerContext], bool] | None = None,
    ) -> None:
        self._policy_of = policy_of
        self._limiters = dict(limiters)
        self._public = public_methods
        self._ipv6_prefix = ipv6_prefix
        self._accounts = accounts
        # TLS_CLIENT_CA_FILE: a client certificate is a credential, as a token is: counted
        # per account if it checks out, per address if token authentication refuses it.
        self._has_certificate = has_certificate
        self._in_flight = _InFlight()

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        policy = self._policy_of(method.name)
        limiter = None if policy is None else self._limiters.get(policy)
        if limiter is None:
            return behavior
        if policy is Policy.AUTH:
            if method.response_streaming or method.request_streaming:
                raise ValueError(f"{method.name}: auth-policy methods must be unary")
            return self._sign_in(method.name, limiter, behavior)
        public = method.name in self._public
        has_certificate = self._has_certificate

        def counted_first(record: CallRecord, request: Any, context: grpc.ServicerContext) -> bool:
            """Count the call now (True), or leave it to token authentication (False)."""
            credentialed = bool(record.authorization) or (
                has_certificate is not None and has_certificate(context)
            )
            return public or not credentialed or isinstance(request, MalformedRequest)

        if method.response_streaming:
            # Token authentication runs when grpcio starts iterating the responses.
            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                record = call_context.current_call()
                if counted_first(record, request, context):
                    _admit(context, limiter.hit(self._key(record.caller.ip)))
                    yield from behavior(request, context)
                    return
                try:
                    yield from behavior(request, context)
                except (UnauthenticatedError, TokenAuthRefusedError) as exc:
                    if _refused_by_token_auth(exc, record):
                        _admit(context, limiter.hit(self._key(record.caller.ip)))
                    raise

            return streamed

        def limited(request: Any, context: grpc.ServicerContext) -> Any:
            record = call_context.current_call()
            if counted_first(record, request, context):
                _admit(context, limiter.hit(self._key(record.caller.ip)))
                return behavior(request, context)
            try:
                return behavior(request, context)
            except (UnauthenticatedError, TokenAuthRefusedError) as exc:
                if _refused_by_token_auth(exc, record):
                    _admit(context, limiter.hit(self._key(record.caller.ip)))
                raise

        return limited

    def _sign_in(self, name: str, limiter: RateLimiter, behavior: Behavior) -> Behavior:
        accounts = self._accounts
        if accounts is not None and name not in accounts.methods:
            accounts = None
        in_flight = self._in_flight

        def limited(request: Any, context: grpc.ServicerContext) -> Any:
            key = self._key(call_context.current_call().caller.ip)
            flight = "auth:" + key  # the default policy counts the same address elsewhere
            decision = limiter.hit(key)
            account_key = None
            if accounts is not None and not isinstance(request, MalformedRequest):
                account_key = accounts.key_of(name, request)
            reserved = None
            if decision.allowed and accounts is not None and account_key is not None:
                reserved = accounts.limiter.hit(account_key)
            shown = _tighter(decision, reserved)
            if not shown.allowed:
                if decision.allowed:  # the account refused: the address gets its hit back
                    limiter.cancel(key, decision)
                if in_flight.any(flight if not decision.allowed else account_key):
                    shown = shown._replace(
                        reset_after=min(shown.reset_after, IN_FLIGHT_RETRY_SECONDS)
                    )
            _admit(context, shown)
            shed = failed = False
            in_flight.enter(flight, account_key)
            try:
                return behavior(request, context)
            except OverloadedError:
                shed = True
                raise
            except BaseException as exc:
                failed = accounts is not None and accounts.is_failure(exc)
                raise
            finally:
                in_flight.leave(flight, account_key)
                if shed:
                    limiter.cancel(key, decision)
                if accounts is not None and account_key is not None and reserved is not None:
                    if not failed:
                        accounts.limiter.cancel(account_key, reserved)
                    _set_headers(
                        context, _tighter(limiter.peek(key), accounts.limiter.peek(account_key))
                    )
                elif shed:
                    _set_headers(context, limiter.peek(key))

        return limited

    def _key(self, ip: str) -> str:
        return "ip:" + limit_key(ip, self._ipv6_prefix)


class UserRateLimitInterceptor(MethodInterceptor):
    """The per-user stage: counts each default-policy call whose token checked out against its
    user, whichever address or credential it comes from (keying on the token instead would
    let a client mint itself fresh budgets), and each introspection-policy call against its
    service account, in that policy's own limiter. Runs after token authentication.

    Args:
        policy_of: method name -> Policy, or None for calls that are never limited.
        limiter: the default policy's limiter (None: not limited).
        public_methods: full method names that need no token (counted per IP instead).
        introspection: the introspection policy's limiter (None: not limited).
    """

    def __init__(
        self,
        *,
        policy_of: Callable[[str], Policy | None],
        limiter: RateLimiter | None,
        public_methods: frozenset[str] = frozenset(),
        introspection: RateLimiter | None = None,
    ) -> None:
        self._policy_of = policy_of
        self._limiters = {Policy.DEFAULT: limiter, Policy.INTROSPECTION: introspection}
        self._public = public_methods

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        policy = self._policy_of(method.name)
        limiter = None if policy is None else self._limiters.get(policy)
        if limiter is None or method.name in self._public:
            return behavior

        def limited(request: Any, context: grpc.ServicerContext) -> Any:
            principal = call_context.current_call().principal
            if principal is not None:  # else counted per IP (an undecodable request)
                _admit(context, limiter.hit("user:" + principal.subject_id.hex))
            return behavior(request, context)

        return limited


class _InFlight:
    """How many admitted calls per key are still running, for the refusals they may undo."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def enter(self, *keys: str | None) -> None:
        with self._lock:
            for key in keys:
                if key is not None:
                    self._counts[key] += 1

    def leave(self, *keys: str | None) -> None:
        with self._lock:
            for key in keys:
                if key is not None:
                    self._counts[key] -= 1
                    if self._counts[key] <= 0:
                        del self._counts[key]

    def any(self, *keys: str | None) -> bool:
        with self._lock:
            return any(key is not None and self._counts[key] > 0 for key in keys)


def _refused_by_token_auth(exc: Exception, record: CallRecord) -> bool:
    """Token authentication turned the call down: its token (no principal), or a valid token
    it refused (its scope, a service account on a user's method), which stops the call before
    the per-user stage could count it."""
    return isinstance(exc, TokenAuthRefusedError) or record.principal is None


def _admit(context: grpc.ServicerContext, decision: Decision) -> None:
    """Tell the client where it stands; refuse the call if the decision says so."""
    _set_headers(context, decision)
    if not decision.allowed:
        # One answer whichever bucket is full: nothing tells the per-account limit apart.
        raise ResourceExhaustedError(
            "RATE_LIMITED", "too many requests; retry later", decision.retry_after
        )


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
    # Up to the next second, ignoring float noise (900.0000001 s is 900, not 901).
    return max(0, math.ceil(round(seconds, 3)))


def _set_headers(context: grpc.ServicerContext, decision: Decision) -> None:
    """The x-ratelimit-* trailers (and retry-after when refused).

    Trailers, not initial metadata: they travel with errors too (ErrorMappingInterceptor keeps
    them), where initial metadata would be lost on a refused call. They are the only trailers
    the chain sets, so a second call (a sign-in's, when it gives its hit back) replaces the
    first's."""
    trailers: tuple[tuple[str, str], ...] = (
        (metadata_keys.RATE_LIMIT_LIMIT, str(decision.limit)),
        (metadata_keys.RATE_LIMIT_REMAINING, str(decision.remaining)),
        (metadata_keys.RATE_LIMIT_RESET, str(_whole_seconds(decision.reset_after))),
    )
    if not decision.allowed:
        retry_after = max(1, _whole_seconds(decision.retry_after))
        trailers += ((metadata_keys.RETRY_AFTER, str(retry_after)),)
    context.set_trailing_metadata(trailers)
