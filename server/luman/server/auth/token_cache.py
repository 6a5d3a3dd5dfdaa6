"""Verified-token cache: a bearer token that checked out a moment ago is not checked again.

For each recently verified token the cache keeps the Principal it proved and the moment it must
be checked in full again: min(the token's expiry, the first check + TOKEN_CACHE_TTL). A hit costs
one SHA-256 and a dict lookup instead of a JWT verification and a database query.

- Keyed by the SHA-256 of the token; the token itself is never kept.
- Never outlives the token: every hit compares the injected clock with the recheck time, so an
  expired access token is refused (TOKEN_EXPIRED, by the full check) exactly when it would be
  without the cache.
- Revocation in this process takes effect on the very next call: CliLogout and refresh-token
  reuse call `forget_credential()` once their transaction has committed, which drops every entry
  of that CLI token or login session. A check that read the database before the revocation
  committed cannot put a stale entry back afterwards: `put()` is refused when any revocation
  happened since that check began (the generation counter).
- Several replicas: a revocation made on one server process reaches the caches of the others
  only when their entries come up for a recheck, that is within TOKEN_CACHE_TTL. TOKEN_CACHE_TTL=0
  turns the cache off and checks every call against the database.
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

from luman.interceptors.principal import Principal
from luman.server.clock import Clock

DEFAULT_MAX_ENTRIES = 10_000


def token_key(token: str) -> bytes:
    """The cache key of a bearer token: its SHA-256."""
    return hashlib.sha256(token.encode()).digest()


@dataclasses.dataclass(frozen=True)
class CachedToken:
    principal: Principal
    # CLI tokens only: the last use recorded in the database (kept to the minute).
    last_use_time: dt.datetime | None


@dataclasses.dataclass(slots=True)
class _Entry:
    # What get() hands out, built once: a hit then allocates nothing.
    cached: CachedToken
    recheck_time: dt.datetime


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
        # credential id (login session or CLI token) -> keys of its cached tokens
        self._by_credential: dict[uuid.UUID, set[bytes]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._enabled

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> CachedToken | None:
        """The cached verification of the token with this key, or None when it must be checked."""
        if not self._enabled:
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now >= entry.recheck_time:
                self._remove(key, entry)
                return None
            self._entries.move_to_end(key)
            return entry.cached

    def generation(self) -> int:
        """Take this before reading the database; hand it to put() afterwards."""
        return self._generation

    def put(
        self,
        key: bytes,
        principal: Principal,
        *,
        expire_time: dt.datetime | None,
        generation: int,
        last_use_time: dt.datetime | None = None,
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
                # A revocation committed while this check ran; what it read may predate it.
                return
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._unindex(key, previous)
            self._entries[key] = _Entry(CachedToken(principal, last_use_time), recheck_time)
            self._by_credential.setdefault(principal.credential_id, set()).add(key)
            while len(self._entries) > self._max_entries:
                old_key, old_entry = self._entries.popitem(last=False)
                self._unindex(old_key, old_entry)

    def forget_credential(self, credential_id: uuid.UUID) -> None:
        """Drop every cached token of a login session or CLI token. Call after the revocation
        has committed."""
        with self._lock:
            self._generation += 1
            for key in self._by_credential.pop(credential_id, ()):
                self._entries.pop(key, None)

    def claim_use(self, key: bytes, now: dt.datetime, resolution: dt.timedelta) -> bool:
        """True for the one caller that should record a CLI token's use now (its last recorded
        use is at least `resolution` old); the entry then holds `now` as the last use."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            last_use_time = entry.cached.last_use_time
            if last_use_time is not None and now - last_use_time < resolution:
                return False
            entry.cached = CachedToken(entry.cached.principal, now)
            return True

    def _remove(self, key: bytes, entry: _Entry) -> None:
        del self._entries[key]
        self._unindex(key, entry)

    def _unindex(self, key: bytes, entry: _Entry) -> None:
        credential_id = entry.cached.principal.credential_id
        keys = self._by_credential.get(credential_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_credential[credential_id]
