"""SqliteSlidingWindowLimiter: the sliding log of SlidingWindowLimiter, kept in one SQLite file
that every worker process on the host opens, so that `serve --workers N` counts against one
budget without Redis.

Each counted request is a row (name, key, slot, time, count), exactly as the in-process log
keeps its entries: at or below `slots` requests per window every request has its own row
(exact); above it, requests within window/`slots` of each other share one. A check is one
transaction: drop the key's expired rows, sum the live ones, add or bump the request's row.

Exact across processes: each check is a BEGIN IMMEDIATE transaction, so SQLite's write lock
serialises them (threads of one process take turns on its one connection first). Time is
wall-clock seconds (the file outlives the processes, and a supervisor restart keeps the counts,
as Redis does); a step of the system clock shifts window edges by the step.

The file lives in LUMAN_DATA_DIR, in WAL mode with synchronous=OFF: nothing is fsynced. A
killed process loses nothing (the rows are in the page cache) and its lock goes with it; an OS
crash may lose recent counts, which only makes the limit more lenient for one window.

Cost per check, two processes checking at once on this 2-core machine (python -m
bench.rate_limit_store: 100 per 60 s over 1000 keys, 10,000 checks per process, best of 3;
wall-clock microseconds per check, mean and 99th percentile):
    in process (SlidingWindowLimiter, not shared)             3.1     5.4
    this limiter                                             78      95
    the same with an flock(2) around each check (tried)     101     875
    Redis on 127.0.0.1 (RedisSlidingWindowLimiter)          322     731
(The mean includes waiting for the other process's transaction: about 40 µs of work each.)
So workers without RATE_LIMIT_REDIS_URL use this store rather than refuse to start: it costs
a quarter of the local Redis, with a tighter tail, and needs no server. The flock would spare
SQLite's busy handler its sleeps, but the kernel lets the releasing process take it straight
back, which starves the other one: worse tail. Several hosts still need Redis.

When the file cannot be used (disk full, permissions) the limiter fails open and logs an error
at most once a minute, as the Redis one does: the counter's outage must not be sign-in's.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from luman.interceptors.rate_limit import DEFAULT_SLOTS, Decision, slot_length

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# A key's live rows and the oldest one. `+time`: look the key up by the primary key; on the
# index by time, SQLite would scan every live row of the limiter (milliseconds, not microseconds).
_LIVE = (
    "SELECT coalesce(sum(count), 0), min(time) FROM hits WHERE name = ? AND key = ? AND +time > ?"
)

ERROR_LOG_INTERVAL = 60.0
# Longest a check waits for another process's transaction before failing open: those take
# tens of microseconds, so only a stuck process gets near it, and while one is stuck every
# thread of this process queues behind the lock: short, so that it costs latency briefly.
BUSY_TIMEOUT = 0.25
SWEEP_INTERVAL = 1.0  # seconds between two sweeps of a limiter's expired keys, per process

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    slot REAL NOT NULL,
    time REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (name, key, slot)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hits_by_time ON hits (name, time);
"""


class SqliteStore:
    """The shared file and this process's one connection to it (used under a lock).

    Args:
        path: the SQLite file; created with its table when missing.
        clock: wall-clock seconds, shared by every process; tests inject a fake one.
        monotonic: the clock of the error log's throttle.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
        )
        self._last_error_log: float | None = None
        self._failures = 0
        self._db.execute("PRAGMA synchronous=OFF")
        # Switching to WAL answers "locked" at once, without the busy handler, while another
        # process does the same: the supervisor prepares the file before starting workers.
        deadline = monotonic() + BUSY_TIMEOUT
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
                break
            except sqlite3.OperationalError:
                if monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    @property
    def failures(self) -> int:
        """Checks that failed open because the file could not be used."""
        return self._failures

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def transaction(self, work: Callable[[sqlite3.Connection], _T]) -> _T | None:
        """`work(connection)` in one write transaction, holding every other process off;
        None (fail open) when the file cannot be used.

        This process's threads take turns on the one connection (the lock); other processes
        wait in SQLite's busy handler (BEGIN IMMEDIATE), at most BUSY_TIMEOUT."""
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                result = work(db)
                db.execute("COMMIT")
                return result
            except (sqlite3.Error, OSError) as exc:
                # A failed COMMIT leaves the transaction open: every later BEGIN would fail,
                # and limits would stay off for good.
                with contextlib.suppress(sqlite3.Error):
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                self._failed(exc)
                return None
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _failed(self, exc: Exception) -> None:
        now = self._monotonic()
        self._failures += 1
        if self._last_error_log is None or now - self._last_error_log >= ERROR_LOG_INTERVAL:
            self._last_error_log = now
            logger.error(
                "rate limiting is not enforced: the shared store %s is unusable (%s: %s)",
                self.path,
                type(exc).__name__,
                exc,
            )


class SqliteSlidingWindowLimiter:
    """Sliding-log limiter in a SqliteStore that several processes share.

    Args:
        store: the shared file (one SqliteStore per process, shared by its limiters).
        name: the limiter's namespace in the file ("auth", "default", ...).
        limit: requests admitted per window (at least 1).
        window: window length in seconds.
        slots: above this limit, requests within window/slots of each other share a row.
    """

    def __init__(
        self,
        store: SqliteStore,
        name: str,
        limit: int,
        window: float,
        *,
        slots: int = DEFAULT_SLOTS,
    ) -> None:
        self._quantum = slot_length(limit, window, slots)
        self._store = store
        self._name = name
        self._limit = limit
        self._window = window
        self._next_sweep = float("-inf")

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    def hit(self, key: str) -> Decision:
        name, limit, window = self._name, self._limit, self._window

        def check(db: sqlite3.Connection) -> Decision:
            now = self._store.clock()
            self._sweep(db, now)
            count, oldest = db.execute(_LIVE, (name, key, now - window)).fetchone()
            if count >= limit:
                return Decision(False, limit, 0, oldest + window - now)
            slot = now // self._quantum if self._quantum else now
            db.execute(
                "INSERT INTO hits (name, key, slot, time, count) VALUES (?, ?, ?, ?, 1) "
                "ON CONFLICT (name, key, slot) DO UPDATE SET count = count + 1, time = ?",
                (name, key, slot, now, now),
            )
            first = now if oldest is None else oldest
            return Decision(True, limit, limit - count - 1, first + window - now, slot)

        decision = self._store.transaction(check)
        return decision if decision is not None else Decision(True, limit, limit, 0.0)

    def peek(self, key: str) -> Decision:
        name, limit, window = self._name, self._limit, self._window

        def look(db: sqlite3.Connection) -> Decision:
            now = self._store.clock()
            count, oldest = db.execute(_LIVE, (name, key, now - window)).fetchone()
            remaining = limit - count
            reset = 0.0 if oldest is None else oldest + window - now
            return Decision(remaining > 0, limit, max(0, remaining), reset)

        decision = self._store.transaction(look)
        return decision if decision is not None else Decision(True, limit, limit, 0.0)

    def cancel(self, key: str, decision: Decision) -> None:
        if not decision.allowed or decision.ticket is None:
            return  # nothing was recorded (or the store failed open)
        slot = decision.ticket

        def undo(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE hits SET count = count - 1 WHERE name = ? AND key = ? AND slot = ?",
                (self._name, key, slot),
            )
            db.execute(
                "DELETE FROM hits WHERE name = ? AND key = ? AND slot = ? AND count <= 0",
                (self._name, key, slot),
            )

        self._store.transaction(undo)

    def _sweep(self, db: sqlite3.Connection, now: float) -> None:
        """Drop the expired rows of every key, at most once a SWEEP_INTERVAL per process (a
        key's own expired rows are skipped by _LIVE meanwhile)."""
        if now < self._next_sweep:
            return
        db.execute(
            "DELETE FROM hits WHERE name = ? AND time <= ?", (self._name, now - self._window)
        )
        self._next_sweep = now + SWEEP_INTERVAL
