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
- An unknown token, an unknown address, a wrong code, a code whose account's address has
  changed since, a code spent by too many wrong tries: one answer, UNAUTHENTICATED
  EMAIL_CODE_INVALID, with the same message. Only whoever presents the right token or code
  learns that it expired (EMAIL_CODE_EXPIRED) or was used (EMAIL_CODE_USED).
- A wrong code counts against its message in a transaction of its own, which commits even
  though the call fails; the 5th wrong one spends the message.
- A token or code is used once: the transaction that uses it holds the account's row and then
  its own row locked (PostgreSQL; SQLite runs one write transaction at a time) and checks it is
  still unused, so two resets with one token at once give one success.

Lock order: the user's row, then the code's row, then sessions and tokens (as ChangePassword
and DeleteMe: auth/accounts.py). The wrong-try counter is one UPDATE of the code row alone.

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
# SendVerificationEmail: one message a minute per account.
RESEND_INTERVAL = dt.timedelta(minutes=1)
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
        "EMAIL_CODE_INVALID", "the link or code is not valid; check it, or ask for a new message"
    )


def _expired() -> FailedPreconditionError:
    return FailedPreconditionError(
        "EMAIL_CODE_EXPIRED", "the link or code has expired; ask for a new message"
    )


def _used() -> FailedPreconditionError:
    return FailedPreconditionError(
        "EMAIL_CODE_USED", "the link or code was already used; ask for a new message if needed"
    )


def issue(session: Session, user: User, purpose: str, now: dt.datetime, ttl: float) -> NewCode:
    """Make a new token and code for `user`'s current address, spending the older unused ones
    of `purpose`. The caller's transaction stores it."""
    session.execute(
        update(EmailCode)
        .where(
            EmailCode.user_id == user.id,
            EmailCode.purpose == purpose,
            EmailCode.use_time.is_(None),
        )
        .values(use_time=now)
        .execution_options(synchronize_session=False)
    )
    row_id = uuid.uuid4()
    token = secrets.token_urlsafe(32)
    code = new_user_code()
    expire_time = now + dt.timedelta(seconds=ttl)
    session.add(
        EmailCode(
            id=row_id,
            user_id=user.id,
            purpose=purpose,
            email=user.email,
            token_hash=hash_token(token),
            code_hash=hash_code(row_id, code),
            create_time=now,
            expire_time=expire_time,
            use_time=None,
            failed_attempts=0,
        )
    )
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
    user = AuthRepository(session).lock_user(found.user_id)
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
            ResourceExhaustedError: EMAIL_RECENTLY_SENT (RetryInfo: the seconds left).
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
            last_sent = _newest(
                session.scalar(
                    select(func.max(EmailCode.create_time)).where(
                        EmailCode.user_id == user.id, EmailCode.purpose == VERIFY_EMAIL
                    )
                ),
                session.scalar(
                    select(func.max(MailMessage.create_time)).where(
                        MailMessage.user_id == user.id, MailMessage.kind == VERIFY_EMAIL
                    )
                ),
            )
            if last_sent is not None and now - last_sent < RESEND_INTERVAL:
                wait = (last_sent + RESEND_INTERVAL - now).total_seconds()
                raise ResourceExhaustedError(
                    "EMAIL_RECENTLY_SENT",
                    "a verification message was sent less than a minute ago; "
                    "check your inbox, or try again shortly",
                    max(1.0, float(math.ceil(wait))),
                )
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
                again = invalid_code()  # a newer message superseded it meanwhile
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


def _newest(*times: dt.datetime | None) -> dt.datetime | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return "1 hour" if hours == 1 else f"{hours} hours"
    minutes = max(1, int(seconds // 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def _link(public_url: str, path: str, token: str, email: str) -> str:
    """The page's link: the token decides; the address is only shown on the page."""
    return f"{public_url.rstrip('/')}{path}?token={token}&email={quote(email, safe='@')}"


def make_verification_renderer(public_url: str, ttl: float) -> Renderer:
    """Renders "verify_email" messages (Register, SendVerificationEmail): to the account's
    address, while it is the one the message was queued for and not yet verified."""

    def render(session: Session, queued: Queued, now: dt.datetime) -> Mail | None:
        if queued.user_id is None:
            return None
        user = AuthRepository(session).user(queued.user_id)
        if user is None or user.email_verify_time is not None or user.email != queued.recipient:
            return None
        new = issue(session, user, VERIFY_EMAIL, now, ttl)
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
    account; anything else is dropped, unseen by the caller."""

    def render(session: Session, queued: Queued, now: dt.datetime) -> Mail | None:
        user = AuthRepository(session).user_by_email(queued.recipient)
        if user is None or user.email_verify_time is None:
            return None
        made = session.execute(
            select(func.count(), func.max(EmailCode.create_time)).where(
                EmailCode.user_id == user.id,
                EmailCode.purpose == PASSWORD_RESET,
                EmailCode.create_time > now - RESET_WINDOW,
            )
        ).one()
        count, newest = int(made[0]), made[1]
        # A retry of this very message made the newest code: it is no new request.
        too_soon = queued.attempts == 0 and newest is not None and now - newest < RESET_INTERVAL
        if count >= RESETS_PER_WINDOW or too_soon:
            return None
        new = issue(session, user, PASSWORD_RESET, now, ttl)
        # The owner sees in their audit log that someone asked.
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
