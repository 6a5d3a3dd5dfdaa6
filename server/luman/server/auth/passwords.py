"""bcrypt hashing that is fair to the rest of the server.

bcrypt releases the GIL, so hashing in gRPC worker threads runs in parallel with other calls.
Two bounds keep a burst of sign-ins from starving cheap RPCs:

- hash slots: at most one hash per core this process may run on (`os.sched_getaffinity`, so a
  container or `taskset` limit counts), because more parallel hashes than cores only queue;
- waiters: at most `max_waiting` callers (default twice the slots) may wait for a slot. A waiting
  caller holds a gRPC worker thread, so without this bound 16 concurrent logins would hold all 16
  workers while 2 of them hash, and GetMe would queue behind them. Beyond the bound a caller
  fails at once with RESOURCE_EXHAUSTED (reason SERVER_BUSY, RetryInfo 1 s) and frees its thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import bcrypt

from luman.server.errors import ResourceExhaustedError

RETRY_AFTER_SECONDS = 1


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
    """

    def __init__(
        self, rounds: int, max_concurrency: int | None = None, max_waiting: int | None = None
    ) -> None:
        self.rounds = rounds
        self.slots = max_concurrency or usable_cores()
        self.max_waiting = self.slots * 2 if max_waiting is None else max_waiting
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
            ResourceExhaustedError: SERVER_BUSY.
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
        """Raises: ResourceExhaustedError (SERVER_BUSY) when too many callers already wait."""
        with self._slot():
            return self._hash(password.encode()).decode()

    def verify(self, password: str, password_hash: str | None) -> bool:
        """Check `password`; with no hash (unknown user) spend the same time and return False.

        Raises:
            ResourceExhaustedError: SERVER_BUSY, when too many callers already wait for a slot.
        """
        candidate = password_hash.encode() if password_hash else self._dummy
        with self._slot():
            ok = self._check(password.encode(), candidate)
        return ok and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash was made at another cost than the configured one."""
        parts = password_hash.split("$")
        return len(parts) < 3 or parts[2] != f"{self.rounds:02d}"

    def _hash(self, password: bytes) -> bytes:
        """The bcrypt work itself, run while holding a slot."""
        return bcrypt.hashpw(password, bcrypt.gensalt(self.rounds))

    def _check(self, password: bytes, password_hash: bytes) -> bool:
        """The bcrypt work itself, run while holding a slot."""
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


def _busy() -> ResourceExhaustedError:
    return ResourceExhaustedError(
        "SERVER_BUSY",
        "server is busy hashing passwords; retry shortly",
        retry_after_seconds=RETRY_AFTER_SECONDS,
    )
