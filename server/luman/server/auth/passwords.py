"""bcrypt hashing that is fair to the rest of the server.

bcrypt releases the GIL, so hashing in gRPC worker threads runs in parallel with other calls;
a semaphore caps concurrent hashes at the core count so that a burst of logins cannot occupy
every worker thread and starve cheap RPCs.
"""

from __future__ import annotations

import os
import threading

import bcrypt


class PasswordHasher:
    def __init__(self, rounds: int, max_concurrency: int | None = None) -> None:
        self.rounds = rounds
        self._slots = threading.BoundedSemaphore(max_concurrency or os.cpu_count() or 2)
        # A real hash at the configured cost: checking against it takes as long as checking a
        # real user's password, so an unknown email cannot be told apart by timing.
        self._dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds))

    @property
    def dummy_hash(self) -> bytes:
        """The hash that passwords for unknown emails are checked against."""
        return self._dummy

    def hash(self, password: str) -> str:
        with self._slots:
            return bcrypt.hashpw(password.encode(), bcrypt.gensalt(self.rounds)).decode()

    def verify(self, password: str, password_hash: str | None) -> bool:
        """Check `password`; with no hash (unknown user) spend the same time and return False."""
        candidate = password_hash.encode() if password_hash else self._dummy
        with self._slots:
            ok = bcrypt.checkpw(password.encode(), candidate)
        return ok and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash was made at another cost than the configured one."""
        parts = password_hash.split("$")
        return len(parts) < 3 or parts[2] != f"{self.rounds:02d}"
