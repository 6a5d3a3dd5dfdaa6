"""RequestLogWriter: RPCs hand entries to a bounded in-memory queue; one thread writes them.

The RPC side (`submit`) only appends under a lock, so a slow or failing database never delays
or fails a call. `close()` drains the queue: App.stop calls it after the gRPC server has
stopped, so every call that completed is written. Entries that arrive while it drains are
still written; only those that arrive after the writer has stopped (a call that grpcio
cancelled at the end of the grace period but whose handler ran on) are lost, and they are
counted as `after_close`, not as drops: the queue was never full.

The thread writes full batches: it waits until `batch_size` entries are queued, the oldest
queued entry has waited about `max_delay` seconds (so a row appears within about a second on
an idle server too), or a flush or close asks for everything. Writing whatever had queued up
as soon as the previous insert returned made many small transactions under load, each paying
its fixed cost (begin, statement, commit) on the same CPU as the RPCs, and on PostgreSQL
keeping the database's own processes busy on the same cores.

A database that is away (`on_error` says so: by default `availability.is_unavailable`; the
server passes DatabaseAvailability.notice, which also logs the outage once and sets health)
loses nothing: the batch goes back to the head of the queue and is tried again after a
backoff that doubles from `retry_min` to `retry_max` seconds, so a dead database sees about
one connection attempt a second, and the log no line per attempt. Entries keep queuing
meanwhile, up to `max_queue` (the retried ones included): DEFAULT_MAX_QUEUE holds a 10 s
outage at 10,000 calls/s, above the benchmark's request-log rates (5-8k rows/s), at about
400 bytes an entry (40 MB when full). Past it, new entries are dropped and counted
(`dropped`). A batch that fails for any other reason (a missing table: a bug, which retrying
would not fix) is counted as `failed` and not retried. Drops and failures are reported in
rate-limited warnings (at most one per `warn_interval`), never silently. If the database is
still away when close()'s timeout runs out, what is still queued is counted as `failed` and
reported as lost.

The same thread prunes rows older than the retention period, once at start and then every
`prune_interval` seconds of the injected monotonic clock.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from luman.interceptors.request_logging import RequestLogEntry
from luman.server.clock import Clock, system_clock
from luman.server.db.availability import is_unavailable
from luman.server.request_logs import store
from luman.server.request_logs.spool import RequestLogSpool
from luman.server.request_logs.store import WriterStats

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 100_000
DEFAULT_BATCH_SIZE = 500
DEFAULT_MAX_DELAY = 1.0  # seconds an entry may wait for its batch to fill
DEFAULT_RETRY_MIN = 0.1  # seconds before the first retry of a batch the database refused
DEFAULT_RETRY_MAX = 1.0  # the longest wait between two retries


class RequestLogWriter:
    """Batches request-log entries into the database from a background thread.

    Args:
        engine: where request_logs lives.
        retention_days: rows older than this are pruned; 0 keeps them forever.
        clock: wall-clock time (the pruning cutoff).
        monotonic: seconds, for the pruning schedule and warning throttle.
        max_queue: entries held (waiting for their batch or for the database to come back)
            before new ones are dropped.
        batch_size: most entries per INSERT, and how many the thread waits for.
        max_delay: longest an entry waits for a full batch before it is written anyway.
        prune_interval: seconds between pruning runs.
        warn_interval: least seconds between two drop/failure warnings.
        idle_wait: how long the idle thread sleeps before checking the pruning schedule.
        on_error: told of every failed write; True means the database is away and the batch
            is kept and retried, False that the batch is lost.
        retry_min: seconds before the first retry; each failed retry doubles the wait...
        retry_max: ...up to this.
        spool: a supervised worker's spool (spool.py): every queued entry is also appended
            to it, and each batch records in its transaction how far the spool is written.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        retention_days: int = 30,
        clock: Clock = system_clock,
        monotonic: Callable[[], float] = time.monotonic,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_delay: float = DEFAULT_MAX_DELAY,
        prune_interval: float = 3600.0,
        warn_interval: float = 60.0,
        idle_wait: float = 5.0,
        on_error: Callable[[Exception], bool] = is_unavailable,
        retry_min: float = DEFAULT_RETRY_MIN,
        retry_max: float = DEFAULT_RETRY_MAX,
        spool: RequestLogSpool | None = None,
    ) -> None:
        self._engine = engine
        self._retention = dt.timedelta(days=retention_days)
        self._clock = clock
        self._monotonic = monotonic
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._max_delay = max_delay
        self._prune_interval = prune_interval
        self._warn_interval = warn_interval
        self._idle_wait = idle_wait
        self._on_error = on_error
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._spool = spool
        # submit() runs on every RPC: it takes the plain Lock directly (a C-level `with`),
        # the Condition over the same lock only to wake the thread.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: collections.deque[RequestLogEntry] = collections.deque()
        self._flush_waiters: list[threading.Event] = []
        self._closing = False
        self._giving_up = False  # close() timed out: stop retrying, count the rest as lost
        self._stopped = False  # the thread has written its last batch (or never ran)
        self._in_flight = 0  # entries of the insert under way
        self._thread: threading.Thread | None = None
        # While the database is away: the real-time moment of the next attempt, and the wait
        # after that one if it fails too.
        self._retry_at: float | None = None
        self._retry_wait = retry_min
        self._next_prune = monotonic()
        self._last_warning: float | None = None
        self._reported = (0, 0)  # (dropped, failed) at the last warning
        self._last_error = ""
        self._written = self._dropped = self._failed = self._pruned = self._after_close = 0

    @property
    def stats(self) -> WriterStats:
        with self._cond:
            return WriterStats(
                self._written, self._dropped, self._failed, self._pruned, self._after_close
            )

    @property
    def queued(self) -> int:
        """Entries not written yet: queued (for a batch, or for the database to come back) or in
        the insert under way, which an outage puts back in the queue."""
        with self._cond:
            return len(self._queue) + self._in_flight

    def submit(self, entry: RequestLogEntry) -> None:
        """Queue one entry; never blocks on the database and never raises."""
        with self._lock:
            if self._stopped:
                self._after_close += 1
                return
            if len(self._queue) >= self._max_queue:
                self._dropped += 1
                return
            self._queue.append(entry)
            if self._spool is not None:  # in the queue's order, before the call answers
                self._spool.append(entry)
            queued = len(self._queue)
            # Wake the thread for the first entry (it starts the max_delay countdown) and for a
            # full batch; in between it is waiting for exactly that.
            if queued == 1 or queued >= self._batch_size:
                self._cond.notify()

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="request-log-writer", daemon=True
            )
            self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is written (or counted as failed),
        and run pruning if it is due. Returns False on timeout or when the writer is stopped.
        While the database is away, that is when it is back and the backlog is written."""
        done = threading.Event()
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                return False
            self._flush_waiters.append(done)
            self._cond.notify()
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued (and what arrives meanwhile), then stop the thread.

        If the database is still away (or still busy with the last batch) after `timeout`
        seconds, the entries still queued are counted as failed and reported as lost.
        """
        with self._cond:
            self._closing = True
            thread = self._thread
            if thread is None:
                self._stopped = True
            self._cond.notify()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                self._give_up(timeout or 0.0)
                # The batch being written, if any, ends as written or failed when its attempt
                # does (within the connect timeout); wait a little for the count to be right.
                thread.join(1.0)
        if self._spool is not None and not (thread is not None and thread.is_alive()):
            self._spool.close(self._engine)
        stats = self.stats
        if stats.dropped or stats.failed or stats.after_close:
            logger.warning(
                "request log: %d entries written, %d dropped (queue full), %d lost to "
                "database errors, %d arrived after close",
                stats.written,
                stats.dropped,
                stats.failed,
                stats.after_close,
            )

    def _give_up(self, waited: float) -> None:
        with self._cond:
            lost, in_flight = len(self._queue), self._in_flight
            self._queue.clear()
            self._failed += lost
            self._giving_up = self._stopped = True
            waiters, self._flush_waiters = self._flush_waiters, []
            self._cond.notify()
        for waiter in waiters:
            waiter.set()
        logger.warning(
            "request log: database still unavailable or busy after %.0fs of shutdown; "
            "%d queued entries lost%s",
            waited,
            lost,
            f" ({in_flight} more unless the insert under way succeeds)" if in_flight else "",
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                self._wait_for_batch()
                if self._giving_up:
                    return
                batch = [
                    self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))
                ]
                self._in_flight = len(batch)
            if batch and not self._write(batch):
                with self._cond:
                    self._in_flight = 0
                    if self._giving_up:  # close() counted the queue; this batch is lost too
                        self._failed += len(batch)
                        return
                    # Kept, in order, ahead of what arrived meanwhile; tried again later.
                    self._queue.extendleft(reversed(batch))
                    self._retry_at = time.monotonic() + self._retry_wait
                    self._retry_wait = min(self._retry_wait * 2, self._retry_max)
                self._warn_if_losing()
                continue
            with self._cond:
                self._in_flight = 0
                self._retry_at, self._retry_wait = None, self._retry_min
                drained = not self._queue
                waiters: list[threading.Event] = []
                if drained:
                    waiters, self._flush_waiters = self._flush_waiters, []
                stopping = (self._closing and drained) or self._giving_up
                if stopping:
                    # Everything queued until now is written; from here on nothing would
                    # write an entry, so submit() counts it as after_close.
                    self._stopped = True
            if not stopping:
                self._prune_if_due()
            self._warn_if_losing()
            for waiter in waiters:
                waiter.set()
            if stopping:
                return

    def _wait_for_batch(self) -> None:
        """Holding the lock: wait until a batch is due (see the module docstring), or for at
        most `idle_wait` while nothing is queued (then the pruning schedule is checked).
        After a failed attempt, wait out the backoff: neither a full batch, nor a flush, nor
        close() makes the next attempt on a database that is away come sooner."""
        if self._retry_at is not None:
            while not self._giving_up:
                remaining = self._retry_at - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)
            return
        if not self._queue and not self._flush_waiters and not self._closing:
            self._cond.wait(self._idle_wait)
        if not self._queue:
            return
        # Real time, not the injected clock: this is how long Condition.wait really waits.
        deadline = time.monotonic() + self._max_delay
        while len(self._queue) < self._batch_size and not self._flush_waiters and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _write(self, batch: list[RequestLogEntry]) -> bool:
        """Insert `batch`; False if it failed because the database is away (retry it)."""
        spool = self._spool
        try:
            store.insert_entries(
                self._engine, batch, also=None if spool is None else spool.marker(len(batch))
            )
        except Exception as exc:
            logger.debug("request log insert failed: %s", type(exc).__name__, exc_info=True)
            if self._on_error(exc):
                return False
            with self._cond:
                self._failed += len(batch)
            self._last_error = type(exc).__name__
        else:
            with self._cond:
                self._written += len(batch)
        if spool is not None:
            spool.advance(len(batch))
        return True

    def _prune_if_due(self) -> None:
        if self._retention <= dt.timedelta(0) or self._monotonic() < self._next_prune:
            return
        self._next_prune = self._monotonic() + self._prune_interval
        try:
            pruned = store.prune_before(self._engine, self._clock() - self._retention)
        except Exception as exc:
            # A database that is away has been reported already; the next run will catch up.
            if not self._on_error(exc):
                logger.warning("request log: pruning failed (%s)", type(exc).__name__)
            return
        with self._cond:
            self._pruned += pruned
        if pruned:
            logger.info("request log: pruned %d entries older than %s", pruned, self._retention)

    def _warn_if_losing(self) -> None:
        with self._cond:
            current = (self._dropped, self._failed)
        if current == self._reported:
            return
        now = self._monotonic()
        if self._last_warning is not None and now - self._last_warning < self._warn_interval:
            return
        dropped = current[0] - self._reported[0]
        failed = current[1] - self._reported[1]
        self._last_warning, self._reported = now, current
        logger.warning(
            "request log: %d entries dropped (queue full) and %d lost to database errors%s "
            "since the last report (totals: %d dropped, %d lost)",
            dropped,
            failed,
            f" (last error: {self._last_error})" if failed else "",
            *current,
        )
