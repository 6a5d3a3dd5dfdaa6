"""bcrypt hashing that is fair to the rest of the server.

bcrypt releases the GIL, so hashing (on the hasher's own threads, see below) runs in parallel
with other calls. Two bounds keep a burst of sign-ins from starving cheap RPCs:

- hash slots: at most one hash per core this process may run on (`os.sched_getaffinity`, so a
  container or `taskset` limit counts), because more parallel hashes than cores only queue;
- waiters: at most `max_waiting` callers (default twice the slots) may wait for a slot. A waiting
  caller holds a gRPC worker thread, so without this bound 16 concurrent logins would hold all 16
  workers while 2 of them hash, and GetMe would queue behind them. Beyond the bound a caller
  fails at once with RESOURCE_EXHAUSTED (reason SERVER_BUSY, RetryInfo 1 s) and frees its thread.

The hashes themselves run on the hasher's own threads, one per slot, at a lower CPU priority
(`nice`, BCRYPT_NICE). A hash is ~60 ms of pure CPU at cost 10; at equal priority the kernel
shares a busy core evenly between it and the threads serving cheap RPCs, which then wait out
its time slices (GetMe p99 rose from 8 ms to 13 ms while logins ran, BENCHMARKS.md). Niced, a
hash takes the CPU the other threads leave, and alone it runs at full speed. Linux only: there
a thread's nice value is its own; elsewhere hashes run at normal priority.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

from luman.interceptors.errors import OverloadedError

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
MAX_NICE = 19  # the lowest priority Linux knows
_T = TypeVar("_T")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), else the machine's core count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


class PasswordHasher:
    """Args:
    rounds: the bcrypt cost.
    max_concurrency: hash slots; default usable_cores().
    max_waiting: callers allowed to wait for a slot; default twice the slots.
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
        self.max_waiting = self.slots * 2 if max_waiting is None else max_waiting
        self.nice = nice
        # Threads start on first use and end with close() or when the hasher is collected.
        self._threads = ThreadPoolExecutor(
            self.slots, thread_name_prefix="bcrypt", initializer=_lower_priority, initargs=(nice,)
        )
        self._slots = threading.BoundedSemaphore(self.slots)
        self._waiting = 0
        self._hashing = 0
        self._changed = threading.Condition()
        # A real hash at the configured cost: checking against it takes as long as checking a
        # real user's password, so an unknown email cannot be told apart by timing.
        self._dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds))

    @property
    def waiting(self) -> int:
        """Callers waiting for a hash slot right now."""
        return self._waiting

    def check_capacity(self) -> None:
        """Refuse early, before any database work, when a hash would be refused anyway. A cheap
        unlocked look: the authoritative check is made when the hash asks for a slot.

        Raises:
            OverloadedError: SERVER_BUSY.
        """
        if self._hashing >= self.slots and self._waiting >= self.max_waiting:
            raise _busy()

    def wait_for_waiting(self, count: int, timeout: float) -> bool:
        """Block until exactly `count` callers wait for a slot; False on timeout. For tests and
        diagnostics: it lets a caller observe the queue without sleeping."""
        with self._changed:
            return self._changed.wait_for(lambda: self._waiting == count, timeout)

    @property
    def dummy_hash(self) -> bytes:
        """The hash that passwords for unknown emails are checked against."""
        return self._dummy

    def hash(self, password: str) -> str:
        """Raises: OverloadedError (SERVER_BUSY) when too many callers already wait."""
        return self._run(self._hash, password.encode()).decode()

    def verify(self, password: str, password_hash: str | None) -> bool:
        """Check `password`; with no hash (unknown user) spend the same time and return False.

        Raises:
            OverloadedError: SERVER_BUSY, when too many callers already wait for a slot.
        """
        candidate = password_hash.encode() if password_hash else self._dummy
        ok = self._run(self._check, password.encode(), candidate)
        return ok and password_hash is not None

    def close(self) -> None:
        """End the hashing threads once the hashes in progress are done."""
        self._threads.shutdown(wait=True)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash was made at another cost than the configured one."""
        parts = password_hash.split("$")
        return len(parts) < 3 or parts[2] != f"{self.rounds:02d}"

    def _run(self, work: Callable[..., _T], *args: bytes) -> _T:
        """Run bcrypt `work` on a hashing thread once a slot is free (one thread per slot, so
        with the slot a thread is free too); the caller waits with the GIL released.

        Raises:
            OverloadedError: SERVER_BUSY, when too many callers already wait.
        """
        with self._slot():
            return self._threads.submit(work, *args).result()

    def _hash(self, password: bytes) -> bytes:
        """The bcrypt work itself, run on a hashing thread while the caller holds a slot."""
        return bcrypt.hashpw(password, bcrypt.gensalt(self.rounds))

    def _check(self, password: bytes, password_hash: bytes) -> bool:
        """The bcrypt work itself, run on a hashing thread while the caller holds a slot."""
        return bcrypt.checkpw(password, password_hash)

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            with self._changed:
                if self._waiting >= self.max_waiting:
                    raise _busy()
                self._waiting += 1
                self._changed.notify_all()
            try:
                self._slots.acquire()
            finally:
                with self._changed:
                    self._waiting -= 1
                    self._changed.notify_all()
        with self._changed:
            self._hashing += 1
        try:
            yield
        finally:
            with self._changed:
                self._hashing -= 1
            self._slots.release()


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
