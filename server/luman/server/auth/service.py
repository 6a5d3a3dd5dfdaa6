"""Auth rules: registration, sign-in, token rotation, CLI tokens and token verification.

bcrypt runs outside database transactions so that a slow hash never holds a connection
or, on SQLite, the write lock.

Token verification is on every authenticated call's path. A verified token is remembered for
TOKEN_CACHE_TTL (token_cache.py: never past the token's expiry, dropped at once when this
process revokes it; other replicas notice a revocation within the TTL), and the check that
fills the cache reads the login session or CLI token together with its user in one Core query
(token_checks.py), which the cache keeps for GetMe. A call with a cached token touches no
database at all. Whatever revokes a credential or changes a user calls `token_cache.forget()`
once its transaction has committed: the one way cached state is invalidated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import uuid

from luman.interceptors.errors import (
    FailedPreconditionError,
    OverloadedError,
    UnauthenticatedError,
)
from luman.interceptors.principal import Credential, Principal
from luman.server.auth import token_checks
from luman.server.auth.passwords import PasswordHasher, WaitingCall
from luman.server.auth.repository import AuthRepository
from luman.server.auth.token_cache import DEFAULT_MAX_ENTRIES, TokenCache, token_key
from luman.server.auth.token_checks import UserRecord
from luman.server.auth.tokens import (
    IssuedToken,
    TokenCodec,
    looks_like_cli_token,
    new_cli_token,
)
from luman.server.clock import Clock
from luman.server.db.models import CliToken, User
from luman.server.db.session import Sessions

# last_use_time is kept to the minute: writing it on every call would turn each
# authenticated read into a write.
LAST_USE_RESOLUTION = dt.timedelta(minutes=1)


@dataclasses.dataclass(frozen=True)
class TokenPair:
    access: IssuedToken
    refresh: IssuedToken


@dataclasses.dataclass(frozen=True)
class SignIn:
    user: User
    tokens: TokenPair


@dataclasses.dataclass(frozen=True)
class CliSignIn:
    user: User
    secret: str
    token: CliToken


def _invalid_credentials() -> UnauthenticatedError:
    # One answer for a wrong password and an unknown email.
    return UnauthenticatedError("INVALID_CREDENTIALS", "invalid email or password")


class AuthService:
    """Args (beyond the collaborators):
    token_cache_ttl: seconds a verified token is believed without a database check; 0 turns
        the verified-token cache off (TOKEN_CACHE_TTL).
    token_cache_max_entries: the most tokens (and users) remembered (TOKEN_CACHE_MAX_ENTRIES).
    """

    def __init__(
        self,
        sessions: Sessions,
        hasher: PasswordHasher,
        codec: TokenCodec,
        clock: Clock,
        *,
        token_cache_ttl: float = 0.0,
        token_cache_max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._codec = codec
        self._clock = clock
        self.token_cache = TokenCache(token_cache_ttl, clock, token_cache_max_entries)

    def register(
        self, email: str, password: str, name: str, call: WaitingCall | None = None
    ) -> SignIn:
        """`call` bounds how long the sign-in waits for a hash slot (passwords.py)."""
        password_hash = self._hasher.hash(password, call)
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = AuthRepository(session)
            user = repo.add_user(
                User(
                    id=uuid.uuid4(),
                    email=email,
                    name=name,
                    password_hash=password_hash,
                    create_time=now,
                )
            )
            tokens = self._start_login_session(repo, user.id, now)
        return SignIn(user, tokens)

    def login(self, email: str, password: str, call: WaitingCall | None = None) -> SignIn:
        user = self._check_credentials(email, password, call)
        now = self._clock()
        with self._sessions.write.begin() as session:
            tokens = self._start_login_session(AuthRepository(session), user.id, now)
        return SignIn(user, tokens)

    def refresh(self, refresh_token: str) -> TokenPair:
        claims = self._codec.verify("refresh", refresh_token)
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = AuthRepository(session)
            login = repo.login_session(claims.session_id)
            stored = repo.refresh_token(claims.jti)
            if (
                login is None
                or stored is None
                or stored.session_id != login.id
                or login.user_id != claims.user_id
            ):
                raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
            if login.revoke_time is not None:
                raise UnauthenticatedError("TOKEN_REVOKED", "refresh token has been revoked")
            reused = not repo.use_refresh_token(claims.jti, now)
            if reused:
                # Rotation: a used token coming back means it was copied. Revoke the whole
                # sign-in (commit happens when the block exits), then refuse.
                repo.revoke_login_session(login.id, now)
            else:
                tokens = self._issue_pair(repo, login.user_id, login.id, now)
        if reused:
            # Committed: the sign-in's access tokens fail on their very next call here.
            self.token_cache.forget(credential_id=claims.session_id)
            raise UnauthenticatedError(
                "REFRESH_TOKEN_REUSED",
                "refresh token was already used; the sign-in has been revoked",
            )
        return tokens

    def cli_login(
        self, email: str, password: str, token_name: str, call: WaitingCall | None = None
    ) -> CliSignIn:
        user = self._check_credentials(email, password, call)
        secret, token_hash = new_cli_token()
        now = self._clock()
        with self._sessions.write.begin() as session:
            token = AuthRepository(session).add_cli_token(
                CliToken(
                    id=uuid.uuid4(),
                    user_id=user.id,
                    name=token_name or "cli",
                    token_hash=token_hash,
                    create_time=now,
                )
            )
        return CliSignIn(user, secret, token)

    def cli_logout(self, principal: Principal) -> None:
        if principal.credential is not Credential.CLI_TOKEN:
            raise FailedPreconditionError(
                "NOT_A_CLI_TOKEN",
                "CliLogout revokes the CLI token on the call; this call used an access token",
            )
        with self._sessions.write.begin() as session:
            AuthRepository(session).revoke_cli_token(principal.credential_id, self._clock())
        # Committed: the token fails on its very next call here.
        self.token_cache.forget(credential_id=principal.credential_id)

    def get_me(self, principal: Principal) -> UserRecord:
        # The token check just read this user into the cache; the query is the fallback.
        user = self.token_cache.user(principal.user_id)
        if user is not None:
            return user
        with self._sessions.engine.connect() as conn:
            user = token_checks.user_record(conn, principal.user_id)
        if user is None:
            raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
        return user

    def verify_token(self, token: str) -> Principal:
        """Turn a bearer token (access JWT or CLI token) into a Principal.

        Raises:
            UnauthenticatedError: the token is invalid, expired or revoked.
        """
        key = token_key(token)
        cached = self.token_cache.get(key)
        if cached is not None:
            principal = cached.principal
            if principal.credential is Credential.CLI_TOKEN:
                self._record_cli_use(key, principal.credential_id, cached.last_use_time)
            return principal
        generation = self.token_cache.generation()
        if looks_like_cli_token(token):
            return self._verify_cli_token(key, generation)
        claims = self._codec.verify("access", token)
        with self._sessions.engine.connect() as conn:
            check = token_checks.login_session_check(conn, claims.session_id)
        if check is None or check.user.id != claims.user_id:
            raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
        if check.revoke_time is not None:
            raise UnauthenticatedError("TOKEN_REVOKED", "token has been revoked")
        principal = Principal(claims.user_id, Credential.ACCESS_TOKEN, claims.session_id)
        self.token_cache.put(
            key, principal, check.user, expire_time=claims.expire_time, generation=generation
        )
        return principal

    def _verify_cli_token(self, key: bytes, generation: int) -> Principal:
        token_hash = key.hex()  # the stored form: SHA-256 hex of the secret
        with self._sessions.engine.connect() as conn:
            stored = token_checks.cli_token_check(conn, token_hash)
        # The lookup is by hash, so timing reveals nothing about the secret; compare anyway.
        if stored is None or not hmac.compare_digest(stored.token_hash, token_hash):
            raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
        if stored.revoke_time is not None:
            raise UnauthenticatedError("TOKEN_REVOKED", "token has been revoked")
        now = self._clock()
        last_use_time = stored.last_use_time
        if last_use_time is None or now - last_use_time >= LAST_USE_RESOLUTION:
            with self._sessions.write.begin() as session:
                AuthRepository(session).touch_cli_token(stored.id, now)
            last_use_time = now
        principal = Principal(stored.user.id, Credential.CLI_TOKEN, stored.id)
        self.token_cache.put(
            key,
            principal,
            stored.user,
            expire_time=None,
            generation=generation,
            last_use_time=last_use_time,
        )
        return principal

    def _record_cli_use(
        self, key: bytes, token_id: uuid.UUID, last_use_time: dt.datetime | None
    ) -> None:
        """A cached CLI token still records its last use to the minute, whatever the TTL."""
        now = self._clock()
        if last_use_time is not None and now - last_use_time < LAST_USE_RESOLUTION:
            return
        if self.token_cache.claim_use(key, now, LAST_USE_RESOLUTION):
            with self._sessions.write.begin() as session:
                AuthRepository(session).touch_cli_token(token_id, now)

    def _check_credentials(self, email: str, password: str, call: WaitingCall | None) -> User:
        # A sign-in the hasher would refuse is refused before it costs a query.
        self._hasher.check_capacity()
        with self._sessions.read.begin() as session:
            user = AuthRepository(session).user_by_email(email)
        password_hash = user.password_hash if user else None
        if not self._hasher.verify(password, password_hash, call) or user is None:
            raise _invalid_credentials()
        if self._hasher.needs_rehash(user.password_hash):
            try:
                # Only with a slot free now: a second turn in the queue would double the wait.
                new_hash = self._hasher.hash(password, wait=False)
            except OverloadedError:
                # The password checked out; rehashing can wait for a quieter sign-in.
                return user
            with self._sessions.write.begin() as session:
                stored = AuthRepository(session).user(user.id)
                if stored is not None:
                    stored.password_hash = new_hash
        return user

    def _start_login_session(
        self, repo: AuthRepository, user_id: uuid.UUID, now: dt.datetime
    ) -> TokenPair:
        login = repo.add_login_session(user_id, now)
        return self._issue_pair(repo, user_id, login.id, now)

    def _issue_pair(
        self, repo: AuthRepository, user_id: uuid.UUID, session_id: uuid.UUID, now: dt.datetime
    ) -> TokenPair:
        access = self._codec.issue("access", user_id, session_id)
        refresh = self._codec.issue("refresh", user_id, session_id)
        repo.add_refresh_token(refresh.jti, session_id, now, refresh.expire_time)
        return TokenPair(access, refresh)
