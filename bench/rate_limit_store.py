"""What one rate-limit check costs when worker processes share the count (issue 18: "choose
whether the embedded default gets a shared store ... justify the choice with a measurement").

Two processes (as `serve --workers 2`) check at the same time, one thread each, against 1000
keys with the product's default numbers (100 per 60 s: every request keeps its own entry).
Reported per store: wall-clock microseconds per check (mean of the process's run, best of
`--rounds`) and the 99th percentile of single checks.

    python -m bench.rate_limit_store                    # every store
    python -m bench.rate_limit_store --stores sqlite,redis --checks 5000

Stores: `memory` (SlidingWindowLimiter: the baseline, shares nothing), `sqlite` (the shared
file of rate_limit_sqlite.py: SQLite's busy handler serialises the processes), `sqlite-flock`
(the same with an flock around each check, so that SQLite never waits), `redis`
(RedisSlidingWindowLimiter on RATE_LIMIT_REDIS_URL, default redis://127.0.0.1:6379/15).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from luman.interceptors import rate_limit_sqlite
from luman.interceptors.rate_limit import RateLimiter, SlidingWindowLimiter

STORES = ("memory", "sqlite", "sqlite-flock", "redis")
LIMIT, WINDOW, KEYS = 100, 60.0, 1000


class _Flocked(rate_limit_sqlite.SqliteStore):
    """The store with an exclusive flock(2) around each transaction as well, so that BEGIN
    IMMEDIATE never waits in SQLite's busy handler (which sleeps 1 ms and more)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[object]:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield None
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


def _limiter(store: str, directory: str, redis_url: str, prefix: str) -> RateLimiter:
    if store == "memory":
        return SlidingWindowLimiter(LIMIT, WINDOW)
    if store in ("sqlite", "sqlite-flock"):
        kind = rate_limit_sqlite.SqliteStore if store == "sqlite" else _Flocked
        shared = kind(Path(directory) / f"{store}.sqlite")
        return rate_limit_sqlite.SqliteSlidingWindowLimiter(shared, "default", LIMIT, WINDOW)
    from luman.interceptors import rate_limit_redis

    backend = rate_limit_redis.redis_client(redis_url, timeout=2.0)
    return rate_limit_redis.RedisSlidingWindowLimiter(
        backend, LIMIT, WINDOW, prefix=f"luman:bench:{prefix}:"
    )


def _worker(
    store: str,
    directory: str,
    redis_url: str,
    prefix: str,
    checks: int,
    start: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[tuple[float, float]],
) -> None:
    limiter = _limiter(store, directory, redis_url, prefix)
    keys = [f"user:{random.getrandbits(64):x}" for _ in range(KEYS)]
    limiter.hit(keys[0])  # connections, statement caches
    start.wait()
    each: list[float] = []
    began = time.perf_counter()
    for index in range(checks):
        before = time.perf_counter()
        limiter.hit(keys[index % KEYS])
        each.append(time.perf_counter() - before)
    total = time.perf_counter() - began
    results.put((total / checks * 1e6, statistics.quantiles(each, n=100)[98] * 1e6))


def measure(store: str, checks: int, redis_url: str) -> tuple[float, float]:
    """(mean µs per check, p99 µs) of two processes checking at once; the slower process."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="luman-bench-") as directory:
        if store.startswith("sqlite"):  # as the supervisor does before starting workers
            rate_limit_sqlite.SqliteStore(Path(directory) / f"{store}.sqlite").close()
        start = context.Barrier(2)
        results: multiprocessing.queues.Queue[tuple[float, float]] = context.Queue()
        prefix = f"{os.getpid()}-{time.time_ns()}"
        processes = [
            context.Process(
                target=_worker,
                args=(store, directory, redis_url, prefix, checks, start, results),
            )
            for _ in range(2)
        ]
        for process in processes:
            process.start()
        outcome = [results.get(timeout=300) for _ in processes]
        for process in processes:
            process.join()
    return max(mean for mean, _ in outcome), max(p99 for _, p99 in outcome)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--checks", type=int, default=20_000, help="per process and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("RATE_LIMIT_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    args = parser.parse_args()
    print(f"{'store':<12} {'µs/check':>9} {'p99 µs':>9}   (2 processes at once, best of rounds)")
    for store in args.stores.split(","):
        runs = [measure(store, args.checks, args.redis_url) for _ in range(args.rounds)]
        mean, p99 = min(runs)
        print(f"{store:<12} {mean:9.1f} {p99:9.1f}")


if __name__ == "__main__":
    main()
