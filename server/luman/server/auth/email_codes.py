"""Email verification and password reset: the link tokens and codes of their messages, and
the RPCs that send and redeem them (SendVerificationEmail, VerifyEmail, RequestPasswordReset,
ResetPassword).

A message carries a link (PUBLIC_URL/email/verify?token=… or /password/reset?token=…) and a
code ("XXXX-XXXX", 8 letters of the device login's alphabet) to type instead. Both are made
when the mail worker renders the message (the renderers below, run by mail/worker.py in a
write transaction that commits before the message is sent), never while an RPC waits, and
only their hashes are stored (email_codes): the token as SHA-256, the code as SHA-256 of
"<row id>:<code>" (the row id keeps equal codes of two messages apart). Rendering a message
spends the older unused ones of its purpose for the account, so only the newest works.

Redeeming:
- An unknown token, an unknown address, a wrong code (a code is compared with the newest
  message of the address only), a code whose account's address has changed since, a message
  spent by too many wrong tries: one answer, UNAUTHENTICATED EMAIL_CODE_INVALID, with the same
  message. Only whoever presents the right token or code learns that it expired
  (EMAIL_CODE_EXPIRED) or was used (EMAIL_CODE_USED, which is also the answer to the link of a
  message a newer one replaced: its message says to use the newest message).
- A wrong code counts against its message in a transaction of its own, which commits even
  though the call fails; the 5th wrong one spends the message.
- A token or code is used once: the transaction that uses it holds the account's row and then
  its own row locked (PostgreSQL; SQLite runs one write transaction at a time) and checks it is
  still unused, so two resets with one token at once give one success.

Lock order (PostgreSQL), the same in every transaction that touches email_codes: the user's
row first, then email_codes rows, then sessions and tokens.
- VerifyEmail and ResetPassword (_check): the user FOR NO KEY UPDATE (they change
  email_verify_time or password_hash, no key), then the code's row FOR UPDATE. The code row's
  lock is what makes a code usable once; the user's orders them against everything else that
  locks the user (two resets of one user, ChangePassword, a sign-in, LogoutAll).
- The renderers (a message being sent): the user FOR NO KEY UPDATE before anything else, then
  issue() spends the older codes (UPDATE) and inserts the new one (its foreign-key check takes
  FOR KEY SHARE on the user's row, which this transaction holds already). Read unlocked, the
  renderer would hold code rows while waiting for the user's row, which _check (user, then
  code) or DeleteMe (user, then its cascade into email_codes) may hold: a deadlock.
- DeleteMe (auth/accounts.py): the user, then the cascade into email_codes and mail_outbox.
- The wrong-try counter is one UPDATE of the code row alone, and its transaction takes no
  other lock afterwards.

RequestPasswordReset does the same work for every address: it queues a message and looks
nothing up. The renderer decides, when the message is sent, whether there is an account with
that verified address to send it to; so neither the answer nor its timing says whether an
account exists.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import math
import secrets
import uuid
from urllib.parse import quote

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from luman.interceptors.errors import (
    DomainError,
    FailedPreconditionError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from luman.interceptors.principal import Principal
from luman.server.audit.record import Event, record
from luman.server.auth.accounts import PasswordChange, revoke_credentials
from luman.server.auth.device_logins import (
    display_user_code,
    new_user_code,
    normalize_user_code,
)
from luman.server.auth.passwords import PasswordHasher, WaitingCall
from luman.server.auth.repository import AuthRepository
from luman.server.auth.token_cache import TokenCache
from luman.server.clock import Clock
from luman.server.db.models import EmailCode, MailMessage, User
from luman.server.db.session import Sessions
from luman.server.mail import outbox, templates
from luman.server.mail.message import Mail, Queued, Renderer
from luman.server.validation import normalize_email

VERIFY_EMAIL = "verify_email"
PASSWORD_RESET = "password_reset"  # noqa: S105 - a message kind, not a secret
VERIFY_PATH = "/email/verify"
RESET_PATH = "/password/reset"
MAX_FAILED_ATTEMPTS = 5
# Verification messages (Register, SendVerificationEmail): one a minute and 5 a day per
# account, so that an account holding someone else's address cannot flood it.
RESEND_INTERVAL = dt.timedelta(minutes=1)
VERIFICATION_WINDOW = dt.timedelta(hours=24)
VERIFICATIONS_PER_WINDOW = 5
# Password-reset messages actually sent to one account: one a minute, 3 an hour.
RESET_INTERVAL = dt.timedelta(minutes=1)
RESET_WINDOW = dt.timedelta(hours=1)
RESETS_PER_WINDOW = 3


@dataclasses.dataclass(frozen=True)
class Proof:
    """What a caller presents: the link's token, or the address and the code."""

    token: str = dataclasses.field(default="", repr=False)
    email: str = ""
    code: str = dataclasses.field(default="", repr=False)


@dataclasses.dataclass(frozen=True)
class NewCode:
    token: str = dataclasses.field(repr=False)
    code: str = dataclasses.field(repr=False)  # as shown, "BCDF-GHJK"
    expire_time: dt.datetime


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_code(row_id: uuid.UUID, code: str) -> str:
    """`code` in its stored form (normalize_user_code)."""
    return hashlib.sha256(f"{row_id}:{code}".encode()).hexdigest()


def invalid_code() -> UnauthenticatedError:
    # One answer for an unknown token or address, a wrong code, a spent one.
    return UnauthenticatedError(
        "EMAIL_CODE_INVALID",
        "the link or code is not valid; check it, use the newest message, or ask for a new one",
    )


def _expired() -> FailedPreconditionError:
    return FailedPreconditionError(
        "EMAIL_CODE_EXPIRED", "the link or code has expired; ask for a new message"
    )


def _used() -> FailedPreconditionError:
    return FailedPreconditionError(
        "EMAIL_CODE_USED",
        "the link or code was already used, or a newer message replaced it; use the newest "
        "message, or ask for a new one",
    )


def issue(
    session: Session,
    user: User,
    purpose: str,
    now: dt.datetime,
    ttl: float,
    *,
    retry_since: dt.datetime | None = None,
) -> NewCode:
    """Make a new token and code for `user`'s current address, spending the older unused ones
    of `purpose`. The caller's transaction stores it, and holds the user's row locked.

    `retry_since`: the message is being sent again (its queue time). Its earlier attempt made
    the newest unused code since then (or a later message did, whose code this one spends
    anyway): that row gets the new token and code, so that one message stays one row, and the
    limits, which count rows, count messages rather than attempts.
    """
    reused: EmailCode | None = None
    if retry_since is not None:
        reused = session.scalars(
            select(EmailCode)
            .where(
                EmailCode.user_id == user.id,
                EmailCode.purpose == purpose,
                EmailCode.use_time.is_(None),
                EmailCode.create_time >= retry_since,
            )
            .order_by(EmailCode.create_time.desc(), EmailCode.id.desc())
            .limit(1)
            .with_for_update()
        ).first()
    spend = update(EmailCode).where(
        EmailCode.user_id == user.id,
        EmailCode.purpose == purpose,
        EmailCode.use_time.is_(None),
    )
    if reused is not None:
        spend = spend.where(EmailCode.id != reused.id)
    session.execute(spend.values(use_time=now).execution_options(synchronize_session=False))
    token = secrets.token_urlsafe(32)
    code = new_user_code()
    expire_time = now + dt.timedelta(seconds=ttl)
    row = reused or EmailCode(id=uuid.uuid4(), user_id=user.id, purpose=purpose, use_time=None)
    row.email = user.email
    row.token_hash = hash_token(token)
    row.code_hash = hash_code(row.id, code)
    row.create_time = now
    row.expire_time = expire_time
    row.failed_attempts = 0
    if reused is None:
        session.add(row)
    session.flush()
    return NewCode(token, display_user_code(code), expire_time)


@dataclasses.dataclass(frozen=True)
class _Checked:
    code: EmailCode
    user: User


def _candidate(session: Session, purpose: str, proof: Proof) -> EmailCode | None:
    if proof.token:
        return session.scalars(
            select(EmailCode).where(
                EmailCode.token_hash == hash_token(proof.token), EmailCode.purpose == purpose
            )
        ).one_or_none()
    user = AuthRepository(session).user_by_email(normalize_email(proof.email))
    if user is None:
        return None
    # Only the newest message of the purpose counts: older ones are spent, or about to be.
    return session.scalars(
        select(EmailCode)
        .where(EmailCode.user_id == user.id, EmailCode.purpose == purpose)
        .order_by(EmailCode.create_time.desc(), EmailCode.id.desc())
        .limit(1)
    ).first()


def _count_wrong_code(session: Session, row_id: uuid.UUID, now: dt.datetime) -> None:
    """One more wrong try; the MAX_FAILED_ATTEMPTS-th spends the message. One statement, so
    concurrent wrong tries all count."""
    session.execute(
        update(EmailCode)
        .where(EmailCode.id == row_id, EmailCode.use_time.is_(None))
        .values(
            failed_attempts=EmailCode.failed_attempts + 1,
            use_time=case((EmailCode.failed_attempts + 1 >= MAX_FAILED_ATTEMPTS, now), else_=None),
        )
        .execution_options(synchronize_session=False)
    )


def _check(
    session: Session, purpose: str, proof: Proof, now: dt.datetime
) -> _Checked | DomainError:
    """The usable code `proof` presents, with its user, both rows locked (in that order); or
    the error to raise once this transaction has committed (a wrong code is counted in it)."""
    found = _candidate(session, purpose, proof)
    if found is None:
        return invalid_code()
    if not proof.token:
        code = normalize_user_code(proof.code)
        right = code is not None and hmac.compare_digest(
            hash_code(found.id, code).encode(), found.code_hash.encode()
        )
        if not right:
            if found.email == normalize_email(proof.email):
                _count_wrong_code(session, found.id, now)
            return invalid_code()
    # FOR NO KEY UPDATE: this changes no key of the user; the code row's FOR UPDATE below is
    # what makes the code usable once.
    user = AuthRepository(session).lock_user(found.user_id, key_share=True)
    row = session.scalars(
        select(EmailCode)
        .where(EmailCode.id == found.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if user is None or row is None or user.email != row.email:
        return invalid_code()
    if row.failed_attempts >= MAX_FAILED_ATTEMPTS:
        return invalid_code()
    if row.use_time is not None:
        return _used()
    if row.expire_time <= now:
        return _expired()
    return _Checked(row, user)


class EmailCodes:
    """The four RPCs' rules. `token_cache` is AuthService's: a verification or reset forgets
    the user's cached tokens (and the user GetMe reads) once it has committed."""

    def __init__(
        self, sessions: Sessions, hasher: PasswordHasher, clock: Clock, token_cache: TokenCache
    ) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._clock = clock
        self._token_cache = token_cache

    def send_verification(self, principal: Principal) -> str:
        """Queue a new verification message to the caller's address; returns the address.

        Raises:
            FailedPreconditionError: EMAIL_ALREADY_VERIFIED.
            ResourceExhaustedError: EMAIL_RECENTLY_SENT (RetryInfo: the seconds left), one
                sent less than a minute ago or VERIFICATIONS_PER_WINDOW in the last 24 hours.
            UnauthenticatedError: TOKEN_INVALID (the account is gone).
        """
        now = self._clock()
        with self._sessions.write.begin() as session:
            # Locked: two calls at once queue one message, the other is told to wait.
            user = AuthRepository(session).lock_user(principal.user_id)
            if user is None:
                raise UnauthenticatedError("TOKEN_INVALID", "invalid token")
            if user.email_verify_time is not None:
                raise FailedPreconditionError(
                    "EMAIL_ALREADY_VERIFIED", f"{user.email} is already verified"
                )
            refusal = _verification_refusal(session, user.id, now)
            if refusal is not None:
                raise refusal
            outbox.enqueue(session, VERIFY_EMAIL, user.email, now, user_id=user.id)
            return user.email

    def verify(self, proof: Proof) -> User:
        """Mark the address verified; returns the user.

        Raises:
            UnauthenticatedError: EMAIL_CODE_INVALID.
            FailedPreconditionError: EMAIL_CODE_EXPIRED, EMAIL_CODE_USED.
        """
        now = self._clock()
        with self._sessions.write.begin() as session:
            checked = _check(session, VERIFY_EMAIL, proof, now)
            if isinstance(checked, _Checked):
                user = checked.user
                checked.code.use_time = now
                if user.email_verify_time is None:
                    user.email_verify_time = now
                record(
                    session,
                    Event(
                        "account.email_verified",
                        user_id=user.id,
                        target_type="user",
                        target_id=str(user.id),
                        details={"by": "link" if proof.token else "code"},
                    ),
                    now,
                )
                session.flush()
        if isinstance(checked, DomainError):
            raise checked  # after the commit: a wrong code counts
        # Committed: GetMe reads the user from the token cache.
        self._token_cache.forget(user_id=checked.user.id)
        return checked.user

    def request_reset(self, email: str) -> None:
        """Queue a reset message to `email` (normalised and valid): the same work whatever
        the address. The renderer sends it only to an account's verified address."""
        now = self._clock()
        with self._sessions.write.begin() as session:
            outbox.enqueue(session, PASSWORD_RESET, email, now)

    def reset(
        self,
        proof: Proof,
        new_password: str,
        revoke_cli_tokens: bool,
        call: WaitingCall | None = None,
    ) -> PasswordChange:
        """Set a new password; revoke every session and, with `revoke_cli_tokens`, every
        personal token.

        Raises:
            UnauthenticatedError: EMAIL_CODE_INVALID.
            FailedPreconditionError: EMAIL_CODE_EXPIRED, EMAIL_CODE_USED.
            OverloadedError: SERVER_BUSY.
        """
        # Refused before any query when a hash would be refused anyway (passwords.py).
        self._hasher.check_capacity()
        with self._sessions.write.begin() as session:
            checked = _check(session, PASSWORD_RESET, proof, self._clock())
            code_id = checked.code.id if isinstance(checked, _Checked) else None
        if isinstance(checked, DomainError):
            raise checked
        # bcrypt outside any transaction; the token is checked again below, locked.
        new_hash = self._hasher.hash(new_password, call)
        now = self._clock()
        with self._sessions.write.begin() as session:
            again = _check(session, PASSWORD_RESET, proof, now)
            if isinstance(again, _Checked) and again.code.id != code_id:
                again = _used()  # a newer message replaced it meanwhile
            revoked = PasswordChange(0, 0)
            if isinstance(again, _Checked):
                user = again.user
                again.code.use_time = now
                user.password_hash = new_hash
                revoked = revoke_credentials(session, user.id, now, cli_tokens=revoke_cli_tokens)
                record(
                    session,
                    Event(
                        "account.password_reset",
                        user_id=user.id,
                        target_type="user",
                        target_id=str(user.id),
                        details={
                            "by": "link" if proof.token else "code",
                            "revoked_sessions": revoked.revoked_sessions,
                            "revoked_cli_tokens": revoked.revoked_cli_tokens,
                        },
                    ),
                    now,
                )
        if isinstance(again, DomainError):
            raise again
        # Committed: every revoked credential fails on its next call here.
        self._token_cache.forget(user_id=again.user.id)
        return revoked


def _verification_refusal(
    session: Session, user_id: uuid.UUID, now: dt.datetime
) -> ResourceExhaustedError | None:
    """Why no verification message may be queued now, if one may not: one queued or sent less
    than RESEND_INTERVAL ago, or VERIFICATIONS_PER_WINDOW in the window.

    A message counts by its outbox row until the worker takes it, then by its code
    (email_codes; a retry reuses its message's row: issue()), so a message being sent, which
    has both, counts once. A code spent or used still counts: the mail went out."""
    since = now - VERIFICATION_WINDOW
    coded = session.scalars(
        select(EmailCode.create_time).where(
            EmailCode.user_id == user_id,
            EmailCode.purpose == VERIFY_EMAIL,
            EmailCode.create_time > since,
        )
    ).all()
    queued = session.execute(
        select(MailMessage.create_time, MailMessage.attempts, MailMessage.lease_until).where(
            MailMessage.user_id == user_id, MailMessage.kind == VERIFY_EMAIL
        )
    ).all()
    untaken = [
        row.create_time
        for row in queued
        if row.attempts == 0 and row.lease_until is None and row.create_time > since
    ]
    sent = sorted([*coded, *untaken])
    last = max([*coded, *(row.create_time for row in queued)], default=None)
    if len(sent) >= VERIFICATIONS_PER_WINDOW:
        # Allowed again once enough of them have left the window to be under the cap.
        free_at = sent[len(sent) - VERIFICATIONS_PER_WINDOW] + VERIFICATION_WINDOW
        if last is not None:
            free_at = max(free_at, last + RESEND_INTERVAL)
        return ResourceExhaustedError(
            "EMAIL_RECENTLY_SENT",
            f"{VERIFICATIONS_PER_WINDOW} verification messages were sent in the last 24 hours; "
            "check your inbox and spam folder",
            _seconds_until(free_at, now),
        )
    if last is not None and now - last < RESEND_INTERVAL:
        return ResourceExhaustedError(
            "EMAIL_RECENTLY_SENT",
            "a verification message was sent less than a minute ago: check your inbox",
            _seconds_until(last + RESEND_INTERVAL, now),
        )
    return None


def _seconds_until(when: dt.datetime, now: dt.datetime) -> float:
    return max(1.0, float(math.ceil((when - now).total_seconds())))


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return "1 hour" if hours == 1 else f"{hours} hours"
    minutes = max(1, int(seconds // 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def _retry_since(queued: Queued) -> dt.datetime | None:
    """For issue(): a message sent again reuses the code row its earlier attempt made."""
    return queued.create_time if queued.attempts > 0 else None


def _link(public_url: str, path: str, token: str, email: str) -> str:
    """The page's link: the token decides; the address is only shown on the page."""
    return f"{public_url.rstrip('/')}{path}?token={token}&email={quote(email, safe='@')}"


def make_verification_renderer(public_url: str, ttl: float) -> Renderer:
    """Renders "verify_email" messages (Register, SendVerificationEmail): to the account's
    address, while it is the one the message was queued for and not yet verified. The limits
    are SendVerificationEmail's (a retry here is no new message)."""

    def render(session: Session, queued: Queued, now: dt.datetime) -> Mail | None:
        if queued.user_id is None:
            return None
        # The user's row first, then email_codes (the module docstring's lock order).
        user = AuthRepository(session).lock_user(queued.user_id, key_share=True)
        if user is None or user.email_verify_time is not None or user.email != queued.recipient:
            return None
        new = issue(session, user, VERIFY_EMAIL, now, ttl, retry_since=_retry_since(queued))
        return templates.render(
            "verify_email",
            user.email,
            "Verify your email address for Luman",
            {
                "email": user.email,
                "name": user.name,
                "link": _link(public_url, VERIFY_PATH, new.token, user.email),
                "code": new.code,
                "expires_in": _duration(ttl),
            },
        )

    return render


def make_reset_renderer(public_url: str, ttl: float) -> Renderer:
    """Renders "password_reset" messages (RequestPasswordReset): only to an account whose
    address is this one and verified, at most one a minute and RESETS_PER_WINDOW an hour per
    account (checked on a message's first attempt: its retries are the same request); anything
    else is dropped, unseen by the caller."""

    def render(session: Session, queued: Queued, now: dt.datetime) -> Mail | None:
        repo = AuthRepository(session)
        found = repo.user_by_email(queued.recipient)
        if found is None:
            return None
        # The user's row first, then email_codes (the module docstring's lock order); read
        # again under the lock.
        user = repo.lock_user(found.id, key_share=True)
        if user is None or user.email != queued.recipient or user.email_verify_time is None:
            return None
        if queued.attempts == 0:
            # A new request. A retry (attempts > 0) is the same request sent again: it passed
            # these checks on its first attempt, and checking again would count it against
            # itself.
            made = session.execute(
                select(func.count(), func.max(EmailCode.create_time)).where(
                    EmailCode.user_id == user.id,
                    EmailCode.purpose == PASSWORD_RESET,
                    EmailCode.create_time > now - RESET_WINDOW,
                )
            ).one()
            count, newest = int(made[0]), made[1]
            too_soon = newest is not None and now - newest < RESET_INTERVAL
            if count >= RESETS_PER_WINDOW or too_soon:
                return None
        new = issue(session, user, PASSWORD_RESET, now, ttl, retry_since=_retry_since(queued))
        if queued.attempts == 0:
            # The owner sees in their audit log that someone asked (once per request).
            record(
                session,
                Event(
                    "account.password_reset_requested",
                    user_id=user.id,
                    target_type="user",
                    target_id=str(user.id),
                ),
                now,
            )
        return templates.render(
            "password_reset",
            user.email,
            "Reset your Luman password",
            {
                "email": user.email,
                "name": user.name,
                "link": _link(public_url, RESET_PATH, new.token, user.email),
                "code": new.code,
                "expires_in": _duration(ttl),
            },
        )

    return render
