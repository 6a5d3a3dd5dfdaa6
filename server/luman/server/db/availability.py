"""DatabaseAvailability: a database that went away is an outage to report, not a bug per call.

ErrorMappingInterceptor offers it every exception that is not a DomainError (`translate`).
One that says "the database cannot be reached" (`is_unavailable`) becomes UNAVAILABLE with
reason DATABASE_UNAVAILABLE and a google.rpc.RetryInfo; anything else, IntegrityError and
ProgrammingError included, stays INTERNAL with its traceback, because it is a bug.

The first such failure marks the database away: one WARNING line, `on_change(False)` (the
server sets its gRPC health to NOT_SERVING), and a probe thread that runs a `SELECT 1`
transaction every `probe_interval` seconds. The first probe that succeeds marks it back: one
line with how long it was away and how many calls were refused meanwhile, and
`on_change(True)`. Calls are not refused up front while it is away: each still tries the
database (a refused connection fails in about a millisecond, an unanswered one after the
engine's connect timeout, see session.py), so one that can be answered from a cache still
works, and the first call after the database is back succeeds.

What counts as unreachable, as SQLAlchemy 2 and psycopg 3 report it:
- any DBAPIError that SQLAlchemy marked `connection_invalidated` (a connection lost in use);
- psycopg's OperationalError with no SQLSTATE (the client's own: connection refused or
  reset, "server closed the connection unexpectedly", connect timeout) or with SQLSTATE
  class 08 (connection exception), 57P01-57P03 (the server shutting down, crashed, starting
  up) or 53300 (too many connections). Other OperationalErrors (a statement timeout, a lock
  not available, a serialization failure) are answers from a working database;
- SQLite's "database is locked" (SQLITE_BUSY: another process held the write lock past the
  busy timeout), the embedded database's way of being unavailable. The probe takes the write
  lock (BEGIN IMMEDIATE), so "back" means writable again;
- SQLAlchemy's pool TimeoutError (no connection within the pool timeout) and
  DisconnectionError.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

import psycopg
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from luman.interceptors.errors import DomainError, UnavailableError

logger = logging.getLogger(__name__)

REASON = "DATABASE_UNAVAILABLE"
DEFAULT_PROBE_INTERVAL = 0.5  # seconds between two probes while the database is away
DEFAULT_RETRY_AFTER = 1.0  # seconds, sent as RetryInfo (the gateway's Retry-After: 1)

# SQLSTATEs of psycopg OperationalErrors that mean "no usable connection".
_UNREACHABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# Causes followed from a wrapping exception (`raise … from exc`) before giving up.
_MAX_CAUSES = 4


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or an exception it was raised from) says the database is unreachable.

    It has no side effects; see the module docstring for what counts.
    """
    for _ in range(_MAX_CAUSES):
        if _unreachable(exc):
            return True
        cause = exc.__cause__
        if cause is None:
            return False
        exc = cause
    return False


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, psycopg.OperationalError):
        state = orig.sqlstate
        return state is None or state.startswith("08") or state in _UNREACHABLE_SQLSTATES
    if isinstance(orig, sqlite3.OperationalError):
        # The primary result code is the low byte of an extended one (SQLITE_BUSY_SNAPSHOT…).
        return (getattr(orig, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY
    return False


class DatabaseAvailability:
    """Tracks whether the database is reachable; see the module docstring.

    Args:
        engine: the engine whose failures are reported; the probe uses it too.
        on_change: called with False when the database goes away and True when it is back
            (from the thread that noticed: an RPC's, the request-log writer's or the probe's).
        probe_interval: seconds between probes while away.
        retry_after_seconds: the RetryInfo delay sent with DATABASE_UNAVAILABLE.
        monotonic: seconds, for the outage's duration.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        on_change: Callable[[bool], None] = lambda _available: None,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        retry_after_seconds: float = DEFAULT_RETRY_AFTER,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._on_change = on_change
        self._probe_interval = probe_interval
        self._retry_after = retry_after_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._away_since: float | None = None
        self._back_at: float | None = None
        self._refused = 0
        self._probe: threading.Thread | None = None

    @property
    def available(self) -> bool:
        with self._lock:
            return self._away_since is None

    def translate(self, exc: Exception) -> DomainError | None:
        """ErrorMappingInterceptor's hook: UnavailableError for an unreachable database,
        None (INTERNAL) for everything else."""
        if not self.notice(exc):
            return None
        with self._lock:
            self._refused += 1
        return UnavailableError(
            REASON, "the database is unavailable; retry later", self._retry_after
        )

    def notice(self, exc: BaseException) -> bool:
        """Report a failed database operation; True if it means the database is unreachable
        (the caller may retry later), in which case the database is marked away."""
        if not is_unavailable(exc):
            return False
        with self._lock:
            if self._away_since is not None or self._stop.is_set():
                return True
            now = self._monotonic()
            # A call that failed just before the probe saw the database back reports it only
            # now: that is the outage that just ended, not a new one.
            if self._back_at is not None and now - self._back_at < self._probe_interval:
                return True
            self._away_since, self._refused = now, 0
            self._probe = threading.Thread(target=self._run_probe, name="db-probe", daemon=True)
            self._probe.start()
        logger.warning(
            "database unavailable (%s): answering UNAVAILABLE (%s) and reporting NOT_SERVING "
            "until it answers again",
            _describe(exc),
            REASON,
        )
        self._on_change(False)
        return True

    def start(self) -> None:
        """Report the current state once more (the server has just said SERVING)."""
        if not self.available:
            self._on_change(False)

    def close(self) -> None:
        """Stop probing (the server is shutting down)."""
        self._stop.set()
        with self._lock:
            probe = self._probe
        if probe is not None:
            # A probe stuck in a connect attempt is a daemon thread: do not wait it out.
            probe.join(timeout=1.0)

    def _run_probe(self) -> None:
        while not self._stop.wait(self._probe_interval):
            if not self._answers():
                continue
            with self._lock:
                now = self._monotonic()
                away_since = self._away_since or now
                refused = self._refused
                self._away_since, self._back_at, self._probe = None, now, None
            logger.warning(
                "database available again after %.1fs; %d calls were answered %s meanwhile",
                now - away_since,
                refused,
                REASON,
            )
            self._on_change(True)
            return

    def _answers(self) -> bool:
        try:
            # A transaction: on SQLite, BEGIN IMMEDIATE, so a database locked by another
            # process is still "away" (sqlite_immediate is ignored elsewhere).
            with self._engine.execution_options(sqlite_immediate=True).begin() as connection:
                connection.exec_driver_sql("SELECT 1")
        except Exception as exc:
            logger.debug("database probe failed: %s", _describe(exc))
            return False
        return True


def _describe(exc: BaseException) -> str:
    """The driver's own error, first line only: no SQL, no parameters."""
    orig = getattr(exc, "orig", None) or exc
    first_line = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first_line[:200]}" if first_line else type(orig).__name__
