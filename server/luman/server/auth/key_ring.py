"""The keys that sign and verify access tokens: stored in `signing_keys`, held in memory.

A key's state, against the injected clock:
- next: its activate_time is ahead. Published in the JWKS, not signing yet.
- active: the newest generation whose activate_time has passed. Signs new access tokens.
- verifying: superseded, before its retire_time. Verifies the tokens it signed; published.
- retired: from its retire_time on. Neither published nor trusted.

Replicas agree on the active key because it is a pure function of the table and the clock, and
the table can only grow one generation at a time (the unique `generation`): two processes that
create the first key, or rotate, at the same moment cannot both commit; the one that loses
re-reads and uses the winner's key.

Each process keeps the non-retired keys in memory (private halves decrypted once) and reloads
them every RELOAD_INTERVAL, and at once (at most every UNKNOWN_KID_RELOAD_INTERVAL, so that
tokens with made-up kids cannot turn into a query each) when a token names a kid it does not
know: a token signed by another replica right after a rotation verifies immediately.

A rotation is also announced on the invalidation channel (invalidations.py, the same one
that carries token revocations): every running server, whichever process rotated, marks its
keys stale and reloads them before it next signs, verifies or publishes, instead of within
RELOAD_INTERVAL. Without the channel (it is down) the reloads above still apply.

Rotation publishes first: by default the new key starts signing PUBLISH_AHEAD after
`luman-server keys rotate` (the JWKS max-age plus one reload interval), so a verifier that
cached the JWKS for its max-age already holds the new key when the first token signed with it
arrives. `--now` starts signing at once (a verifier with a cached JWKS then has to refetch on
the unknown kid, as RFC 7517 verifiers usually do).

The superseded key retires at: when it stopped signing (its successor's activate_time) + one
reload interval (a replica may sign with it that long before it reloads) + the access-token
lifetime + the clock skew tokens are allowed. Every token it can have signed has expired by
then. Each process works this out when it loads the keys, with its own JWT_EXPIRES_IN: the
lifetime that matters is the servers', not that of the shell that ran `keys rotate` (a shell on
the 15-minute default would otherwise retire the keys of servers on 12-hour tokens 11 hours
early). The table's retire_time is what the rotating process computed: informational only.
`keys list` shows the retirement computed with its own environment's JWT_EXPIRES_IN.

A rotation keeps the algorithm of the newest key unless told otherwise (`keys rotate
--algorithm`), for the same reason: a shell without JWT_ALGORITHM must not move an ES256
deployment to EdDSA. A server whose JWT_ALGORITHM differs from the newest key schedules a
rotation to its own at start.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from luman.server.auth.signing_keys import (
    ALGORITHMS,
    Algorithm,
    KeyCipher,
    PrivateKey,
    PublicKey,
    SigningKeyError,
    generate,
    public_key_of,
)
from luman.server.clock import Clock
from luman.server.config import Settings
from luman.server.db.models import SigningKey
from luman.server.db.session import Sessions

logger = logging.getLogger(__name__)

RELOAD_INTERVAL = dt.timedelta(seconds=60)
UNKNOWN_KID_RELOAD_INTERVAL = dt.timedelta(seconds=1)
# Cache-Control max-age of the JWKS (GetJwks and GET /.well-known/jwks.json).
JWKS_MAX_AGE_SECONDS = 300
PUBLISH_AHEAD = dt.timedelta(seconds=JWKS_MAX_AGE_SECONDS) + RELOAD_INTERVAL
# The leeway access-token verification gives `iat` (tokens.py).
CLOCK_SKEW = dt.timedelta(seconds=60)
# A concurrent start or rotation lost the race: re-read. More than a couple means trouble.
_ATTEMPTS = 3

KeyState = Literal["next", "active", "verifying", "retired"]


class RotationPendingError(SigningKeyError):
    """A rotation is already scheduled; `keys rotate --now` activates it."""


@dataclasses.dataclass(frozen=True)
class LoadedKey:
    kid: str
    generation: int
    algorithm: Algorithm
    public_jwk: dict[str, str]
    public_key: PublicKey
    private_key: PrivateKey | None  # None: listed only (keys list), never decrypted
    create_time: dt.datetime
    activate_time: dt.datetime
    # This process's: the successor's activate_time + its retire margin; None while newest.
    retire_time: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    keys: tuple[LoadedKey, ...]  # by generation
    by_kid: dict[str, LoadedKey]


def state_of(key: LoadedKey, keys: Sequence[LoadedKey], now: dt.datetime) -> KeyState:
    if key.activate_time > now:
        return "next"
    if key.retire_time is not None and now >= key.retire_time:
        return "retired"
    newest = max((k.generation for k in keys if k.activate_time <= now), default=None)
    return "active" if key.generation == newest else "verifying"


class KeyRing:
    """The signing keys of one process.

    Args:
        algorithm: what a new key uses (JWT_ALGORITHM).
        access_lifetime: JWT_EXPIRES_IN: how long a superseded key must keep verifying.
    """

    def __init__(
        self,
        sessions: Sessions,
        cipher: KeyCipher,
        algorithm: Algorithm,
        access_lifetime: dt.timedelta,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._cipher = cipher
        self._algorithm = algorithm
        self._retire_margin = RELOAD_INTERVAL + access_lifetime + CLOCK_SKEW
        self._clock = clock
        self._snapshot = _Snapshot((), {})
        self._load_time: dt.datetime | None = None
        self._unknown_kid_time: dt.datetime | None = None
        self._reload_lock = threading.Lock()
        # Set by the invalidation channel (link(), mark_stale()): another process rotated.
        self._stale = False
        self._catch_up: Callable[[], None] = _nothing
        self._rotated: Callable[[], None] = _nothing

    def link(self, *, catch_up: Callable[[], None], rotated: Callable[[], None]) -> None:
        """Connect the keys to the invalidation channel (invalidations.py): `catch_up` applies
        other processes' events before the keys are used; `rotated` announces a rotation made
        here, once committed."""
        self._catch_up = catch_up
        self._rotated = rotated

    def mark_stale(self) -> None:
        """Another process changed the keys: reload them before their next use."""
        self._stale = True

    @classmethod
    def from_settings(cls, settings: Settings, sessions: Sessions, clock: Clock) -> KeyRing:
        """Raises:
        SigningKeyError: JWT_ALGORITHM is HS256 (no signing keys) or the secret is empty.
        """
        algorithm = settings.jwt_algorithm
        if algorithm not in ALGORITHMS:
            raise SigningKeyError(
                f"JWT_ALGORITHM={algorithm} signs with JWT_SECRET: there are no signing keys"
            )
        return cls(
            sessions,
            KeyCipher(settings.signing_key_secret),
            algorithm,  # checked against ALGORITHMS above
            dt.timedelta(seconds=settings.jwt_expires_in),
            clock,
        )

    def start(self) -> None:
        """Make sure a key of the configured algorithm exists (creating the first one, or
        scheduling a rotation when JWT_ALGORITHM changed), then load the keys.

        Raises:
            SigningKeyError: SIGNING_KEY_SECRET does not decrypt the stored keys.
        """
        for attempt in range(_ATTEMPTS):
            try:
                with self._sessions.write.begin() as session:
                    rows = _rows(session)
                    latest = rows[-1] if rows else None
                    if latest is not None:
                        # A wrong secret fails here, at start, not on every call.
                        self._private_key(latest)
                        if latest.algorithm == self._algorithm:
                            break
                        logger.warning(
                            "JWT_ALGORITHM is %s, the newest signing key is %s: rotating",
                            self._algorithm,
                            latest.algorithm,
                        )
                    now = self._clock()
                    self._add(session, rows, now if latest is None else now + PUBLISH_AHEAD, now)
                break
            except IntegrityError:
                # Another process created the key first: read theirs.
                if attempt == _ATTEMPTS - 1:
                    raise
        self._load(strict=True)

    def signing_key(self) -> LoadedKey:
        """The active key (with its private half).

        Raises:
            SigningKeyError: no key is active (the table was emptied under a running server).
        """
        self._reload_if_due()
        snapshot, now = self._snapshot, self._clock()
        for key in reversed(snapshot.keys):
            if key.activate_time <= now and key.private_key is not None:
                return key
        raise SigningKeyError("no active signing key: run `luman-server keys rotate --now`")

    def verification_key(self, kid: str) -> LoadedKey | None:
        """The non-retired key named `kid`, or None. An unknown kid reloads the keys first,
        at most once per UNKNOWN_KID_RELOAD_INTERVAL."""
        self._reload_if_due()
        key = self._snapshot.by_kid.get(kid)
        if key is None:
            now = self._clock()
            last = self._unknown_kid_time
            if last is None or now - last >= UNKNOWN_KID_RELOAD_INTERVAL:
                self._unknown_kid_time = now
                self._reload()
                key = self._snapshot.by_kid.get(kid)
        if key is None or state_of(key, self._snapshot.keys, self._clock()) == "retired":
            return None
        return key

    def published(self) -> list[dict[str, str]]:
        """The public JWKs of every key that is next, active or verifying, newest first."""
        self._reload_if_due()
        snapshot, now = self._snapshot, self._clock()
        return [
            dict(key.public_jwk)
            for key in reversed(snapshot.keys)
            if state_of(key, snapshot.keys, now) != "retired"
        ]

    def reload(self) -> None:
        """Read the keys again now (after a rotation made by this process, and in tests)."""
        self._load(strict=False)

    def rotate(self, *, immediately: bool = False, algorithm: Algorithm | None = None) -> LoadedKey:
        """Create the next key, signing from now + PUBLISH_AHEAD (or now), of `algorithm`
        (default: the newest key's, or JWT_ALGORITHM for the first key). With `immediately`
        and a rotation already scheduled, that key starts signing now instead.

        Raises:
            RotationPendingError: a rotation is scheduled and `immediately` is false, or
                `algorithm` differs from the scheduled key's.
            SigningKeyError: the secret does not decrypt the current key, or another rotation
                committed at the same moment.
        """
        try:
            with self._sessions.write.begin() as session:
                rows = _rows(session)
                now = self._clock()
                latest = rows[-1] if rows else None
                if latest is not None:
                    self._private_key(latest)  # never mix keys under two secrets
                if latest is not None and latest.activate_time > now:
                    if not immediately:
                        raise RotationPendingError(
                            f"key {latest.kid} is already scheduled to start signing at "
                            f"{_iso(latest.activate_time)}; `keys rotate --now` starts it now"
                        )
                    if algorithm is not None and algorithm != latest.algorithm:
                        raise RotationPendingError(
                            f"key {latest.kid} ({latest.algorithm}) is already scheduled; "
                            "`keys rotate --now` starts it, then rotate again"
                        )
                    latest.activate_time = now
                    if len(rows) > 1:
                        rows[-2].retire_time = now + self._retire_margin  # informational
                    kid = latest.kid
                else:
                    kid = self._add(
                        session,
                        rows,
                        now if immediately else now + PUBLISH_AHEAD,
                        now,
                        algorithm or (_known(latest.algorithm) if latest is not None else None),
                    )
        except IntegrityError:
            raise SigningKeyError(
                "another rotation committed at the same moment: see `luman-server keys list`"
            ) from None
        self._load(strict=True)
        self._rotated()
        return self._snapshot.by_kid[kid]

    def all_keys(self) -> list[tuple[LoadedKey, KeyState]]:
        """Every key in the table, retired ones too, oldest first, with its state now."""
        with self._sessions.read.begin() as session:
            rows = _rows(session)
            keys = [
                self._loaded(row, retire, decrypt=False)
                for row, retire in zip(rows, self._retire_times(rows), strict=True)
            ]
        now = self._clock()
        return [(key, state_of(key, keys, now)) for key in keys]

    def _retire_times(self, rows: Sequence[SigningKey]) -> list[dt.datetime | None]:
        """Each key's retirement by this process's margin: its successor's activate_time +
        RELOAD_INTERVAL + JWT_EXPIRES_IN + CLOCK_SKEW (rows by generation)."""
        successors = [row.activate_time for row in rows[1:]]
        return [activate + self._retire_margin for activate in successors] + [None][: len(rows)]

    def _add(
        self,
        session: Session,
        rows: Sequence[SigningKey],
        activate: dt.datetime,
        now: dt.datetime,
        algorithm: Algorithm | None = None,
    ) -> str:
        new = generate(algorithm or self._algorithm)
        if rows:
            # Informational (`_retire_times` decides): what this process would retire it at.
            rows[-1].retire_time = activate + self._retire_margin
        session.add(
            SigningKey(
                kid=new.kid,
                generation=rows[-1].generation + 1 if rows else 1,
                algorithm=new.algorithm,
                public_jwk=json.dumps(new.public_jwk, separators=(",", ":")),
                private_key_encrypted=self._cipher.encrypt(new),
                create_time=now,
                activate_time=activate,
            )
        )
        session.flush()  # a lost race fails here, inside the transaction
        return new.kid

    def _reload_if_due(self) -> None:
        self._catch_up()
        if self._stale:
            # Another process rotated: every thread waits for the new keys, none goes on with
            # the old ones.
            with self._reload_lock:
                if self._stale:
                    self._stale = False
                    self._load(strict=False)
            return
        last = self._load_time
        if last is not None and self._clock() - last < RELOAD_INTERVAL:
            return
        # One thread reloads; the others go on with the keys they have.
        if self._reload_lock.acquire(blocking=False):
            try:
                self._load(strict=False)
            finally:
                self._reload_lock.release()

    def _reload(self) -> None:
        with self._reload_lock:
            self._load(strict=False)

    def _load(self, *, strict: bool) -> None:
        """Replace the in-memory keys with the table's non-retired ones.

        strict: raise (at start, after a rotation); otherwise log and keep the old keys, so a
        database outage or a bad row never stops verification with the keys already held.
        """
        now = self._clock()
        self._load_time = now
        try:
            with self._sessions.read.begin() as session:
                rows = _rows(session)
                keys = tuple(
                    self._loaded(row, retire, decrypt=True)
                    for row, retire in zip(rows, self._retire_times(rows), strict=True)
                    if retire is None or now < retire
                )
        except (SQLAlchemyError, SigningKeyError) as exc:
            if strict:
                raise
            logger.warning("signing keys not reloaded (%s): keeping the loaded ones", exc)
            return
        self._snapshot = _Snapshot(keys, {key.kid: key for key in keys})

    def _loaded(
        self, row: SigningKey, retire_time: dt.datetime | None, *, decrypt: bool
    ) -> LoadedKey:
        jwk: dict[str, Any] = json.loads(row.public_jwk)
        if row.algorithm not in ALGORITHMS:
            raise SigningKeyError(f"signing key {row.kid} has unknown algorithm {row.algorithm}")
        return LoadedKey(
            kid=row.kid,
            generation=row.generation,
            algorithm=row.algorithm,  # checked above
            public_jwk=jwk,
            public_key=public_key_of(jwk),
            private_key=self._private_key(row) if decrypt else None,
            create_time=row.create_time,
            activate_time=row.activate_time,
            retire_time=retire_time,
        )

    def _private_key(self, row: SigningKey) -> PrivateKey:
        return self._cipher.decrypt(row.kid, row.algorithm, row.private_key_encrypted)


def _nothing() -> None:
    return None


def _rows(session: Session) -> list[SigningKey]:
    return list(session.scalars(select(SigningKey).order_by(SigningKey.generation)))


def _known(algorithm: str) -> Algorithm:
    for known in ALGORITHMS:
        if algorithm == known:
            return known
    raise SigningKeyError(f"unknown signing key algorithm {algorithm}")


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")
