"""SlidingWindowLimiter with a fake monotonic clock: exact counts at the window edge, bounded
memory; and the two rate-limit stages in the server's chain shape on a bare server (no
database): per client address (sign-ins, anonymous calls, rejected tokens) before token
authentication, per verified user after it."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc
import pytest
from grpc_interceptor.testing.dummy_client import SpecialCaseFunction
from grpc_interceptor.testing.protos.dummy_pb2 import DummyRequest
from grpc_interceptor.testing.protos.dummy_pb2_grpc import DummyServiceStub

from luman.interceptors.base import MethodInfo, MethodInterceptor
from luman.interceptors.client_address import CallerResolver, parse_trusted_proxies
from luman.interceptors.error_mapping import ErrorMappingInterceptor
from luman.interceptors.errors import OverloadedError, UnauthenticatedError, UnavailableError
from luman.interceptors.principal import Credential, Principal, optional_principal
from luman.interceptors.rate_limit import (
    AccountLimit,
    ClientRateLimitInterceptor,
    Decision,
    Policy,
    RateLimiter,
    SlidingWindowLimiter,
    UserRateLimitInterceptor,
)
from luman.interceptors.request_logging import RequestLoggingInterceptor
from luman.interceptors.token_auth import TokenAuthInterceptor
from tests.interceptors.dummy import CALL_TIMEOUT, EXECUTE, SERVER_STREAM, serve
from tests.support import RichError, rich_error

WINDOW = 900.0


class Ticker:
    """A monotonic clock in float seconds that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_limit_admits_exactly_limit_requests_per_window() -> None:
    ticker = Ticker()
    limiter = SlidingWindowLimiter(5, WINDOW, ticker)
    remaining = [limiter.hit("ip:a").remaining for _ in range(5)]
    assert remaining == [4, 3, 2, 1, 0]
    rejected = limiter.hit("ip:a")
    assert not rejected.allowed
    assert rejected.remaining == 0
    assert rejected.retry_after == WINDOW


def test_window_edge_is_exact() -> None:
    ticker = Ticker()
    limiter = SlidingWindowLimiter(5, WINDOW, ticker)
    for _ in range(5):
        ticker.advance(1.0)  # hits at 1001..1005
        assert limiter.hit("ip:a").allowed
    ticker.now = 1001.0 + WINDOW - 0.001  # one millisecond before the first hit expires
    decision = limiter.hit("ip:a")
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(0.001)
    ticker.now = 1001.0 + WINDOW  # the first hit has left the window: exactly one slot back
    assert limiter.hit("ip:a").allowed
    assert not limiter.hit("ip:a").allowed
    ticker.now = 1002.0 + WINDOW
    assert limiter.hit("ip:a").allowed
    assert not limiter.hit("ip:a").allowed


def test_no_window_ever_holds_more_than_the_limit() -> None:
    # A fixed window lets 2x the limit through around its boundary; a sliding log never does.
    ticker = Ticker(0.0)
    limiter = SlidingWindowLimiter(5, WINDOW, ticker)
    admitted: list[float] = []
    for second in range(0, 4 * int(WINDOW), 7):
        ticker.now = float(second)
        if limiter.hit("ip:a").allowed:
            admitted.append(ticker.now)
    assert len(admitted) > 5
    for i, start in enumerate(admitted):
        in_window = [t for t in admitted[i:] if t < start + WINDOW]
        assert len(in_window) <= 5


def test_rejected_requests_are_not_counted() -> None:
    ticker = Ticker()
    limiter = SlidingWindowLimiter(2, WINDOW, ticker)
    limiter.hit("ip:a")
    limiter.hit("ip:a")
    for _ in range(50):
        ticker.advance(1.0)
        assert not limiter.hit("ip:a").allowed
    ticker.now = 1000.0 + WINDOW
    assert limiter.hit("ip:a").allowed


def test_keys_are_independent() -> None:
    limiter = SlidingWindowLimiter(1, WINDOW, Ticker())
    assert limiter.hit("ip:a").allowed
    assert limiter.hit("ip:b").allowed
    assert not limiter.hit("ip:a").allowed


def test_reset_is_time_until_the_oldest_counted_request_leaves() -> None:
    ticker = Ticker()
    limiter = SlidingWindowLimiter(3, WINDOW, ticker)
    assert limiter.hit("k").reset_after == WINDOW
    ticker.advance(100)
    assert limiter.hit("k").reset_after == WINDOW - 100


def test_peek_counts_nothing_and_cancel_gives_the_slot_back() -> None:
    limiter = SlidingWindowLimiter(2, WINDOW, Ticker())
    assert limiter.peek("k").remaining == 2
    first = limiter.hit("k")
    assert limiter.peek("k").remaining == 1
    limiter.cancel("k", first)
    assert limiter.peek("k").remaining == 2
    assert limiter.peek("k").reset_after == 0


def test_expired_keys_are_dropped_as_traffic_continues() -> None:
    ticker = Ticker()
    limiter = SlidingWindowLimiter(100, WINDOW, ticker)
    for i in range(100_000):
        limiter.hit(f"ip:10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert len(limiter) == 100_000
    ticker.advance(WINDOW)
    # Each hit drops up to 1024 expired keys: 100 calls clear a 100k backlog.
    for i in range(100):
        limiter.hit(f"ip:192.0.2.{i}")
    assert len(limiter) == 100
    ticker.advance(WINDOW)
    limiter.sweep()
    assert len(limiter) == 0


def test_a_live_key_is_never_swept() -> None:
    ticker = Ticker()
    limiter = SlidingWindowLimiter(2, WINDOW, ticker)
    limiter.hit("old")
    ticker.advance(WINDOW - 1)
    limiter.hit("old")
    ticker.advance(2)  # the first hit expired, the second has not
    limiter.sweep()
    assert len(limiter) == 1
    assert limiter.peek("old").remaining == 1


def test_memory_per_key_is_bounded_however_high_the_limit() -> None:
    # The benchmark runs with a limit of 10^9: an exact log would keep a time per call.
    ticker = Ticker(0.0)
    limiter = SlidingWindowLimiter(10**9, WINDOW, ticker, slots=100)
    for n in range(20_000):
        ticker.now = n * 0.2  # 5 calls a second for over four windows
        assert limiter.hit("user:a").allowed
        assert limiter.entries("user:a") <= 101
    # Counted: the 4500 calls of the last window, plus at most one slot's (9 s) worth more.
    counted = 10**9 - limiter.peek("user:a").remaining
    assert 4500 <= counted <= 4500 + 45


def test_above_the_slots_no_window_ever_holds_more_than_the_limit() -> None:
    ticker = Ticker(0.0)
    limiter = SlidingWindowLimiter(20, WINDOW, ticker, slots=4)  # shared entries: 225 s each
    admitted: list[float] = []
    for tenth in range(0, 40 * int(WINDOW), 7):
        ticker.now = tenth / 10
        if limiter.hit("ip:a").allowed:
            admitted.append(ticker.now)
    assert len(admitted) > 20
    for i, start in enumerate(admitted):
        assert len([t for t in admitted[i:] if t < start + WINDOW]) <= 20


def test_above_the_slots_a_slot_comes_back_at_most_one_slot_late() -> None:
    ticker = Ticker(0.0)
    limiter = SlidingWindowLimiter(4, 100.0, ticker, slots=2)  # slots of 50 s
    for now in (10.0, 20.0, 30.0, 40.0):  # one shared entry, latest time 40
        ticker.now = now
        assert limiter.hit("k").allowed
    ticker.now = 110.0  # the exact log would have a slot back (the hit at 10 left at 110)
    rejected = limiter.hit("k")
    assert not rejected.allowed
    assert rejected.retry_after == pytest.approx(30.0)  # 140: within one 50 s slot of 110
    ticker.now = 140.0
    assert limiter.hit("k").remaining == 3


def test_above_the_slots_cancel_gives_the_slot_back() -> None:
    ticker = Ticker(0.0)
    limiter = SlidingWindowLimiter(10, WINDOW, ticker, slots=2)
    limiter.hit("k")
    ticker.now = 1.0
    second = limiter.hit("k")
    assert limiter.peek("k").remaining == 8
    limiter.cancel("k", second)
    assert limiter.peek("k").remaining == 9
    assert limiter.entries("k") == 1


def test_limiter_rejects_a_meaningless_configuration() -> None:
    with pytest.raises(ValueError, match="limit >= 1"):
        SlidingWindowLimiter(0, WINDOW)


# --- The stages, in the server's chain shape -----------------------------------------------------

ALICE, BOB = uuid.uuid4(), uuid.uuid4()
LOOPBACK = parse_trusted_proxies(["127.0.0.0/8", "::1"])
# token -> its principal: two credentials of Alice's, one of Bob's.
TOKENS = {
    "alice-1": Principal(ALICE, Credential.ACCESS_TOKEN, uuid.uuid4()),
    "alice-2": Principal(ALICE, Credential.CLI_TOKEN, uuid.uuid4()),
    "bob": Principal(BOB, Credential.ACCESS_TOKEN, uuid.uuid4()),
}


def _verify(token: str) -> Principal:
    principal = TOKENS.get(token)
    if principal is None:
        raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
    return principal


def _call_from(ip: str, token: str | None = None) -> tuple[tuple[str, str], ...]:
    """Metadata of a call a trusted loopback proxy forwards for a client at `ip`."""
    metadata = [("x-forwarded-for", ip)]
    if token is not None:
        metadata.append(("authorization", f"Bearer {token}"))
    return tuple(metadata)


def _who(_: str, context: Any) -> str:
    principal = optional_principal()
    return "anonymous" if principal is None else principal.user_id.hex


def _per_ip(
    policy: Policy | None = Policy.DEFAULT,
    limiters: Mapping[Policy, RateLimiter] | None = None,
    *,
    limit: int = 1,
    clock: Callable[[], float] | None = None,
    public: frozenset[str] = frozenset(),
    ipv6_prefix: int = 64,
    accounts: AccountLimit | None = None,
) -> ClientRateLimitInterceptor:
    if limiters is None:
        assert policy is not None
        limiters = {policy: SlidingWindowLimiter(limit, WINDOW, clock or Ticker())}
    return ClientRateLimitInterceptor(
        policy_of=lambda _: policy,
        limiters=limiters,
        public_methods=public,
        ipv6_prefix=ipv6_prefix,
        accounts=accounts,
    )


def _per_user(limit: int, public: frozenset[str] = frozenset()) -> UserRateLimitInterceptor:
    return UserRateLimitInterceptor(
        policy_of=lambda _: Policy.DEFAULT,
        limiter=SlidingWindowLimiter(limit, WINDOW, Ticker()),
        public_methods=public,
    )


@contextlib.contextmanager
def _chain(
    per_ip: ClientRateLimitInterceptor | None = None,
    per_user: UserRateLimitInterceptor | None = None,
    *,
    verify: Callable[[str], Principal] = _verify,
    public: frozenset[str] = frozenset(),
    special_cases: Mapping[str, SpecialCaseFunction] | None = None,
) -> Iterator[DummyServiceStub]:
    """logging -> error mapping -> per-IP limit -> token authentication -> per-user limit, as
    the server builds it; loopback is a trusted proxy, so a test can say which address a call
    is from (x-forwarded-for)."""
    stages: list[MethodInterceptor] = [
        RequestLoggingInterceptor(None, CallerResolver(LOOPBACK)),
        ErrorMappingInterceptor(),
    ]
    if per_ip is not None:
        stages.append(per_ip)
    stages.append(TokenAuthInterceptor(verify, public))
    if per_user is not None:
        stages.append(per_user)
    with serve(stages, {"who": _who, **(special_cases or {})}) as client:
        yield client


def _ok(client: DummyServiceStub, metadata: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Make a call that must succeed; its trailers."""
    _, call = client.Execute.with_call(
        DummyRequest(input="who"), metadata=tuple(metadata), timeout=CALL_TIMEOUT
    )
    return dict(call.trailing_metadata())


def _failed(
    client: DummyServiceStub, metadata: Sequence[tuple[str, str]], text: str = "who"
) -> tuple[RichError, dict[str, Any]]:
    """Make a call that must fail; its error and trailers."""
    with pytest.raises(grpc.RpcError) as caught:
        client.Execute(DummyRequest(input=text), metadata=tuple(metadata), timeout=CALL_TIMEOUT)
    assert isinstance(caught.value, grpc.Call)
    return rich_error(caught.value), dict(caught.value.trailing_metadata())


def _code(client: DummyServiceStub, metadata: Sequence[tuple[str, str]]) -> str:
    """The status code name of a call ("OK" included)."""
    try:
        client.Execute(DummyRequest(input="who"), metadata=tuple(metadata), timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        return rich_error(exc).code.name
    return "OK"


def test_per_ip_stage_rejects_with_retry_info_and_trailers() -> None:
    ticker = Ticker()
    per_ip = _per_ip(limit=2, clock=ticker, public=frozenset({EXECUTE}))
    with _chain(per_ip, public=frozenset({EXECUTE})) as client:
        for remaining in ("1", "0"):
            trailers = _ok(client, ())
            assert trailers["x-ratelimit-limit"] == "2"
            assert trailers["x-ratelimit-remaining"] == remaining
            assert trailers["x-ratelimit-reset"] == "900"
        ticker.advance(0.5)
        error, trailers = _failed(client, ())
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "RATE_LIMITED"
    assert error.retry_delay_seconds == pytest.approx(899.5)
    assert trailers["retry-after"] == "900"  # whole seconds, rounded up
    assert trailers["x-ratelimit-remaining"] == "0"


def test_stages_without_a_limiter_for_the_policy_let_everything_through() -> None:
    per_ip = _per_ip(policy=None, limiters={Policy.DEFAULT: SlidingWindowLimiter(1, WINDOW)})
    per_user = UserRateLimitInterceptor(policy_of=lambda _: Policy.DEFAULT, limiter=None)
    with _chain(per_ip, per_user) as client:
        for _ in range(5):
            assert "x-ratelimit-limit" not in _ok(client, _call_from("198.51.100.4", "alice-1"))
    auth_only = _per_ip(limiters={Policy.AUTH: SlidingWindowLimiter(1, WINDOW)})
    with _chain(auth_only, public=frozenset({EXECUTE})) as client:
        for _ in range(5):
            assert "x-ratelimit-limit" not in _ok(client, ())


class _FixedLimiter:
    """A limiter whose every answer is `decision`: what the stage shows of a decision."""

    def __init__(self) -> None:
        self.decision = Decision(True, 5, 4, 0.0)

    @property
    def limit(self) -> int:
        return self.decision.limit

    @property
    def window(self) -> float:
        return WINDOW

    def hit(self, key: str) -> Decision:
        return self.decision

    def peek(self, key: str) -> Decision:
        return self.decision

    def cancel(self, key: str, decision: Decision) -> None:
        pass


def test_reset_and_retry_after_are_whole_seconds_rounded_up() -> None:
    # Float noise from the sliding window's arithmetic must not show 900 s as 901.
    cases = [
        (900.0, "900"),
        (900.0000001, "900"),
        (899.9996, "900"),
        (900.0006, "901"),
        (0.3, "1"),
        (0.0, "0"),
        (0.0004, "0"),
        (-2.5, "0"),
    ]
    limiter = _FixedLimiter()
    public = frozenset({EXECUTE})
    with _chain(_per_ip(limiters={Policy.DEFAULT: limiter}, public=public), public=public) as c:
        for seconds, shown in cases:
            limiter.decision = Decision(True, 5, 4, seconds)
            assert _ok(c, ())["x-ratelimit-reset"] == shown, seconds
            limiter.decision = Decision(False, 5, 0, seconds)
            _, trailers = _failed(c, ())
            assert trailers["x-ratelimit-reset"] == shown, seconds
            # A refusal never says "retry after 0 seconds".
            assert trailers["retry-after"] == max(shown, "1", key=int), seconds


def test_per_ip_stage_counts_an_ipv6_client_with_its_whole_64() -> None:
    with _chain(_per_ip(public=frozenset({EXECUTE})), public=frozenset({EXECUTE})) as client:
        assert _code(client, _call_from("2001:db8:0:7::1")) == "OK"
        assert _code(client, _call_from("2001:db8:0:7:ffff::2")) == "RESOURCE_EXHAUSTED"
        assert _code(client, _call_from("2001:db8:0:8::1")) == "OK"
        # One IPv4 client, whichever way a dual-stack listener writes it.
        assert _code(client, _call_from("198.51.100.4")) == "OK"
        assert _code(client, _call_from("::ffff:198.51.100.4")) == "RESOURCE_EXHAUSTED"
        assert _code(client, _call_from("198.51.100.5")) == "OK"


def test_per_ip_stage_ipv6_prefix_is_configurable() -> None:
    public = frozenset({EXECUTE})
    with _chain(_per_ip(public=public, ipv6_prefix=128), public=public) as client:
        assert _code(client, _call_from("2001:db8::1")) == "OK"
        assert _code(client, _call_from("2001:db8::2")) == "OK"
        assert _code(client, _call_from("2001:db8::1")) == "RESOURCE_EXHAUSTED"
    with _chain(_per_ip(public=public, ipv6_prefix=48), public=public) as client:
        assert _code(client, _call_from("2001:db8:aa:1::1")) == "OK"
        assert _code(client, _call_from("2001:db8:aa:2::1")) == "RESOURCE_EXHAUSTED"


def test_a_rejected_token_counts_per_ip_and_is_resource_exhausted_once_spent() -> None:
    here, there = "198.51.100.4", "203.0.113.9"
    with _chain(_per_ip(limit=2)) as client:
        for remaining in ("1", "0"):
            error, trailers = _failed(client, _call_from(here, "stolen"))
            assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
            assert trailers["x-ratelimit-remaining"] == remaining
        error, trailers = _failed(client, _call_from(here, "stolen"))
        assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        assert error.retry_delay_seconds == pytest.approx(WINDOW)
        assert trailers["retry-after"] == "900"
        # Calls without a token from there are turned away before token authentication ...
        assert _code(client, _call_from(here)) == "RESOURCE_EXHAUSTED"
        # ... a valid token still gets its user in from the same address ...
        assert _ok(client, _call_from(here, "alice-1")) == {}
        # ... and other addresses have budgets of their own.
        assert _code(client, _call_from(there, "stolen")) == "UNAUTHENTICATED"


def test_a_rejected_token_on_a_response_stream_counts_per_ip() -> None:
    # Token authentication runs while grpcio iterates the responses: still counted.
    with _chain(_per_ip(limit=1)) as client:
        codes = []
        for _ in range(3):
            stream = client.ExecuteServerStream(
                DummyRequest(input="who"),
                metadata=_call_from("198.51.100.4", "stolen"),
                timeout=CALL_TIMEOUT,
            )
            try:
                list(stream)
            except grpc.RpcError as exc:
                codes.append(rich_error(exc).code.name)
    assert codes == ["UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]


def test_calls_with_a_valid_token_count_per_user_not_per_ip() -> None:
    here = "198.51.100.4"
    with _chain(_per_ip(limit=1), _per_user(3)) as client:
        for remaining in ("2", "1", "0"):
            trailers = _ok(client, _call_from(here, "alice-1"))
            assert (trailers["x-ratelimit-limit"], trailers["x-ratelimit-remaining"]) == (
                "3",
                remaining,
            )
        error, trailers = _failed(client, _call_from(here, "alice-1"))
        assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        assert trailers["x-ratelimit-limit"] == "3"
        # The address's own budget is untouched: one anonymous call gets as far as token
        # authentication, the next is turned away.
        assert _code(client, _call_from(here)) == "UNAUTHENTICATED"
        assert _code(client, _call_from(here)) == "RESOURCE_EXHAUSTED"


def test_per_user_stage_counts_each_user_whatever_the_credential_or_address() -> None:
    with _chain(per_user=_per_user(2)) as client:
        assert _ok(client, _call_from("198.51.100.4", "alice-1"))["x-ratelimit-remaining"] == "1"
        assert _ok(client, _call_from("203.0.113.9", "alice-2"))["x-ratelimit-remaining"] == "0"
        error, _ = _failed(client, _call_from("192.0.2.1", "alice-1"))
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _ok(client, _call_from("198.51.100.4", "bob"))["x-ratelimit-remaining"] == "1"


def test_public_calls_count_per_ip_even_with_a_valid_token() -> None:
    # The per-user stage leaves public methods alone: two calls pass its limit of 1, and the
    # address's limit of 2 turns the third away.
    public = frozenset({EXECUTE})
    per_ip, per_user = _per_ip(limit=2, public=public), _per_user(1, public=public)
    with _chain(per_ip, per_user, public=public) as client:
        for remaining in ("1", "0"):
            assert _ok(client, _call_from("198.51.100.4", "alice-1"))["x-ratelimit-remaining"] == (
                remaining
            )
        assert _code(client, _call_from("198.51.100.4", "alice-1")) == "RESOURCE_EXHAUSTED"


# --- Sign-ins (the auth policy) ------------------------------------------------------------------


def _busy(_: str, context: Any) -> str:
    raise OverloadedError("SERVER_BUSY", "server busy; retry shortly", 1.0)


def test_sign_ins_count_per_ip_even_with_a_valid_token() -> None:
    with _chain(_per_ip(Policy.AUTH), public=frozenset({EXECUTE})) as client:
        assert _code(client, _call_from("198.51.100.4", "alice-1")) == "OK"
        assert _code(client, _call_from("198.51.100.4", "alice-1")) == "RESOURCE_EXHAUSTED"


def test_a_shed_sign_in_does_not_consume_the_address_budget() -> None:
    public = frozenset({EXECUTE})
    here = _call_from("198.51.100.4")
    with _chain(_per_ip(Policy.AUTH, limit=1), public=public, special_cases={"busy": _busy}) as c:
        for _ in range(3):  # turned away by load shedding: it never happened
            error, trailers = _failed(c, here, "busy")
            assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")
            assert trailers["x-ratelimit-remaining"] == "1"
        assert _ok(c, here)["x-ratelimit-remaining"] == "0"
        error, _ = _failed(c, here)
        assert error.reason == "RATE_LIMITED"


class _Held:
    """A special case that holds its call until released, then answers or sheds it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.shed = False

    def __call__(self, _: str, context: Any) -> str:
        self.entered.set()
        if not self.release.wait(CALL_TIMEOUT):
            raise AssertionError("the test never released the call")
        if self.shed:
            _busy(_, context)
        return "done"


def _hold(client: DummyServiceStub, metadata: Sequence[tuple[str, str]], held: _Held) -> Any:
    """Start a "held" call; return its future once the server is running it."""
    future = client.Execute.future(
        DummyRequest(input="held"), metadata=tuple(metadata), timeout=CALL_TIMEOUT
    )
    assert held.entered.wait(CALL_TIMEOUT), "the held call never reached the servicer"
    return future


def _says_retry_in_a_second(error: RichError, trailers: dict[str, Any]) -> None:
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert error.retry_delay_seconds == pytest.approx(1.0)
    assert trailers["retry-after"] == "1"
    assert trailers["x-ratelimit-reset"] == "1"


def test_a_refusal_while_a_sign_in_is_in_flight_says_retry_in_a_second() -> None:
    held = _Held()
    held.shed = True
    here = _call_from("198.51.100.4")
    public = frozenset({EXECUTE})
    with _chain(_per_ip(Policy.AUTH), public=public, special_cases={"held": held}) as client:
        future = _hold(client, here, held)
        # The one attempt in flight may yet be given back: not "retry in 900 s".
        _says_retry_in_a_second(*_failed(client, here))
        held.release.set()
        with pytest.raises(grpc.RpcError) as caught:
            future.result(timeout=CALL_TIMEOUT)
        assert rich_error(caught.value).reason == "SERVER_BUSY"
        # It was shed and given back: the retry a second later gets in ...
        assert _code(client, here) == "OK"
        # ... and with nothing in flight, a refusal says when the window has room again.
        error, trailers = _failed(client, here)
        assert error.retry_delay_seconds == pytest.approx(WINDOW)
        assert trailers["retry-after"] == "900"


def test_a_refusal_by_the_account_limit_while_its_sign_in_is_in_flight_says_a_second() -> None:
    held = _Held()
    accounts = AccountLimit(
        limiter=SlidingWindowLimiter(1, WINDOW, Ticker()),
        key_of=lambda _, request: "account:" + request.input,
        is_failure=lambda exc: isinstance(exc, UnauthenticatedError),
        methods=frozenset({EXECUTE}),
    )
    per_ip = _per_ip(Policy.AUTH, limit=1, accounts=accounts)
    there = _call_from("203.0.113.9")
    with _chain(per_ip, public=frozenset({EXECUTE}), special_cases={"held": held}) as client:
        future = _hold(client, _call_from("198.51.100.4"), held)
        # Another address, the same account: the account's one attempt is still running.
        with pytest.raises(grpc.RpcError) as caught:
            client.Execute(DummyRequest(input="held"), metadata=there, timeout=CALL_TIMEOUT)
        assert isinstance(caught.value, grpc.Call)
        _says_retry_in_a_second(rich_error(caught.value), dict(caught.value.trailing_metadata()))
        held.release.set()
        assert future.result(timeout=CALL_TIMEOUT).output == "done"
        # The refused call gave its address its hit back, and the sign-in that did not fail
        # gave the account its reservation back: the retry gets in.
        response = client.Execute(DummyRequest(input="held"), metadata=there, timeout=CALL_TIMEOUT)
        assert response.output == "done"
        assert _code(client, there) == "RESOURCE_EXHAUSTED"


def test_an_auth_policy_method_must_be_unary() -> None:
    # Sign-ins are given back or charged once they end; a stream has no such moment.
    with pytest.raises(ValueError, match="must be unary"):
        _per_ip(Policy.AUTH).wrap(MethodInfo(SERVER_STREAM, False, True), _who)


# --- Looks like a bug in the per-IP stage (reported to the lead; not fixed here) ---------------


def test_a_verifier_that_cannot_answer_does_not_spend_the_address_budget() -> None:
    def unavailable(token: str) -> Principal:
        raise UnavailableError("DATABASE_UNAVAILABLE", "database unavailable", 1.0)

    with _chain(_per_ip(limit=1), verify=unavailable) as client:
        codes = [_code(client, _call_from("198.51.100.4", "alice-1")) for _ in range(3)]
    assert codes == ["UNAVAILABLE"] * 3
