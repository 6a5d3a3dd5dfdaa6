"""Personal (CLI) tokens: issue, list, revoke, and the rules on their scopes and expiry.

A token's secret is shown once (CreateCliToken, CliLogin) and stored only as its SHA-256
(format: luman.client.token_format). Its scopes narrow what it may do; they never widen what
its owner may do, because the servicers check the user's own permissions on every call too,
and a token can only hand out scopes it carries itself.

Lineage: a token created with a personal token as the credential records it as its parent,
never outlives it (its expiry is capped at the parent's) and is revoked with it, along with
every token created from it in turn: revoking a leaked token kills what it minted. Tokens
created with a sign-in's access token, and CliLogin's, have no parent.

Revocations call `token_cache.forget()` once committed, so the very next call on this replica
fails, and on the others too (invalidations.py; within TOKEN_CACHE_TTL while that is down).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable

from luman.client import token_format
from luman.interceptors.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from luman.interceptors.principal import SERVICE_ONLY_SCOPES, Principal
from luman.server.audit.record import Event, record
from luman.server.auth.cli_token_repository import CliTokenRepository, PageKey
from luman.server.auth.credential_locks import (
    lock_calling_credential,
    lock_user_against_mints,
)
from luman.server.auth.token_cache import TokenCache
from luman.server.clock import Clock
from luman.server.db.models import CliToken
from luman.server.db.session import Sessions
from luman.server.methods import ALL_SCOPES

# What CliLogin issues, and CreateCliToken when no scopes are asked for.
DEFAULT_SCOPES = frozenset({"read", "write"})
# Without a configured cap, expiries still stay within a century: far enough for "never" in
# practice, near enough that every timestamp stays representable.
ABSOLUTE_MAX_LIFETIME = dt.timedelta(days=36500)


def hash_secret(secret: str) -> str:
    """The stored form of a token: the SHA-256 hex of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def format_scopes(scopes: Iterable[str]) -> str:
    """Scopes as stored: sorted, space-separated ("read write")."""
    return " ".join(sorted(set(scopes)))


def parse_scopes(stored: str) -> frozenset[str]:
    return frozenset(stored.split())


@dataclasses.dataclass(frozen=True)
class IssuedCliToken:
    secret: str = dataclasses.field(repr=False)
    token: CliToken


@dataclasses.dataclass(frozen=True)
class CliTokenPage:
    items: list[CliToken]
    next_key: PageKey | None


class CliTokens:
    """Args:
    max_lifetime: MAX_TOKEN_LIFETIME in seconds; 0 means no cap (tokens may never expire).
    """

    def __init__(
        self, sessions: Sessions, clock: Clock, token_cache: TokenCache, max_lifetime: float
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._token_cache = token_cache
        self._cap = dt.timedelta(seconds=max_lifetime) if max_lifetime > 0 else None

    def default_expire_time(self, now: dt.datetime) -> dt.datetime | None:
        """A token asked for without an expiry lives as long as the cap allows."""
        return None if self._cap is None else now + self._cap

    def new(
        self,
        user_id: uuid.UUID,
        name: str,
        scopes: frozenset[str],
        expire_time: dt.datetime | None,
        now: dt.datetime,
        parent_id: uuid.UUID | None = None,
    ) -> tuple[str, CliToken]:
        """A fresh secret and its row (not yet added to a session)."""
        secret = token_format.new_token()
        row = CliToken(
            id=uuid.uuid4(),
            user_id=user_id,
            name=name,
            token_hash=hash_secret(secret),
            create_time=now,
            scopes=format_scopes(scopes),
            expire_time=expire_time,
            hint=token_format.hint(secret),
            parent_id=parent_id,
        )
        return secret, row

    def create(
        self,
        principal: Principal,
        name: str,
        scopes: frozenset[str],
        expire_time: dt.datetime | None,
        ttl: dt.timedelta | None,
    ) -> IssuedCliToken:
        """Issue a token for the caller. `scopes` are known scope names (checked by the
        servicer); empty means DEFAULT_SCOPES.

        With a personal token as the credential, the new token is its child: it expires no
        later than the parent (at the parent's expiry when none is asked for).

        Raises:
            PermissionDeniedError: INSUFFICIENT_SCOPE, a scope the calling credential lacks.
            InvalidArgumentError: the expiry is in the past, beyond the cap, or later than the
                calling token's.
            UnauthenticatedError: TOKEN_REVOKED or TOKEN_EXPIRED, the calling token stopped
                working since its check (a revocation racing this call).
        """
        wanted = scopes or DEFAULT_SCOPES
        missing = sorted(scope for scope in wanted if not principal.has_scope(scope))
        if missing:
            # A token cannot mint a wider one: that would undo its own narrowing.
            raise PermissionDeniedError(
                "INSUFFICIENT_SCOPE",
                "a token cannot create a token with scopes it does not have itself",
                {"required_scope": " ".join(missing)},
            )
        now = self._clock()
        expires = self._expiry(now, expire_time, ttl)
        asked = "ttl" if ttl is not None else "expire_time" if expire_time is not None else None
        with self._sessions.write.begin() as session:
            # The caller as of now, locked (credential_locks.py): a credential revoked on
            # another replica, still in this one's cache, mints nothing. A personal token is
            # the new one's parent; a sign-in's access token is no parent.
            parent = lock_calling_credential(session, principal)
            parent_id = None if parent is None else parent.id
            if parent is not None:
                expires = _within_parent(now, expires, parent.expire_time, asked)
            secret, row = self.new(principal.user_id, name, wanted, expires, now, parent_id)
            session.add(row)
            session.flush()
            record(session, _token_event("token.created", row, name=name, scopes=row.scopes), now)
        return IssuedCliToken(secret, row)

    def list(self, principal: Principal, after: PageKey | None, page_size: int) -> CliTokenPage:
        with self._sessions.read.begin() as session:
            rows = CliTokenRepository(session).active_page(principal.user_id, after, page_size + 1)
        if len(rows) > page_size:
            rows = rows[:page_size]
            return CliTokenPage(rows, (rows[-1].create_time, rows[-1].id))
        return CliTokenPage(rows, None)

    def revoke(self, principal: Principal, token_id: uuid.UUID) -> None:
        """Revoke the token and its descendants.

        Raises:
            NotFoundError: TOKEN_NOT_FOUND, for an unknown token and someone else's alike.
            FailedPreconditionError: TOKEN_ALREADY_REVOKED.
        """
        now = self._clock()
        with self._sessions.write.begin() as session:
            # The user's row first, as mints and the other revocations take it
            # (credential_locks.py): one lock order, so no two of them can deadlock.
            lock_user_against_mints(session, principal.user_id)
            repo = CliTokenRepository(session)
            token = repo.owned(principal.user_id, token_id)
            if token is None:
                raise NotFoundError("TOKEN_NOT_FOUND", "token not found")
            if token.revoke_time is not None or not repo.revoke(token_id, now):
                raise FailedPreconditionError(
                    "TOKEN_ALREADY_REVOKED", "the token is already revoked"
                )
            descendants = repo.revoke_descendants(principal.user_id, token_id, now)
            record(
                session,
                _token_event("token.revoked", token, name=token.name, descendants=len(descendants)),
                now,
            )
        # Committed: the tokens fail on their very next call here, cached or not.
        self._forget(token_id, *descendants)

    def sign_out(self, principal: Principal) -> None:
        """CliLogout: revoke the calling personal token only. Idempotent, as two sign-outs
        racing each other both succeed.

        Its descendants stay: signing a machine out is not a revocation of a leaked token, and
        the tokens made with `luman token create` from that login (for CI, say) are made to
        outlive it, as npm's and GitHub's are. They still expire no later than it would have;
        RevokeCliToken is what takes a token's descendants with it."""
        now = self._clock()
        with self._sessions.write.begin() as session:
            if CliTokenRepository(session).revoke(principal.credential_id, now):
                event = Event(
                    "token.revoked",
                    principal.user_id,
                    target_type="cli_token",
                    target_id=str(principal.credential_id),
                    details={"via": "cli_logout"},
                )
                record(session, event, now)
        self._forget(principal.credential_id)

    def _forget(self, *token_ids: uuid.UUID) -> None:
        for token_id in token_ids:
            self._token_cache.forget(credential_id=token_id)

    def revoke_all(self, principal: Principal) -> int:
        now = self._clock()
        with self._sessions.write.begin() as session:
            # Ordered against CreateCliToken: a token minted meanwhile is revoked too.
            lock_user_against_mints(session, principal.user_id)
            count = CliTokenRepository(session).revoke_all(principal.user_id, now)
            event = Event(
                "token.revoked",
                principal.user_id,
                target_type="user",
                target_id=str(principal.user_id),
                details={"all": True, "count": count},
            )
            record(session, event, now)
        # By user: one call drops every cached token of theirs (access tokens are then simply
        # checked again once).
        self._token_cache.forget(user_id=principal.user_id)
        return count

    def _expiry(
        self, now: dt.datetime, expire_time: dt.datetime | None, ttl: dt.timedelta | None
    ) -> dt.datetime | None:
        field = "ttl" if ttl is not None else "expire_time"
        if ttl is not None:
            if ttl <= dt.timedelta(0):
                raise InvalidArgumentError.field("ttl", "must be positive")
            lifetime = ttl
        elif expire_time is not None:
            if expire_time <= now:
                raise InvalidArgumentError.field("expire_time", "must be in the future")
            lifetime = expire_time - now
        else:
            return self.default_expire_time(now)
        limit = self._cap if self._cap is not None else ABSOLUTE_MAX_LIFETIME
        if lifetime > limit:
            raise InvalidArgumentError.field(
                field,
                f"must be at most {_describe(limit)} from now"
                + (" (MAX_TOKEN_LIFETIME)" if self._cap is not None else ""),
            )
        return now + lifetime


def _token_event(action: str, token: CliToken, **details: str | int) -> Event:
    return Event(
        action, token.user_id, target_type="cli_token", target_id=str(token.id), details=details
    )


def _within_parent(
    now: dt.datetime,
    expires: dt.datetime | None,
    parent_expires: dt.datetime | None,
    asked: str | None,
) -> dt.datetime | None:
    """The child's expiry given its parent's: never later, so that a short-lived token cannot
    mint a longer-lived (or never-expiring) one. `asked` names the request field that set
    `expires`, None when the expiry is the server's default.

    Raises:
        UnauthenticatedError: TOKEN_EXPIRED, the parent expired since its check.
        InvalidArgumentError: the asked expiry is later than the parent's.
    """
    if parent_expires is None:
        return expires
    if parent_expires <= now:
        raise UnauthenticatedError("TOKEN_EXPIRED", "token has expired")
    if expires is not None and expires <= parent_expires:
        return expires
    if asked is None:
        return parent_expires
    raise InvalidArgumentError.field(
        asked,
        f"must not be later than {parent_expires:%Y-%m-%dT%H:%M:%SZ}, when the token making "
        "this call expires: a token cannot outlive the token that creates it",
    )


def _describe(lifetime: dt.timedelta) -> str:
    seconds = int(lifetime.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def known_scopes() -> frozenset[str]:
    """Every scope a personal token can carry: the luman.api.v1.Scope values but those only
    service accounts may have (introspect)."""
    return ALL_SCOPES - SERVICE_ONLY_SCOPES
