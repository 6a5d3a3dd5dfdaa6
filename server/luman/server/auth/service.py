"""Auth rules: registration, sign-in, token rotation, CLI tokens and token verification.

bcrypt runs outside database transactions so that a slow hash never holds a connection
or, on SQLite, the write lock.

Token verification is on every authenticated call's path. A verified token is remembered for
TOKEN_CACHE_TTL (token_cache.py: never past the token's expiry, dropped at once when any
process revokes it, through the invalidation channel, invalidations.py), and the check that
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
from collections.abc import Callable

from sqlalchemy.orm import Session

from luman.client.token_format import is_legacy_token, verify_checksum
from luman.interceptors.call_context import optional_call
from luman.interceptors.client_address import Caller
from luman.interceptors.errors import (
    FailedPreconditionError,
    OverloadedError,
    UnauthenticatedError,
)
from luman.interceptors.principal import Credential, Principal
from luman.server.audit.record import Event, record
from luman.server.auth import email_codes, token_checks
from luman.server.auth.accounts import AccountService
from luman.server.auth.cli_token_repository import CliTokenRepository
from luman.server.auth.cli_tokens import DEFAULT_SCOPES, CliTokens, parse_scopes
from luman.server.auth.introspection import Introspector
from luman.server.auth.introspection_policy import IntrospectionPolicy
from luman.server.auth.passwords import PasswordHasher, WaitingCall
from luman.server.auth.repository import AuthRepository
from luman.server.auth.service_accounts import ServiceAccounts
from luman.server.auth.service_tokens import ServiceTokenCodec, looks_like_service_token
from luman.server.auth.sessions import SessionService
from luman.server.auth.token_cache import DEFAULT_MAX_ENTRIES, TokenCache, token_key
from luman.server.auth.token_checks import UserRecord
from luman.server.auth.tokens import (
    IssuedToken,
    TokenCodec,
    looks_like_cli_token,
)
from luman.server.clock import Clock
from luman.server.db.models import CliToken, LoginSession, RefreshToken, User
from luman.server.db.session import Sessions
from luman.server.mail import outbox

# last_use_time is kept to the minute: writing it on every call would turn each
# authenticated read into a write.
LAST_USE_RESOLUTION = dt.timedelta(minutes=1)
# A sign-in whose caller the server could not see (a call from inside the process).
NO_CALLER = Caller("", "")


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


def _client_ip() -> str | None:
    """The address of the call being served (None outside a call), for last_use_ip."""
    record = optional_call()
    # 45: the longest IPv6 text form, capped as the request log caps it.
    return None if record is None else record.caller.ip[:45]


def _invalid_credentials() -> UnauthenticatedError:
    # One answer for a wrong password and an unknown email.
    return UnauthenticatedError("INVALID_CREDENTIALS", "invalid email or password")


class AuthService:
    """Args (beyond the collaborators):
    token_cache_ttl: seconds a verified token is believed without a database check; 0 turns
        the verified-token cache off (TOKEN_CACHE_TTL).
    token_cache_max_entries: the most tokens (and users) remembered (TOKEN_CACHE_MAX_ENTRIES).
    max_token_lifetime: the longest a CLI token may live, in seconds; 0: no cap
        (MAX_TOKEN_LIFETIME).
    refresh_reuse_grace_seconds: how long a just-rotated refresh token gets the same new pair
        again instead of revoking its sign-in; 0 turns the grace off
        (REFRESH_REUSE_GRACE_SECONDS).
    defer_audit: records an audit event off the request path (audit/worker.py), for the
        failed sign-ins of existing accounts; None records none.
    password_login: False refuses Register, Login and CliLogin (PASSWORD_LOGIN=false):
        accounts sign in through identity providers only (federation/).
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
        max_token_lifetime: float = 0.0,
        refresh_reuse_grace_seconds: float = 0.0,
        introspection_organizations: frozenset[str] = frozenset(),
        defer_audit: Callable[[Event], None] | None = None,
        password_login: bool = True,
    ) -> None:
        self._sessions = sessions
        self._password_login = password_login
        self._defer_audit = defer_audit
        self._hasher = hasher
        self._codec = codec
        self._clock = clock
        self._refresh_grace = dt.timedelta(seconds=refresh_reuse_grace_seconds)
        self.token_cache = TokenCache(token_cache_ttl, clock, token_cache_max_entries)
        # ListSessions, RevokeSession, LogoutAll: they share this cache (auth/sessions.py).
        self.session_service = SessionService(sessions, clock, self.token_cache)
        # Personal (CLI) token management: CreateCliToken, ListCliTokens, Revoke*.
        self.cli_tokens = CliTokens(sessions, clock, self.token_cache, max_token_lifetime)
        # Service accounts (their management, secret exchange and tokens) and IntrospectToken.
        self.service_accounts = ServiceAccounts(
            sessions,
            clock,
            self.token_cache,
            ServiceTokenCodec(codec, clock),
            IntrospectionPolicy(introspection_organizations),
        )
        self.introspector = Introspector(sessions, codec, self.service_accounts, clock)
        # The caller's own account: UpdateMe, ChangePassword, DeleteMe (auth/accounts.py).
        self.accounts = AccountService(sessions, hasher, clock, self.token_cache)
        # Email verification and password reset (auth/email_codes.py).
        self.email_codes = email_codes.EmailCodes(sessions, hasher, clock, self.token_cache)

    def register(
        self,
        email: str,
        password: str,
        name: str,
        call: WaitingCall | None = None,
        caller: Caller = NO_CALLER,
    ) -> SignIn:
        """`call` bounds how long the sign-in waits for a hash slot (passwords.py); `caller`
        is recorded on the sign-in for ListSessions."""
        self._check_password_login()
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
            tokens = self._start_login_session(repo, user, now, caller)
            record(
                session,
                Event("account.registered", user.id, target_type="user", target_id=str(user.id)),
                now,
            )
            # The first verification message, queued with the account (auth/email_codes.py).
            outbox.enqueue(session, email_codes.VERIFY_EMAIL, user.email, now, user_id=user.id)
        return SignIn(user, tokens)

    def login(
        self,
        email: str,
        password: str,
        call: WaitingCall | None = None,
        caller: Caller = NO_CALLER,
    ) -> SignIn:
        self._check_password_login()
        checked, checked_hash = self._check_credentials(email, password, call)
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = AuthRepository(session)
            # The user as of this transaction, locked: `checked` was read before the password
            # check, and a LogoutAll committed since moved tokens_not_before; issuing from the
            # stale value gives a pair that is revoked from birth. The lock orders this
            # sign-in against a concurrent LogoutAll (auth/sessions.py).
            user = _still_checked(repo.lock_user(checked.id), checked_hash)
            tokens = self._start_login_session(repo, user, now, caller)
            record(session, _signed_in(user), now)
        return SignIn(user, tokens)

    def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token. Refreshes of one token are serialised by a lock on its row
        (PostgreSQL: SELECT … FOR UPDATE; SQLite: the write transaction's BEGIN IMMEDIATE), so
        exactly one rotates it and the others see it used.

        A used token presented again within REFRESH_REUSE_GRACE_SECONDS of its rotation, while
        the token it was exchanged for is still unused, gets that same pair again: two
        processes of one client refreshing at once both carry on. The pair is signed again
        from the jtis and issue time kept on the rows (tokens are never stored); HS256 and
        EdDSA sign identical claims identically, ES256 gives a different signature over the
        same claims, jti and expiry. Any other reuse means the token was copied: the whole
        sign-in is revoked.
        """
        claims = self._codec.verify("refresh", refresh_token)
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = AuthRepository(session)
            login = repo.login_session(claims.session_id)
            stored = repo.lock_refresh_token(claims.jti)
            if (
                login is None
                or stored is None
                or stored.session_id != login.id
                or login.user_id != claims.user_id
            ):
                raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
            user = repo.user(login.user_id)
            if user is None:
                raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
            if login.revoke_time is not None or _before_not_before(user, claims.issue_time):
                raise UnauthenticatedError("TOKEN_REVOKED", "refresh token has been revoked")
            if stored.use_time is None:
                tokens = self._rotate(repo, login, stored, user, now)
                reused = False
            else:
                graced = self._grace_pair(repo, login, stored, now)
                reused = graced is None
                if graced is None:
                    # Rotation: a used token coming back means it was copied. Revoke the whole
                    # sign-in (commit happens when the block exits), then refuse.
                    repo.revoke_login_session(login.id, now)
                else:
                    tokens = graced
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
        self._check_password_login()
        user, checked_hash = self._check_credentials(email, password, call)
        now = self._clock()
        # The CLI's own token: read and write, as long-lived as MAX_TOKEN_LIFETIME allows.
        secret, row = self.cli_tokens.new(
            user.id,
            token_name or "cli",
            DEFAULT_SCOPES,
            self.cli_tokens.default_expire_time(now),
            now,
        )
        with self._sessions.write.begin() as session:
            repo = AuthRepository(session)
            _still_checked(repo.lock_user(user.id), checked_hash)
            token = repo.add_cli_token(row)
            record(session, _signed_in(user, cli_token_id=str(token.id)), now)
        return CliSignIn(user, secret, token)

    def cli_logout(self, principal: Principal) -> None:
        if principal.credential is not Credential.CLI_TOKEN:
            raise FailedPreconditionError(
                "NOT_A_CLI_TOKEN",
                "CliLogout revokes the CLI token on the call; this call used an access token",
            )
        # Only the calling token: the tokens created with it outlive a sign-out (cli_tokens.py,
        # sign_out); RevokeCliToken is what takes a token's descendants with it.
        self.cli_tokens.sign_out(principal)

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

    def jwks(self) -> list[dict[str, str]]:
        """The public JWKs that verify access tokens (key_ring.py); empty with HS256."""
        return self._codec.published_keys()

    def verify_token(self, token: str) -> Principal:
        """Turn a bearer token (a user's access JWT, a CLI token or a service account's access
        JWT) into a Principal.

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
            return self._verify_cli_token(token, key, generation)
        try:
            claims = self._codec.verify("access", token)
        except UnauthenticatedError:
            # Not a user's access token: perhaps a service account's. Asked second, so that
            # users' tokens (the common case) pay nothing for telling the two apart: reading
            # the header costs a fifth of an EdDSA verification.
            if looks_like_service_token(token):
                return self.service_accounts.verify_token(token, key, generation)
            raise
        with self._sessions.engine.connect() as conn:
            check = token_checks.login_session_check(conn, claims.session_id)
        if check is None or check.user.id != claims.user_id:
            raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
        if check.revoke_time is not None or (
            check.tokens_not_before is not None and claims.issue_time < check.tokens_not_before
        ):
            # Its sign-in was revoked, or LogoutAll came after it was issued.
            raise UnauthenticatedError("TOKEN_REVOKED", "token has been revoked")
        principal = Principal(
            claims.user_id, Credential.ACCESS_TOKEN, claims.session_id, issue_time=claims.issue_time
        )
        self.token_cache.put(
            key, principal, check.user, expire_time=claims.believed_until, generation=generation
        )
        return principal

    def _verify_cli_token(self, token: str, key: bytes, generation: int) -> Principal:
        # A mistyped or made-up token (bad checksum, or neither format's shape) is refused
        # before any database work; only the legacy format, which has no checksum, is looked
        # up on its shape alone.
        if not (verify_checksum(token) or is_legacy_token(token)):
            raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
        token_hash = key.hex()  # the stored form: SHA-256 hex of the secret
        with self._sessions.engine.connect() as conn:
            stored = token_checks.cli_token_check(conn, token_hash)
        # The lookup is by hash, so timing reveals nothing about the secret; compare anyway.
        if stored is None or not hmac.compare_digest(stored.token_hash, token_hash):
            raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
        if stored.revoke_time is not None:
            raise UnauthenticatedError("TOKEN_REVOKED", "token has been revoked")
        now = self._clock()
        if stored.expire_time is not None and now >= stored.expire_time:
            raise UnauthenticatedError("TOKEN_EXPIRED", "token has expired")
        last_use_time, last_use_ip = stored.last_use_time, stored.last_use_ip
        if last_use_time is None or now - last_use_time >= LAST_USE_RESOLUTION:
            last_use_time, last_use_ip = now, _client_ip()
            with self._sessions.write.begin() as session:
                CliTokenRepository(session).touch(stored.id, now, last_use_ip)
        principal = Principal(
            stored.user.id, Credential.CLI_TOKEN, stored.id, parse_scopes(stored.scopes)
        )
        self.token_cache.put(
            key,
            principal,
            stored.user,
            # Never believed past its expiry: the call after it gets the full check.
            expire_time=stored.expire_time,
            generation=generation,
            last_use_time=last_use_time,
            last_use_ip=last_use_ip,
        )
        return principal

    def _record_cli_use(
        self, key: bytes, token_id: uuid.UUID, last_use_time: dt.datetime | None
    ) -> None:
        """A cached CLI token still records its last use (time and client address) to the
        minute, whatever the TTL: at most one write a minute per token, not one per call."""
        now = self._clock()
        if last_use_time is not None and now - last_use_time < LAST_USE_RESOLUTION:
            return
        ip = _client_ip()
        if self.token_cache.claim_use(key, now, LAST_USE_RESOLUTION, ip):
            with self._sessions.write.begin() as session:
                CliTokenRepository(session).touch(token_id, now, ip)

    def _check_password_login(self) -> None:
        if not self._password_login:
            raise FailedPreconditionError(
                "PASSWORD_LOGIN_DISABLED",
                "this server does not accept passwords to sign in or register; sign in "
                "through an identity provider (ListIdentityProviders)",
            )

    def _check_credentials(
        self, email: str, password: str, call: WaitingCall | None
    ) -> tuple[User, str]:
        """The user whose password `password` is, and the stored hash it matched (a rehash's
        when this sign-in upgraded it): the sign-in's write checks it is still the stored one
        (_still_checked)."""
        # A sign-in the hasher would refuse is refused before it costs a query.
        self._hasher.check_capacity()
        with self._sessions.read.begin() as session:
            user = AuthRepository(session).user_by_email(email)
        password_hash = user.password_hash if user else None
        if not self._hasher.verify(password, password_hash, call) or user is None:
            if user is not None and self._defer_audit is not None:
                # Off the request path (audit/worker.py): writing it here would make a wrong
                # password for an existing email slower than for an unknown one.
                self._defer_audit(_sign_in_failed(user))
            raise _invalid_credentials()
        if self._hasher.needs_rehash(user.password_hash):
            try:
                # Only with a slot free now: a second turn in the queue would double the wait.
                new_hash = self._hasher.hash(password, wait=False)
            except OverloadedError:
                # The password checked out; rehashing can wait for a quieter sign-in.
                return user, user.password_hash
            with self._sessions.write.begin() as session:
                stored = AuthRepository(session).lock_user(user.id)
                # Only over the hash just checked: a ChangePassword committed meanwhile must
                # not get the old password back.
                if stored is not None and stored.password_hash == user.password_hash:
                    stored.password_hash = new_hash
                    return user, new_hash
        return user, user.password_hash

    def start_sign_in(
        self, session: Session, user: User, now: dt.datetime, caller: Caller = NO_CALLER
    ) -> TokenPair:
        """A new sign-in of `user` (locked by the caller) in `session`'s transaction, as Login
        makes one: for sign-ins proved otherwise than by password (federation/logins.py)."""
        return self._start_login_session(AuthRepository(session), user, now, caller)

    def _start_login_session(
        self, repo: AuthRepository, user: User, now: dt.datetime, caller: Caller
    ) -> TokenPair:
        issue_time = _issue_time(user, now)
        access_jti, refresh_jti = uuid.uuid4(), uuid.uuid4()
        session_id = uuid.uuid4()
        tokens = self._sign_pair(user.id, session_id, access_jti, refresh_jti, issue_time)
        repo.add_login_session(
            LoginSession(
                id=session_id,
                user_id=user.id,
                create_time=now,
                client_ip=caller.ip[:45],
                user_agent=caller.user_agent[:256],
                expire_time=tokens.refresh.expire_time,
            )
        )
        repo.add_refresh_token(refresh_jti, session_id, issue_time, tokens.refresh.expire_time)
        return tokens

    def _rotate(
        self,
        repo: AuthRepository,
        login: LoginSession,
        stored: RefreshToken,
        user: User,
        now: dt.datetime,
    ) -> TokenPair:
        issue_time = _issue_time(user, now)
        access_jti, refresh_jti = uuid.uuid4(), uuid.uuid4()
        tokens = self._sign_pair(login.user_id, login.id, access_jti, refresh_jti, issue_time)
        stored.use_time = now
        stored.successor_jti = refresh_jti
        stored.successor_access_jti = access_jti
        repo.add_refresh_token(refresh_jti, login.id, issue_time, tokens.refresh.expire_time)
        login.last_refresh_time = now
        login.expire_time = tokens.refresh.expire_time
        return tokens

    def _grace_pair(
        self, repo: AuthRepository, login: LoginSession, stored: RefreshToken, now: dt.datetime
    ) -> TokenPair | None:
        """The pair `stored` was exchanged for, signed again, if it may have it; else None."""
        if (
            stored.use_time is None
            or stored.successor_jti is None
            or stored.successor_access_jti is None
            or now - stored.use_time >= self._refresh_grace  # a zero grace: never
        ):
            return None
        successor = repo.refresh_token(stored.successor_jti)
        # Only the token just rotated: once its successor is used, it is two steps behind.
        if successor is None or successor.use_time is not None or successor.session_id != login.id:
            return None
        # The successor row's create_time is the pair's issue time (iat).
        return self._sign_pair(
            login.user_id,
            login.id,
            stored.successor_access_jti,
            successor.jti,
            successor.create_time,
        )

    def _sign_pair(
        self,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        access_jti: uuid.UUID,
        refresh_jti: uuid.UUID,
        issue_time: dt.datetime,
    ) -> TokenPair:
        access = self._codec.issue(
            "access", user_id, session_id, jti=access_jti, issue_time=issue_time
        )
        refresh = self._codec.issue(
            "refresh", user_id, session_id, jti=refresh_jti, issue_time=issue_time
        )
        return TokenPair(access, refresh)


def _signed_in(user: User, cli_token_id: str = "") -> Event:
    """auth.signed_in: Login (target: the account), CliLogin (target: its new token)."""
    if cli_token_id:
        return Event(
            "auth.signed_in",
            user.id,
            target_type="cli_token",
            target_id=cli_token_id,
            details={"via": "cli"},
        )
    return Event("auth.signed_in", user.id, target_type="user", target_id=str(user.id))


def _sign_in_failed(user: User) -> Event:
    # The actor is the call's: anonymous, as a sign-in carries no token.
    return Event("auth.sign_in_failed", user.id, target_type="user", target_id=str(user.id))


def _still_checked(user: User | None, checked_hash: str) -> User:
    """The locked user, if the password checked outside the transaction is still theirs: a
    ChangePassword (or DeleteMe) committed during the check, which can wait seconds for a hash
    slot, must not be followed by a sign-in with the old password.

    Raises:
        UnauthenticatedError: INVALID_CREDENTIALS, as for a wrong password.
    """
    if user is None or not hmac.compare_digest(user.password_hash, checked_hash):
        raise _invalid_credentials()
    return user


def _issue_time(user: User, now: dt.datetime) -> dt.datetime:
    """When a new pair counts as issued: now, or the user's not-before time if that is still
    ahead (LogoutAll earlier in this same second, auth/sessions.py). iat has whole seconds, so
    a token issued in the second of a LogoutAll must carry the next second to be told apart
    from the ones it revoked."""
    not_before = user.tokens_not_before
    return now if not_before is None or now >= not_before else not_before


def _before_not_before(user: User, issue_time: dt.datetime) -> bool:
    return user.tokens_not_before is not None and issue_time < user.tokens_not_before
