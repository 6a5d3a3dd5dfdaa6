"""Recently verified users, so that GetMe needs no database round trip of its own.

The token check reads the user in the same query as the login session or CLI token and puts the
record here; GetMe then answers from it. A record cannot go stale: nothing in the API changes a
user's email or name or deletes a user, and the record holds no password hash (the only column a
login rewrites). Whatever starts changing users must call `forget()`.
"""

from __future__ import annotations

import collections
import threading
import uuid

from luman.server.auth.token_cache import DEFAULT_MAX_ENTRIES
from luman.server.auth.token_checks import UserRecord


class UserCache:
    """Bounded, thread-safe LRU of user records by id.

    Keyed by the id's integer: uuid.UUID hashes and compares in Python code, an int in C, and
    GetMe looks a user up on every call."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max_entries = max_entries
        self._users: collections.OrderedDict[int, UserRecord] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._users)

    def get(self, user_id: uuid.UUID) -> UserRecord | None:
        key = user_id.int
        with self._lock:
            user = self._users.get(key)
            if user is not None:
                self._users.move_to_end(key)
            return user

    def put(self, user: UserRecord) -> None:
        key = user.id.int
        with self._lock:
            self._users[key] = user
            self._users.move_to_end(key)
            while len(self._users) > self._max_entries:
                self._users.popitem(last=False)

    def forget(self, user_id: uuid.UUID) -> None:
        with self._lock:
            self._users.pop(user_id.int, None)
