"""Device login (RFC 8628): a CLI starts a login, a signed-in person approves it, the CLI's poll
claims a personal token once.

    start (CLI)  -> pending -> approved -> claimed (the poll that returns the token)
                           \\-> denied
    any state past expire_time: expired

- The device code is the CLI's secret ("lmd_", the personal-token format), stored as its
  SHA-256; the user code is 8 letters of USER_CODE_ALPHABET, which RFC 8628 section 6.1
  suggests: 20 consonants, so no look-alikes (0/O, 1/I) and no words, 20**8 = 2.6e10 codes.
- Polls of one login are serialised by a lock on its row; a poll sooner than the interval
  after the previous one gets SLOW_DOWN and the interval grows by 5 seconds (section 3.5).
- The approval records the approving credential. The claim re-checks it under the same locks
  as any mint (credential_locks.py): a sign-in or token revoked, or an account deleted, between
  approval and claim, and the login ends with ACCESS_DENIED instead of a token.
- Guessing user codes: a wrong code counts against the caller's address, their account and
  the whole server (DEVICE_CODE_ATTEMPTS_*); once a budget is spent, code entry is refused
  until the window moves on, except that the server-wide budget stops only callers who have
  themselves entered a wrong code in the window (CodeAttempts). The whole default budget for a
  year, 200 per 15 minutes, is 7.0 million guesses against 20**8 = 2.6e10 codes: with 10
  logins pending at every moment it finds one about once in 365 years, and what it finds is a
  stranger's terminal approved into the guesser's own account (which that terminal then
  names). Once it is spent, each further address gets one guess per window. Every code that is
  not pending (never issued, expired, decided) gets the same NOT_FOUND, so an answer never
  tells whether a code exists. Without RATE_LIMIT_REDIS_URL each replica keeps its own
  budgets; with it, they share them, and like every limit they let calls through while Redis
  is away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import hmac
import secrets
import uuid
from collections.abc import Iterable, Iterator

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from luman.client import token_format
from luman.interceptors.call_context import optional_call
from luman.interceptors.client_address import limit_key
from luman.interceptors.errors import (
    DomainError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from luman.interceptors.principal import Credential, Principal
from luman.interceptors.rate_limit import Decision, RateLimiter
from luman.server.audit.record import Event, record
from luman.server.auth.cli_tokens import (
    CliTokens,
    format_scopes,
    hash_secret,
    known_scopes,
    parse_scopes,
)
from luman.server.auth.credential_locks import lock_calling_credential
from luman.server.clock import Clock
from luman.server.db.models import CliToken, DeviceLogin, User
from luman.server.db.session import Sessions

DEVICE_CODE_PREFIX = "lmd_"
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
# RFC 8628 section 3.5: "the interval MUST be increased by 5 seconds" at each slow_down.
SLOW_DOWN_STEP = 5
# Decided and expired logins are kept this long (an approver may still look at the page),
# then deleted by a later start.
KEEP_AFTER_EXPIRY = dt.timedelta(days=1)
TOKEN_NAME_SUFFIX = " (luman CLI)"  # noqa: S105 - a label, not a secret
MAX_TOKEN_NAME = 100


class State(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CLAIMED = "claimed"


def new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def normalize_user_code(value: str) -> str | None:
    """The stored form of a typed code ("bcdf-ghjk", "BCDF GHJK" -> "BCDFGHJK"); None when it
    cannot be a code."""
    code = "".join(value.split()).replace("-", "").upper()
    if len(code) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in code):
        return None
    return code


def display_user_code(code: str) -> str:
    """As shown to people: "BCDF-GHJK"."""
    return f"{code[:4]}-{code[4:]}"


def token_name(host_name: str) -> str:
    """The claimed token's name: "<host> (luman CLI)", within the 100 characters names get."""
    host = host_name[: MAX_TOKEN_NAME - len(TOKEN_NAME_SUFFIX)]
    return f"{host}{TOKEN_NAME_SUFFIX}" if host else TOKEN_NAME_SUFFIX.strip(" ()")


@dataclasses.dataclass(frozen=True)
class StartedLogin:
    device_code: str = dataclasses.field(repr=False)
    user_code: str  # as shown, "BCDF-GHJK"
    expires_in: int
    interval: int


@dataclasses.dataclass(frozen=True)
class ClaimedLogin:
    secret: str = dataclasses.field(repr=False)
    token: CliToken
    user: User


class CodeAttempts:
    """Budgets of wrong user codes: per client address, per account, and for the whole server.

    An entry is counted before its lookup and un-counted once the code proves right: checking
    first and counting after would let concurrent guesses all pass the check before any of
    them is counted, overdrawing the budget by as many as are in flight.

    The server-wide budget stops only callers who have entered a wrong code themselves in the
    window (from their address or account): once it is spent, a guesser gets one guess per
    address and window, while a person typing their first code still gets in. Otherwise a few
    addresses and fresh accounts could spend it every window and shut device login off for
    everybody.
    """

    def __init__(
        self,
        per_ip: RateLimiter | None,
        per_account: RateLimiter | None,
        overall: RateLimiter | None,
        ipv6_prefix: int = 64,
    ) -> None:
        self._per_ip = per_ip
        self._per_account = per_account
        self._overall = overall
        self._ipv6_prefix = ipv6_prefix

    @contextlib.contextmanager
    def entry(self, ip: str, user_id: uuid.UUID) -> Iterator[None]:
        """Count one code entry by `user_id` from `ip` for the block, which raises
        NotFoundError for a wrong code; any other outcome (a right code, or the lookup
        failing) un-counts it.

        Raises:
            ResourceExhaustedError: TOO_MANY_CODE_ATTEMPTS, a budget is spent (nothing counted).
        """
        taken: list[tuple[RateLimiter, str, Decision]] = []
        try:
            # No wrong code of this caller's in the window so far (known only when a per-caller
            # budget is kept; without one, the server-wide budget stops everybody).
            first = self._per_ip is not None or self._per_account is not None
            for limiter, key in self._callers(ip, user_id):
                decision = self._take(limiter, key, taken)
                first = first and decision.remaining == decision.limit - 1
            if self._overall is not None:
                decision = self._overall.hit("all")
                if decision.allowed:
                    taken.append((self._overall, "all", decision))
                elif not first:
                    raise _too_many(decision)
            yield
        except NotFoundError:
            raise  # a wrong code: it stays counted
        except BaseException:
            self._give_back(taken)
            raise
        else:
            self._give_back(taken)

    @staticmethod
    def _take(
        limiter: RateLimiter, key: str, taken: list[tuple[RateLimiter, str, Decision]]
    ) -> Decision:
        decision = limiter.hit(key)
        if not decision.allowed:
            raise _too_many(decision)
        taken.append((limiter, key, decision))
        return decision

    @staticmethod
    def _give_back(taken: Iterable[tuple[RateLimiter, str, Decision]]) -> None:
        for limiter, key, decision in taken:
            limiter.cancel(key, decision)

    def _callers(self, ip: str, user_id: uuid.UUID) -> Iterable[tuple[RateLimiter, str]]:
        if self._per_ip is not None:
            yield self._per_ip, "ip:" + limit_key(ip, self._ipv6_prefix)
        if self._per_account is not None:
            yield self._per_account, "user:" + user_id.hex


def _too_many(decision: Decision) -> ResourceExhaustedError:
    return ResourceExhaustedError(
        "TOO_MANY_CODE_ATTEMPTS",
        "too many wrong codes; try again later",
        max(1.0, decision.retry_after),
    )


def _client_ip() -> str:
    record = optional_call()
    return "" if record is None else record.caller.ip[:45]


def _not_found() -> NotFoundError:
    # One answer for a code never issued, expired, already decided or claimed.
    return NotFoundError(
        "DEVICE_CODE_NOT_FOUND", "no pending login has this code; check it, or start again"
    )


def _invalid_grant() -> UnauthenticatedError:
    return UnauthenticatedError("INVALID_GRANT", "unknown or already used device code")


class DeviceLogins:
    """Args:
    client_ids: DEVICE_CLIENT_IDS, the clients that may start a device login.
    lifetime: DEVICE_CODE_LIFETIME, in seconds.
    interval: DEVICE_POLL_INTERVAL, the first poll interval in seconds.
    verification_uri: the /device page's address; set_public_url() may set it later, once the
        HTTP gateway knows its port.
    """

    def __init__(
        self,
        sessions: Sessions,
        clock: Clock,
        cli_tokens: CliTokens,
        attempts: CodeAttempts,
        *,
        client_ids: Iterable[str],
        lifetime: float,
        interval: int,
        public_url: str = "http://localhost:8080",
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._cli_tokens = cli_tokens
        self._attempts = attempts
        self._client_ids = frozenset(client_ids)
        self._lifetime = dt.timedelta(seconds=lifetime)
        self._interval = interval
        self.verification_uri = ""
        self.set_public_url(public_url)

    def set_public_url(self, public_url: str) -> None:
        self.verification_uri = public_url.rstrip("/") + "/device"

    def complete_uri(self, user_code: str) -> str:
        return f"{self.verification_uri}?user_code={user_code}"

    # The client's side: start and poll.

    def check_client(self, client_id: str) -> None:
        """Raises:
        InvalidArgumentError: a field violation of client_id, a client not in
            DEVICE_CLIENT_IDS.
        """
        if client_id not in self._client_ids:
            raise InvalidArgumentError.field("client_id", "is not a client allowed to log in")

    def start(
        self,
        client_id: str,
        scopes: frozenset[str],
        host_name: str,
        client_version: str,
        os: str,
    ) -> StartedLogin:
        """Start a login for an allowed client (check_client); `scopes` are known scope names,
        empty for read and write."""
        self.check_client(client_id)
        now = self._clock()
        device_code = token_format.new_token(DEVICE_CODE_PREFIX)
        with self._sessions.write.begin() as session:
            # Bounded housekeeping: starts are rate limited, and each deletes what has aged out.
            session.execute(
                delete(DeviceLogin).where(DeviceLogin.expire_time < now - KEEP_AFTER_EXPIRY)
            )
            user_code = self._unused_user_code(session)
            session.add(
                DeviceLogin(
                    id=uuid.uuid4(),
                    device_code_hash=hash_secret(device_code),
                    user_code=user_code,
                    client_id=client_id,
                    scopes=format_scopes(scopes or {"read", "write"}),
                    host_name=host_name,
                    client_version=client_version,
                    os=os,
                    client_ip=_client_ip(),
                    create_time=now,
                    expire_time=now + self._lifetime,
                    interval=self._interval,
                    state=State.PENDING,
                )
            )
        return StartedLogin(
            device_code,
            display_user_code(user_code),
            int(self._lifetime.total_seconds()),
            self._interval,
        )

    def _unused_user_code(self, session: Session) -> str:
        # The table holds at most a day of logins: a collision is rare and retried. On SQLite
        # the write transaction is exclusive; on PostgreSQL a concurrent start drawing the same
        # code in the same instant fails on the unique index and its caller retries.
        for _ in range(10):
            code = new_user_code()
            taken = session.scalar(select(DeviceLogin.id).where(DeviceLogin.user_code == code))
            if taken is None:
                return code
        raise RuntimeError("no free user code after 10 draws")  # pragma: no cover - 2.6e10 codes

    def poll(self, device_code: str, client_id: str) -> ClaimedLogin:
        """The client's poll: the token once approved, else the RFC 8628 answer as an error.

        Raises:
            UnauthenticatedError: INVALID_GRANT (unknown, claimed, or another client's code).
            FailedPreconditionError: AUTHORIZATION_PENDING, EXPIRED_TOKEN.
            ResourceExhaustedError: SLOW_DOWN (metadata "interval": the new interval).
            PermissionDeniedError: ACCESS_DENIED.
        """
        if not token_format.verify_checksum(device_code, DEVICE_CODE_PREFIX):
            raise _invalid_grant()  # mistyped or not ours: no database work
        now = self._clock()
        answer: DomainError | None = None
        claimed: ClaimedLogin | None = None
        with self._sessions.write.begin() as session:
            login = session.scalars(
                select(DeviceLogin)
                .where(DeviceLogin.device_code_hash == hash_secret(device_code))
                .with_for_update()
            ).one_or_none()
            if (
                login is None
                or not hmac.compare_digest(login.client_id.encode(), client_id.encode())
                or login.state == State.CLAIMED
            ):
                raise _invalid_grant()
            # An approval made in the code's last seconds must still reach the client, whose
            # next poll comes up to an interval later: approved, it may be claimed for one
            # interval past the expiry.
            expires = login.expire_time
            if login.state == State.APPROVED:
                expires += dt.timedelta(seconds=login.interval)
            if now >= expires:
                raise FailedPreconditionError(
                    "EXPIRED_TOKEN", "the device code has expired; start the login again"
                )
            last = login.last_poll_time
            login.last_poll_time = now
            if last is not None and now - last < dt.timedelta(seconds=login.interval):
                login.interval += SLOW_DOWN_STEP
                answer = _slow_down(login.interval)
            elif login.state == State.PENDING:
                answer = FailedPreconditionError(
                    "AUTHORIZATION_PENDING",
                    "waiting for the login to be approved in the browser",
                    {"interval": str(login.interval)},
                )
            elif login.state == State.DENIED:
                answer = _access_denied("the login was denied")
            else:
                try:
                    claimed = self._claim(session, login, now)
                except UnauthenticatedError:
                    # The approving sign-in or token was revoked, or its account deleted,
                    # since the approval: nothing is issued, and the login is over.
                    login.state = State.DENIED
                    answer = _access_denied(
                        "the approval was withdrawn: the account or sign-in that approved it "
                        "no longer exists"
                    )
        # Committed (the new interval, a claim, a withdrawn approval): now answer.
        if answer is not None:
            raise answer
        assert claimed is not None
        return claimed

    def _claim(self, session: Session, login: DeviceLogin, now: dt.datetime) -> ClaimedLogin:
        """Issue the approved login's token, as a mint by the approving credential.

        Raises:
            UnauthenticatedError: the approving credential or its account is gone.
        """
        if (
            login.approver_id is None
            or login.approver_credential is None
            or login.approver_credential_id is None
        ):
            raise UnauthenticatedError("TOKEN_REVOKED", "the approving account was deleted")
        approver = Principal(
            subject_id=login.approver_id,
            credential=Credential(login.approver_credential),
            credential_id=login.approver_credential_id,
            issue_time=login.approver_issue_time,
        )
        parent = lock_calling_credential(session, approver)
        user = session.get(User, login.approver_id)
        if user is None:
            raise UnauthenticatedError("TOKEN_REVOKED", "the approving account was deleted")
        expires = self._cli_tokens.default_expire_time(now)
        parent_id = None
        if parent is not None:
            # Approved with a personal token: the new token is its child (CreateCliToken).
            parent_id = parent.id
            if parent.expire_time is not None:
                if parent.expire_time <= now:
                    raise UnauthenticatedError("TOKEN_EXPIRED", "token has expired")
                expires = (
                    parent.expire_time if expires is None else min(expires, parent.expire_time)
                )
        secret, token = self._cli_tokens.new(
            user.id,
            token_name(login.host_name),
            parse_scopes(login.approved_scopes or login.scopes),
            expires,
            now,
            parent_id,
        )
        session.add(token)
        session.flush()
        login.state = State.CLAIMED
        login.cli_token_id = token.id
        event = Event(
            "device_login.claimed",
            user.id,
            target_type="cli_token",
            target_id=str(token.id),
            details={"device_login": str(login.id), "name": token.name, "scopes": token.scopes},
        )
        record(session, event, now)
        return ClaimedLogin(secret, token, user)

    # The approver's side: look, approve, deny.

    def get(self, principal: Principal, user_code: str) -> DeviceLogin:
        """The pending login with this code, for its approver to look at.

        Raises:
            NotFoundError: DEVICE_CODE_NOT_FOUND, for any code that is not pending.
            ResourceExhaustedError: TOO_MANY_CODE_ATTEMPTS.
        """
        attempt = self._attempts.entry(_client_ip(), principal.user_id)
        with attempt, self._sessions.read.begin() as session:
            login = self._pending(session, user_code, lock=False)
            if login is None:
                raise _not_found()
            session.expunge(login)
        return login

    def approve(self, principal: Principal, user_code: str, scopes: frozenset[str]) -> None:
        """Approve the pending login with this code for the caller; `scopes` (known names)
        narrow what it asked for, empty for all of it.

        Raises:
            NotFoundError, ResourceExhaustedError: as get().
            InvalidArgumentError: a scope the login did not ask for.
            PermissionDeniedError: INSUFFICIENT_SCOPE, a scope the caller's credential lacks.
            UnauthenticatedError: TOKEN_REVOKED, the caller's credential was revoked meanwhile.
        """
        self._decide(principal, user_code, State.APPROVED, scopes)

    def deny(self, principal: Principal, user_code: str) -> None:
        """Raises: as get()."""
        self._decide(principal, user_code, State.DENIED, frozenset())

    def _decide(
        self, principal: Principal, user_code: str, state: State, scopes: frozenset[str]
    ) -> None:
        user_id = principal.user_id  # refuses a service account (USER_REQUIRED)
        now = self._clock()
        attempt = self._attempts.entry(_client_ip(), user_id)
        with attempt, self._sessions.write.begin() as session:
            login = self._pending(session, user_code, lock=True)
            if login is None:
                raise _not_found()
            granted = parse_scopes(login.scopes)
            if state is State.APPROVED:
                granted = _approved_scopes(principal, granted, scopes)
                # The approving credential as of now, locked like any mint's: one revoked on
                # another replica (still in this one's token cache) approves nothing.
                lock_calling_credential(session, principal)
            login.state = state
            login.approver_id = user_id
            login.approver_credential = principal.credential.value
            login.approver_credential_id = principal.credential_id
            login.approver_issue_time = principal.issue_time
            login.decide_time = now
            login.approved_scopes = format_scopes(granted) if state is State.APPROVED else None
            details = {"client_id": login.client_id, "host_name": login.host_name}
            if state is State.APPROVED:
                details["scopes"] = login.approved_scopes or ""
            event = Event(
                f"device_login.{'approved' if state is State.APPROVED else 'denied'}",
                user_id,
                target_type="device_login",
                target_id=str(login.id),
                details=details,
            )
            record(session, event, now)

    def _pending(self, session: Session, user_code: str, *, lock: bool) -> DeviceLogin | None:
        code = normalize_user_code(user_code)
        if code is None:
            return None
        query = select(DeviceLogin).where(
            DeviceLogin.user_code == code,
            DeviceLogin.state == State.PENDING,
            DeviceLogin.expire_time > self._clock(),
        )
        if lock:
            query = query.with_for_update()
        return session.scalars(query).one_or_none()


def _approved_scopes(
    principal: Principal, asked: frozenset[str], narrowed: frozenset[str]
) -> frozenset[str]:
    extra = sorted(narrowed - asked)
    if extra:
        raise InvalidArgumentError.field(
            "scopes", f"the login did not ask for {', '.join(map(repr, extra))}"
        )
    granted = narrowed or asked
    missing = sorted(scope for scope in granted if not principal.has_scope(scope))
    if missing:
        # As CreateCliToken: a credential cannot hand out scopes it does not have itself.
        raise PermissionDeniedError(
            "INSUFFICIENT_SCOPE",
            "a token cannot approve a login for scopes it does not have itself",
            {"required_scope": " ".join(missing)},
        )
    return granted


def _slow_down(interval: int) -> ResourceExhaustedError:
    error = ResourceExhaustedError(
        "SLOW_DOWN", f"polling too fast; poll every {interval} seconds", interval
    )
    error.metadata = {"interval": str(interval)}
    return error


def _access_denied(message: str) -> PermissionDeniedError:
    return PermissionDeniedError("ACCESS_DENIED", message)


def scopes_from_request(field: str, value: str | Iterable[str]) -> frozenset[str]:
    """Scope names from a space-separated string or a list, checked against the known ones.

    Raises:
        InvalidArgumentError: an unknown scope.
    """
    names = value.split() if isinstance(value, str) else list(value)
    known = known_scopes()
    unknown = sorted({name for name in names if name not in known})
    if unknown:
        raise InvalidArgumentError.field(
            field,
            f"unknown scope {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}",
        )
    return frozenset(names)
