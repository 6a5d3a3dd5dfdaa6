"""bcrypt hashing that keeps sign-ins flowing under overload and stays fair to cheap RPCs.

bcrypt releases the GIL, so hashing (on the hasher's own threads, see below) runs in parallel
with other calls. A sign-in (Register, Login, CliLogin) holds a gRPC worker thread from start
to end, its wait for a hash included.

- Hash slots: at most one hash per core this process may run on (`os.sched_getaffinity`, so a
  container or `taskset` limit counts), because more parallel hashes than cores only queue.
- A FIFO queue for the rest: up to `max_waiting` callers (BCRYPT_MAX_WAITING, default 128)
  wait for a slot, and a freed slot is handed to the oldest waiter (nobody barges in ahead). A
  waiter leaves the queue as soon as its call ends without it: cancelled, the client gone, or
  its deadline passed (grpcio ends the call then, and the call's termination callback wakes
  the waiter at once; for a context without such a timer, the wait is bounded by
  `time_remaining()` plus a second), so nothing is hashed for a caller who no longer listens.
  It then fails with RESOURCE_EXHAUSTED, reason SERVER_BUSY, which that caller never sees.
- Beyond the queue a caller is refused at once, before any database work (sign-ins ask
  `check_capacity()` first): RESOURCE_EXHAUSTED, reason SERVER_BUSY, RetryInfo 1 s. The rate
  limiter gives back what it counted for any SERVER_BUSY call (OverloadedError): it never
  happened.

Why a deep queue rather than refusing: a refusal costs ~0.5 ms of CPU (grpcio's and the
interceptor chain's Python: 1,000-2,000 a second fill a core) against ~70 ms for a hash at cost
10, but a client that retries at once turns every refusal into another call, on the cores the
hashes need. With 1 hash and 2 waiters allowed per core, 16 or 64 such callers kept a one-core
server answering 1,000-2,000 refusals a second and completing 0.3-1.5 sign-ins a second
(0.02-0.1 x raw bcrypt). A waiting caller costs no CPU (a blocked thread), so with a queue that
holds every one of them the same callers sign in at 0.83-1.0 x raw bcrypt with no refusal at
all (issue 14: one core, SQLite and PostgreSQL, a shared machine). The price is a thread per
waiter: `threads_held` is the most this hasher ever holds (slots + max_waiting), and
build_server sizes the gRPC worker pool as GRPC_MAX_WORKERS plus that, so every other call
keeps GRPC_MAX_WORKERS threads however many sign-ins wait (GetMe's p99 at 16 streams stayed
within 0-4 ms of its p99 alone while 64 such callers queued; refusing them had raised it to
24-113 ms). Each waiter also counts against GRPC_MAX_CONCURRENT_RPCS (config.py checks that
both fit). A full queue of 128 is about 9 s of waiting on one core at cost 10.

The hashes run on the hasher's own threads, one per slot, at a lower CPU priority (`nice`,
BCRYPT_NICE). A hash is ~70 ms of pure CPU at cost 10; at equal priority the kernel shares a
busy core evenly between it and the threads serving cheap RPCs, which then wait out its time
slices (GetMe p99 rose from 8 ms to 13 ms while logins ran, BENCHMARKS.md). Niced, a hash takes
the CPU the other threads leave, and alone it runs at full speed. Under a flood beyond the
queue, though, the threads answering refusals leave a niced hash almost nothing (0.3-0.5
logins/s on one core with 200 retrying callers and the queue full), so a hash that starts
after a caller was turned away (since the previous hash began) runs on a second set of threads
at the server's own priority: a fair share of the CPU instead (2.2-2.9 logins/s in the same
runs). Without refusals every hash is niced, so GetMe keeps its latency while logins queue.
Linux only: there a thread's nice value is its own; elsewhere hashes run at normal priority.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import bcrypt

from luman.interceptors import tracing
from luman.interceptors.errors import OverloadedError

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
DEADLINE_BACKSTOP_SECONDS = 1.0  # past a waiting call's deadline, see PasswordHasher._wait
DEFAULT_MAX_WAITING = 128  # callers: twice the 64 retrying callers issue 14 measures
MAX_NICE = 19  # the lowest priority Linux knows
_T = TypeVar("_T")


class WaitingCall(Protocol):
    """The call a hash is for, as far as waiting for a slot goes. grpc.ServicerContext (and the
    HTTP gateway's in-process context) is one."""

    def time_remaining(self) -> float | None:
        """Seconds until the call's deadline; None or a huge number without one."""

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Run `callback` when the call ends (cancelled, deadline passed or answered); False
        when it already has."""


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), else the machine's core count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


class _Waiter:
    """One caller in the queue. `ready` is set when it is handed a slot (`granted`) or when its
    call ends (`gone`), whichever comes first."""

    __slots__ = ("gone", "granted", "ready")

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.granted = False
        self.gone = False

    def leave(self) -> None:
        """The call ended: stop waiting. Called by grpcio when the call terminates."""
        self.gone = True
        self.ready.set()


class PasswordHasher:
    """Args:
    rounds: the bcrypt cost.
    max_concurrency: hash slots; default usable_cores().
    max_waiting: callers allowed to wait for a slot, in FIFO order; default 128.
    nice: how much lower than the server's own the hashing threads' CPU priority is (0: same).
    """

    def __init__(
        self,
        rounds: int,
        max_concurrency: int | None = None,
        max_waiting: int | None = None,
        *,
        nice: int = 0,
    ) -> None:
        self.rounds = rounds
        self.slots = max_concurrency or usable_cores()
        self.max_waiting = DEFAULT_MAX_WAITING if max_waiting is None else max_waiting
        self.nice = nice
        # One thread per slot at each priority: niced, and (when nice > 0) the server's own
        # for hashes that start while callers are being turned away (`_refused`). Threads start
        # on first use and end with close() or when the hasher is collected.
        self._niced = ThreadPoolExecutor(
            self.slots, thread_name_prefix="bcrypt", initializer=_lower_priority, initargs=(nice,)
        )
        self._fair = self._niced
        if nice > 0:
            self._fair = ThreadPoolExecutor(self.slots, thread_name_prefix="bcrypt-fair")
        self._refused = False  # a caller was turned away since the last hash began
        self._free = self.slots
        # Callers turned away with SERVER_BUSY since start (the metrics read it).
        self.shed = 0
        self._queue: collections.deque[_Waiter] = collections.deque()
        self._changed = threading.Condition()
        # A real hash at the configured cost: checking against it takes as long as checking a
        # real user's password, so an unknown email cannot be told apart by timing.
        self._dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds))

    @property
    def threads_held(self) -> int:
        """The most callers (each on a worker thread of its own) this hasher holds at once:
        the ones hashing plus the ones waiting."""
        return self.slots + self.max_waiting

    @property
    def waiting(self) -> int:
        """Callers waiting for a hash slot right now."""
        return len(self._queue)

    @property
    def busy(self) -> int:
        """Hash slots taken right now."""
        return self.slots - self._free

    def check_capacity(self) -> None:
        """Refuse early, before any database work, when a hash would be refused anyway: every
        slot taken and the queue full. A cheap unlocked look: the authoritative check is made
        when the hash asks for a slot.

        Raises:
            OverloadedError: SERVER_BUSY.
        """
        if self._free <= 0 and len(self._queue) >= self.max_waiting:
            with self._changed:
                self._refused = True
                self.shed += 1
            raise _busy()

    def wait_for_waiting(self, count: int, timeout: float) -> bool:
        """Block until exactly `count` callers wait for a slot; False on timeout. For tests and
        diagnostics: it lets a caller observe the queue without sleeping."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._queue) == count, timeout)

    @property
    def dummy_hash(self) -> bytes:
        """The hash that passwords for unknown emails are checked against."""
        return self._dummy

    def hash(self, password: str, call: WaitingCall | None = None, *, wait: bool = True) -> str:
        """Hash `password` once a slot is free, waiting at most as long as `call` does.

        Args:
            call: the call the hash is for; None waits without a deadline.
            wait: False takes a slot only if one is free now and nobody waits for one.

        Raises:
            OverloadedError: SERVER_BUSY, when the queue is full (or, with wait=False, any
                caller would have to wait), or `call` ended while it waited.
        """
        return self._run(call, wait, "bcrypt hash", self._hash, password.encode()).decode()

    def verify(
        self, password: str, password_hash: str | None, call: WaitingCall | None = None
    ) -> bool:
        """Check `password`; with no hash (unknown user) spend the same time and return False.

        Raises:
            OverloadedError: SERVER_BUSY, when the queue is full or `call` ended while waiting.
        """
        candidate = password_hash.encode() if password_hash else self._dummy
        ok = self._run(call, True, "bcrypt verify", self._check, password.encode(), candidate)
        # "" is an account without a password (federation/): nothing matches it.
        return ok and bool(password_hash)

    def close(self) -> None:
        """End the hashing threads once the hashes in progress are done."""
        self._niced.shutdown(wait=True)
        self._fair.shutdown(wait=True)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash was made at another cost than the configured one."""
        parts = password_hash.split("$")
        return len(parts) < 3 or parts[2] != f"{self.rounds:02d}"

    def _run(
        self,
        call: WaitingCall | None,
        wait: bool,
        span_name: str,
        work: Callable[..., _T],
        *args: bytes,
    ) -> _T:
        """Run bcrypt `work` on a hashing thread once a slot is free (one thread per slot and
        priority, so with the slot a thread is free too); the caller waits with the GIL
        released. In a traced call the work gets a span of its own (`span_name`), a child of
        the call's: the hashing thread does not inherit the caller's context, so it is
        handed over."""
        with self._slot(call, wait):
            with self._changed:
                threads = self._fair if self._refused else self._niced
                self._refused = False
            parent = tracing.traced_context()
            if parent is None:
                return threads.submit(work, *args).result()
            # The cost only: never the password or the hash.
            attributes = {"luman.bcrypt.cost": self.rounds}
            return threads.submit(
                tracing.run_in_child_span, parent, span_name, attributes, work, *args
            ).result()

    def _hash(self, password: bytes) -> bytes:
        """The bcrypt work itself, run on a hashing thread while the caller holds a slot."""
        return bcrypt.hashpw(password, bcrypt.gensalt(self.rounds))

    def _check(self, password: bytes, password_hash: bytes) -> bool:
        """The bcrypt work itself, run on a hashing thread while the caller holds a slot."""
        return bcrypt.checkpw(password, password_hash)

    @contextlib.contextmanager
    def _slot(self, call: WaitingCall | None, wait: bool) -> Iterator[None]:
        with self._changed:
            if self._free > 0 and not self._queue:
                self._free -= 1
                waiter = None
            elif not wait:
                self.shed += 1
                raise _busy()
            elif len(self._queue) >= self.max_waiting:
                self._refused = True
                self.shed += 1
                raise _busy()
            else:
                waiter = _Waiter()
                self._queue.append(waiter)
                self._changed.notify_all()
        if waiter is not None:
            self._wait(waiter, call)
        try:
            yield
        finally:
            with self._changed:
                self._hand_on()

    def _wait(self, waiter: _Waiter, call: WaitingCall | None) -> None:
        """Wait in the queue until handed a slot; leave it when `call` ends first.

        Raises:
            OverloadedError: SERVER_BUSY, the call ended (or its deadline passed) first.
        """
        timeout = None
        if call is not None:
            # grpcio ends a call at its deadline and runs its callbacks, which wakes the waiter
            # then; the timeout is a backstop for a context that does not (the client's own
            # DEADLINE_EXCEEDED stays the answer it sees). grpcio reports ~9e18 s for a call
            # without a deadline.
            remaining = call.time_remaining()
            if remaining is not None and remaining < threading.TIMEOUT_MAX:
                timeout = remaining + DEADLINE_BACKSTOP_SECONDS
            if not call.add_callback(waiter.leave):
                waiter.leave()  # already over
        in_time = waiter.ready.wait(timeout)
        with self._changed:
            if waiter.granted and in_time and not waiter.gone:
                return
            if waiter.granted:
                self._hand_on()  # handed a slot too late: the next caller gets it
            else:
                with contextlib.suppress(ValueError):  # _hand_on may have dropped it already
                    self._queue.remove(waiter)
                self._changed.notify_all()
            self.shed += 1
        raise OverloadedError(
            "SERVER_BUSY",
            "the call ended while waiting for the server to hash passwords",
            retry_after_seconds=RETRY_AFTER_SECONDS,
        )

    def _hand_on(self) -> None:
        """Give a freed slot to the oldest waiter whose call is still on; with none, free it.
        Called with `_changed` held."""
        while self._queue:
            waiter = self._queue.popleft()
            if waiter.gone:
                continue  # it wakes, finds itself neither queued nor granted, and leaves
            waiter.granted = True
            waiter.ready.set()
            self._changed.notify_all()
            return
        self._free += 1
        self._changed.notify_all()


def _lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority by `nice` (capped at the lowest)."""
    if nice <= 0 or sys.platform != "linux":
        return
    # On Linux PRIO_PROCESS with a thread id changes that thread alone (elsewhere: the process).
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(MAX_NICE, current + nice))
    except OSError as exc:  # a sandbox may forbid it; hashing still works, at normal priority
        logger.warning("cannot lower the priority of the bcrypt threads: %s", exc)


def _busy() -> OverloadedError:
    return OverloadedError(
        "SERVER_BUSY",
        "server is busy hashing passwords; retry shortly",
        retry_after_seconds=RETRY_AFTER_SECONDS,
    )
