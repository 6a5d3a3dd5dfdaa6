"""AuditWorker: the audit log's background thread. It writes the events recorded off the
request path (`defer`) and prunes events past AUDIT_LOG_RETENTION_DAYS.

Deferred events: a failed sign-in for an existing account is an audit event, but writing it
on the call's path would make a wrong password for an existing email slower than one for an
unknown email (which records nothing), and the answer time would tell which emails have
accounts. The sign-in hands the event to `defer` instead: an append to an in-memory queue
under a lock, with the time and the call record (client address, user agent, request id)
taken at that moment. The thread writes it in a transaction of its own. `close()` (App.stop,
after the gRPC server has stopped, so no sign-in can add more) writes what is queued before
it returns: nothing is lost on a clean shutdown. While the database is away a batch is kept
and retried; past MAX_QUEUE waiting events (a flood, or a long outage) new ones are dropped
and counted, with a warning.

Pruning: rows older than the retention period are deleted in batches of PRUNE_BATCH rows, one
small transaction each, once at start and then every `prune_interval` seconds of the injected
monotonic clock, with the cutoff from the injected wall clock. 0 days keeps them forever.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import cast

from sqlalchemy import Engine, Table, delete, select

from luman.interceptors.call_context import CallRecord, optional_call
from luman.server.audit.record import Event, row
from luman.server.clock import Clock, system_clock
from luman.server.db.availability import is_unavailable
from luman.server.db.models import AuditEvent
from luman.server.db.session import Sessions

logger = logging.getLogger(__name__)

MAX_QUEUE = 10_000
PRUNE_BATCH = 1000
_TABLE = cast(Table, AuditEvent.__table__)


@dataclasses.dataclass(frozen=True)
class _Deferred:
    event: Event
    time: dt.datetime
    call: CallRecord | None


def prune_before(engine: Engine, cutoff: dt.datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete audit events older than `cutoff`, `batch` rows per transaction; return how many.

    Small transactions keep the SQLite write lock (shared with every RPC that writes) short.
    """
    total = 0
    while True:
        doomed = select(_TABLE.c.id).where(_TABLE.c.time < cutoff).limit(batch).scalar_subquery()
        with engine.begin() as connection:
            deleted = int(
                connection.execute(delete(_TABLE).where(_TABLE.c.id.in_(doomed))).rowcount
            )
        total += deleted
        if deleted < batch:
            return total


class AuditWorker:
    """Args:
    retention_days: events older than this are pruned; 0 keeps them forever.
    clock: wall-clock time (the events' time, the pruning cutoff).
    monotonic: seconds, for the pruning schedule.
    prune_interval: seconds between pruning runs.
    idle_wait: how long the idle thread sleeps before checking the pruning schedule.
    """

    def __init__(
        self,
        sessions: Sessions,
        *,
        retention_days: int = 365,
        clock: Clock = system_clock,
        monotonic: Callable[[], float] = time.monotonic,
        prune_interval: float = 3600.0,
        idle_wait: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._retention = dt.timedelta(days=retention_days)
        self._clock = clock
        self._monotonic = monotonic
        self._prune_interval = prune_interval
        self._idle_wait = idle_wait
        self._cond = threading.Condition()
        self._queue: collections.deque[_Deferred] = collections.deque()
        self._closing = False
        self._flush_waiters: list[threading.Event] = []
        self._thread: threading.Thread | None = None
        self._next_prune = monotonic()
        self.written = self.dropped = self.pruned = 0

    def defer(self, event: Event) -> None:
        """Record `event` off the request path: queued now (with the time and the current
        call), written by the thread. Costs an append under a lock."""
        deferred = _Deferred(event, self._clock(), optional_call())
        with self._cond:
            if len(self._queue) >= MAX_QUEUE:
                self.dropped += 1
                return
            self._queue.append(deferred)
            self._cond.notify()

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="audit-log", daemon=True)
            self._thread.start()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until what is queued is written and pruning has run if due (tests)."""
        done = threading.Event()
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                return False
            self._flush_waiters.append(done)
            self._cond.notify()
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify()
        if thread is None:
            # Never started (a server built but not run): write what is queued here.
            self._write_queued()
            return
        thread.join(timeout)
        with self._cond:
            lost = len(self._queue)
        if lost or self.dropped:
            logger.warning(
                "audit log: %d deferred events not written at shutdown, %d dropped (queue full)",
                lost,
                self.dropped,
            )

    def prune(self) -> int:
        """Delete the events past retention now; how many."""
        if self._retention <= dt.timedelta(0):
            return 0
        pruned = prune_before(self._sessions.engine, self._clock() - self._retention)
        with self._cond:
            self.pruned += pruned
        if pruned:
            logger.info("audit log: pruned %d events older than %s", pruned, self._retention)
        return pruned

    def _run(self) -> None:
        self._prune_if_due()  # once at start
        backoff = 0.0
        while True:
            with self._cond:
                if backoff:
                    self._cond.wait(backoff)
                elif not self._queue and not self._flush_waiters and not self._closing:
                    self._cond.wait(self._idle_wait)
                closing = self._closing
                waiters, self._flush_waiters = self._flush_waiters, []
            if self._write_queued():
                backoff = 0.0
            else:
                # The database is away: keep the events, try again later (at close: give up
                # after close()'s timeout, which reports what is left).
                backoff = min(max(backoff * 2, 0.1), 1.0)
                with self._cond:
                    self._flush_waiters.extend(waiters)
                continue
            if not closing:
                self._prune_if_due()
            for waiter in waiters:
                waiter.set()
            if closing:
                with self._cond:
                    if not self._queue:
                        return

    def _write_queued(self) -> bool:
        """Write every queued event; False if the database is away (they stay queued)."""
        while True:
            with self._cond:
                batch = list(self._queue)
            if not batch:
                return True
            try:
                with self._sessions.write.begin() as session:
                    for item in batch:
                        session.add(row(item.event, item.time, call=item.call))
            except Exception as exc:
                if is_unavailable(exc):
                    return False
                logger.exception("audit log: %d deferred events could not be written", len(batch))
                with self._cond:
                    for _ in batch:
                        self._queue.popleft()
                continue
            with self._cond:
                for _ in batch:
                    self._queue.popleft()
                self.written += len(batch)

    def _prune_if_due(self) -> None:
        if self._retention <= dt.timedelta(0) or self._monotonic() < self._next_prune:
            return
        self._next_prune = self._monotonic() + self._prune_interval
        try:
            self.prune()
        except Exception as exc:
            if not is_unavailable(exc):
                logger.warning("audit log: pruning failed (%s)", type(exc).__name__)
