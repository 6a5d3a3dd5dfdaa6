"""SqliteSlidingWindowLimiter: one budget for every process that opens the file."""

from __future__ import annotations

from pathlib import Path

from luman.interceptors.rate_limit_sqlite import SqliteSlidingWindowLimiter, SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _two_processes(
    tmp_path: Path, clock: Clock, limit: int = 5
) -> list[SqliteSlidingWindowLimiter]:
    """Two stores on one file, as two workers open it."""
    path = tmp_path / "rate-limits.sqlite"
    return [
        SqliteSlidingWindowLimiter(SqliteStore(path, clock=clock), "default", limit, 60.0)
        for _ in range(2)
    ]


def test_the_limit_holds_across_stores(tmp_path: Path) -> None:
    clock = Clock()
    first, second = _two_processes(tmp_path, clock)
    decisions = [(first if i % 2 else second).hit("ip:1") for i in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert decisions[5].retry_after == 60.0
    assert first.hit("ip:2").allowed  # keys are apart
    assert not first.peek("ip:1").allowed
    clock.now += 60.0  # the whole window has passed
    assert second.hit("ip:1").allowed


def test_the_window_slides(tmp_path: Path) -> None:
    clock = Clock()
    first, second = _two_processes(tmp_path, clock, limit=2)
    assert first.hit("k").allowed
    clock.now += 30
    assert second.hit("k").allowed
    assert not first.hit("k").allowed
    clock.now += 30  # the first hit leaves the window, the second stays
    decision = second.hit("k")
    assert decision.allowed
    assert decision.reset_after == 30.0
    assert not first.hit("k").allowed


def test_cancel_gives_a_hit_back(tmp_path: Path) -> None:
    clock = Clock()
    first, second = _two_processes(tmp_path, clock, limit=1)
    decision = first.hit("k")
    assert not second.hit("k").allowed
    second.cancel("k", decision)
    assert second.hit("k").allowed


def test_an_unusable_file_fails_open(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "rate-limits.sqlite", clock=Clock())
    limiter = SqliteSlidingWindowLimiter(store, "default", 1, 60.0)
    store.close()
    assert limiter.hit("k").allowed
    assert limiter.hit("k").allowed
    assert store.failures == 2
