"""SlidingWindowLimiter with a fake monotonic clock: exact counts at the window edge, bounded
memory, and the interceptor's behaviour on a bare server (no database)."""

from __future__ import annotations

import grpc
import pytest
from grpc_interceptor.testing.protos.dummy_pb2 import DummyRequest

from luman.interceptors.caller import CallerResolver
from luman.interceptors.error_mapping import ErrorMappingInterceptor
from luman.interceptors.rate_limit import (
    Policy,
    RateLimitInterceptor,
    SlidingWindowLimiter,
    _whole_seconds,
)
from tests.interceptors.dummy import serve
from tests.support import rich_error

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


def test_interceptor_rejects_with_retry_info_and_trailers() -> None:
    ticker = Ticker()
    limiter = SlidingWindowLimiter(2, WINDOW, ticker)
    interceptor = RateLimitInterceptor(
        policy_of=lambda _: Policy.DEFAULT,
        limiters={Policy.DEFAULT: limiter},
        caller_of=CallerResolver(),
        principal_of=lambda _: None,
    )
    with serve([ErrorMappingInterceptor(), interceptor]) as c:
        for remaining in ("1", "0"):
            _, call = c.Execute.with_call(DummyRequest(input="x"))
            trailers = dict(call.trailing_metadata())
            assert trailers["x-ratelimit-limit"] == "2"
            assert trailers["x-ratelimit-remaining"] == remaining
            assert trailers["x-ratelimit-reset"] == "900"
        ticker.advance(0.5)
        with pytest.raises(grpc.RpcError) as caught:
            c.Execute(DummyRequest(input="x"))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "RATE_LIMITED"
    assert error.retry_delay_seconds == pytest.approx(899.5)
    assert isinstance(caught.value, grpc.Call)
    trailers = dict(caught.value.trailing_metadata())
    assert trailers["retry-after"] == "900"  # whole seconds, rounded up
    assert trailers["x-ratelimit-remaining"] == "0"


def test_interceptor_without_a_limiter_for_the_policy_lets_everything_through() -> None:
    interceptor = RateLimitInterceptor(
        policy_of=lambda _: None,
        limiters={Policy.DEFAULT: SlidingWindowLimiter(1, WINDOW, Ticker())},
        caller_of=CallerResolver(),
        principal_of=lambda _: None,
    )
    with serve([ErrorMappingInterceptor(), interceptor]) as c:
        for _ in range(5):
            _, call = c.Execute.with_call(DummyRequest(input="x"))
            assert "x-ratelimit-limit" not in dict(call.trailing_metadata())


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (900.0, 900),
        (900.0000001, 900),
        (899.9996, 900),
        (900.0006, 901),
        (0.3, 1),
        (0.0, 0),
        (0.0004, 0),
        (-2.5, 0),
    ],
)
def test_reset_and_retry_after_are_whole_seconds_rounded_up(seconds: float, shown: int) -> None:
    # Float noise from the sliding window's arithmetic must not show 900 s as 901.
    assert _whole_seconds(seconds) == shown
