"""Verified-token cache: a bearer token that checked out a moment ago is not checked again.

For each recently verified token the cache keeps the Principal it proved, the user it belongs
to (read in the same query, so GetMe needs no query of its own) and the moment it must be
checked in full again: min(the token's expiry, the first check + TOKEN_CACHE_TTL). A hit costs
one SHA-256 and a dict lookup instead of a JWT verification and a database query: without it a
GetMe at 16 streams ran at 0.18 instead of 0.59 x bare (BENCHMARKS.md, "What the chain costs").

- Keyed by the SHA-256 of the token; the token itself is never kept.
- Never outlives the token: every hit compares the injected clock with the recheck time, so an
  expired access token is refused (TOKEN_EXPIRED, by the full check) exactly when it would be
  without the cache.
- One way in for every change that makes cached state wrong: `forget()`, by credential (a
  revoked CLI token or login session) or by user (a user changed or deleted). AuthService calls
  it once the change has committed; the call after that checks in full. A check that read the
  database before the change committed cannot put a stale entry back afterwards: `put()` is
  refused when anything was forgotten since that check began (the generation counter).
- Several processes (workers, replicas) on one database: `forget()` also publishes what it
  forgot on the invalidation channel (invalidations.py: PostgreSQL LISTEN/NOTIFY, or a shared
  file next to an SQLite database), and every other process applies it before it answers its
  next call: `get()` first applies whatever the channel holds that this process has not seen
  (`forgotten_elsewhere()`). While the channel is down, another process's revocation reaches
  this cache when the entry comes up for a recheck, within TOKEN_CACHE_TTL; when it is back,
  the cache is emptied (`forget_everything()`), since events may have been missed.
  TOKEN_CACHE_TTL=0 turns the cache off and checks every call against the database.
- Bounded: at most `max_entries` tokens; the least recently used goes first.
- Only successes are cached: an invalid token is checked in full every time (rate limiting
  bounds how often).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import threading
import uuid
from collections.abc import Callable

from luman.interceptors.principal import Principal
from luman.server.auth.token_checks import UserRecord
from luman.server.clock import Clock

DEFAULT_MAX_ENTRIES = 10_000


def token_key(token: str) -> bytes:
    """The cache key of a bearer token: its SHA-256."""
    return hashlib.sha256(token.encode()).digest()


@dataclasses.dataclass(frozen=True)
class CachedToken:
    principal: Principal
    # None for a service account's token: it has no user.
    user: UserRecord | None
    # CLI tokens only: the last use recorded in the database (kept to the minute), and the
    # client address recorded with it.
    last_use_time: dt.datetime | None
    last_use_ip: str | None = None


@dataclasses.dataclass(slots=True)
class _Entry:
    cached: CachedToken
    recheck_time: dt.datetime


# What forget() tells the invalidation channel: (credential_id, user_id), as forgotten.
Forgotten = Callable[[uuid.UUID | None, uuid.UUID | None], None]


def _nothing() -> None:
    return None


def _unannounced(_credential_id: uuid.UUID | None, _user_id: uuid.UUID | None) -> None:
    return None


class TokenCache:
    """Bounded, thread-safe LRU of verified tokens. A TTL of 0 disables it (every call misses).

    Args:
        ttl_seconds: how long a verified token is believed without a database check.
        clock: the service's clock; expiry and TTL are checked against it on every hit.
        max_entries: the most tokens kept.
    """

    def __init__(
        self, ttl_seconds: float, clock: Clock, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if ttl_seconds < 0 or max_entries < 1:
            raise ValueError("ttl_seconds must be >= 0 and max_entries >= 1")
        self._ttl = dt.timedelta(seconds=ttl_seconds)
        self._enabled = ttl_seconds > 0
        self._clock = clock
        self._max_entries = max_entries
        self._entries: collections.OrderedDict[bytes, _Entry] = collections.OrderedDict()
        # credential id (login session or CLI token) and user id -> keys of their tokens
        self._by_credential: dict[uuid.UUID, set[bytes]] = {}
        self._by_user: dict[uuid.UUID, set[bytes]] = {}
        # user id -> the entry of their most recent check (for user(): GetMe reads it on
        # every call, so it is one lookup, not a search of the user's tokens)
        self._latest_check: dict[uuid.UUID, _Entry] = {}
        self._generation = 0
        self._lock = threading.Lock()
        # Lookups answered from the cache, and not (expired or absent), since start; counted
        # under the lock get() takes anyway (the metrics read them).
        self.hits = self.misses = 0
        # The invalidation channel's hooks (link()); no channel: nothing to do.
        self._catch_up: Callable[[], None] = _nothing
        self._announce: Forgotten = _unannounced

    def link(self, *, catch_up: Callable[[], None], announce: Forgotten) -> None:
        """Connect the cache to the invalidation channel (invalidations.py): `catch_up` applies
        other processes' events and runs before every lookup; `announce` publishes what
        `forget()` forgot, after it dropped it here."""
        self._catch_up = catch_up
        self._announce = announce

    @property
    def enabled(self) -> bool:
        return self._enabled

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> CachedToken | None:
        """The cached verification of the token with this key, or None when it must be checked."""
        if not self._enabled:
            return None
        # Another process's revocation, committed before this call began, is applied before
        # an entry is believed (invalidations.py). +0.8 µs a lookup on PostgreSQL (a poll()),
        # +1.4 µs with SQLite (an fstat), against 0.8 µs for the lookup itself: measured in
        # invalidations.py.
        self._catch_up()
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            if now >= entry.recheck_time:
                self._remove(key)
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.cached

    def user(self, user_id: uuid.UUID) -> UserRecord | None:
        """The user as the latest check of one of their tokens read it, while that check is
        still believed (None: the caller must read the user itself)."""
        entry = self._latest_check.get(user_id)
        if entry is None or entry.cached.user is None or self._clock() >= entry.recheck_time:
            return None
        return entry.cached.user

    def generation(self) -> int:
        """Take this before reading the database; hand it to put() afterwards."""
        return self._generation

    def put(
        self,
        key: bytes,
        principal: Principal,
        user: UserRecord | None,
        *,
        expire_time: dt.datetime | None,
        generation: int,
        last_use_time: dt.datetime | None = None,
        last_use_ip: str | None = None,
    ) -> None:
        """Remember a successful verification that began at `generation`.

        Args:
            expire_time: the token's own expiry (None: the token does not expire).
        """
        if not self.enabled:
            return
        now = self._clock()
        recheck_time = now + self._ttl
        if expire_time is not None and expire_time < recheck_time:
            recheck_time = expire_time
        if recheck_time <= now:
            return
        with self._lock:
            if generation != self._generation:
                # Something was forgotten while this check ran; what it read may predate it.
                return
            if key in self._entries:
                self._remove(key)
            entry = _Entry(CachedToken(principal, user, last_use_time, last_use_ip), recheck_time)
            self._entries[key] = entry
            self._latest_check[principal.subject_id] = entry
            self._by_credential.setdefault(principal.credential_id, set()).add(key)
            self._by_user.setdefault(principal.subject_id, set()).add(key)
            while len(self._entries) > self._max_entries:
                self._remove(next(iter(self._entries)))

    def forget(
        self, *, credential_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None
    ) -> None:
        """Drop every cached token of a login session, CLI token or service account, or of a
        user, here and (through the invalidation channel) in every other process. Call once
        the change (revocation, user update, deletion) has committed."""
        self.forgotten_elsewhere(credential_id=credential_id, user_id=user_id)
        self._announce(credential_id, user_id)

    def forgotten_elsewhere(
        self, *, credential_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None
    ) -> None:
        """Drop what another process forgot (its event, from the invalidation channel): as
        `forget()`, without announcing it again."""
        with self._lock:
            self._generation += 1
            keys = set()
            if credential_id is not None:
                keys |= self._by_credential.get(credential_id, set())
            if user_id is not None:
                keys |= self._by_user.get(user_id, set())
            for key in keys:
                self._remove(key)

    def forget_everything(self) -> None:
        """Drop every entry: the invalidation channel came back after an outage, and events
        sent meanwhile may have been missed."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._by_credential.clear()
            self._by_user.clear()
            self._latest_check.clear()

    def claim_use(
        self, key: bytes, now: dt.datetime, resolution: dt.timedelta, ip: str | None = None
    ) -> bool:
        """True for the one caller that should record a CLI token's use now (its last recorded
        use is at least `resolution` old); the entry then holds `now` and `ip` as the last use.
        The address rides along with the time, so recording it costs no write of its own."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            last_use_time = entry.cached.last_use_time
            if last_use_time is not None and now - last_use_time < resolution:
                return False
            entry.cached = dataclasses.replace(entry.cached, last_use_time=now, last_use_ip=ip)
            return True

    def _remove(self, key: bytes) -> None:
        """Holding the lock: drop `key` and its index entries."""
        entry = self._entries.pop(key)
        principal = entry.cached.principal
        if self._latest_check.get(principal.subject_id) is entry:
            del self._latest_check[principal.subject_id]
        for index, owner in (
            (self._by_credential, principal.credential_id),
            (self._by_user, principal.subject_id),
        ):
            keys = index.get(owner)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[owner]
