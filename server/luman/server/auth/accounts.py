"""The caller's own account: UpdateMe (its name), ChangePassword and DeleteMe.

Both password calls check the current password the way a sign-in does, outside any
transaction (bcrypt holds no connection and, on SQLite, no write lock): a hash slot from the
PasswordHasher, waiting at most as long as the call does. A wrong password is UNAUTHENTICATED
INVALID_CREDENTIALS, and both RPCs are in the sign-ins' rate-limit policy (the contract), so
guessing costs what guessing at Login costs.

Then one write transaction each, which starts by reading the user's row again, locked: the
password hash must still be the one just checked (a ChangePassword committed meanwhile makes
the checked password stale: INVALID_CREDENTIALS), and the calling credential must still stand
(credential_locks.py: a session or token revoked on another replica, still in this replica's
token cache, changes nothing).

Lock order (PostgreSQL; SQLite runs one write transaction at a time):
- ChangePassword takes the user's row first, then sessions and tokens, as LogoutAll and the
  mints do (credential_locks.py).
- DeleteMe takes the device logins the user approved first, then the user's row, then the
  organizations the user belongs to (by id), then deletes the user (which cascades to the
  memberships, sessions, refresh tokens and personal tokens, and sets the device logins'
  approver_id to NULL). See `AccountService.delete` for why.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from luman.interceptors.errors import (
    FailedPreconditionError,
    PreconditionViolation,
    UnauthenticatedError,
)
from luman.interceptors.principal import Credential, Principal
from luman.server.audit.record import Event, record
from luman.server.auth.credential_locks import lock_calling_credential
from luman.server.auth.passwords import PasswordHasher, WaitingCall
from luman.server.auth.repository import AuthRepository
from luman.server.auth.token_cache import TokenCache
from luman.server.clock import Clock
from luman.server.db.models import (
    CliToken,
    DeviceLogin,
    LoginSession,
    Membership,
    Organization,
    Role,
    User,
)
from luman.server.db.session import Sessions


@dataclasses.dataclass(frozen=True)
class PasswordChange:
    revoked_sessions: int
    revoked_cli_tokens: int


def revoke_credentials(
    session: Session,
    user_id: uuid.UUID,
    now: dt.datetime,
    *,
    cli_tokens: bool,
    keep_session: uuid.UUID | None = None,
    keep_token: uuid.UUID | None = None,
) -> PasswordChange:
    """Revoke the user's live sessions but `keep_session` and, with `cli_tokens`, its personal
    tokens but `keep_token` (ChangePassword, ResetPassword). The caller holds the user's row
    and calls `token_cache.forget(user_id=…)` once committed."""
    sessions_query = update(LoginSession).where(
        LoginSession.user_id == user_id,
        LoginSession.revoke_time.is_(None),
        LoginSession.expire_time > now,
    )
    if keep_session is not None:
        sessions_query = sessions_query.where(LoginSession.id != keep_session)
    revoked_sessions = int(
        session.execute(
            sessions_query.values(revoke_time=now).execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
    )
    revoked_tokens = 0
    if cli_tokens:
        tokens_query = update(CliToken).where(
            CliToken.user_id == user_id, CliToken.revoke_time.is_(None)
        )
        if keep_token is not None:
            tokens_query = tokens_query.where(CliToken.id != keep_token)
        revoked_tokens = int(
            session.execute(
                tokens_query.values(revoke_time=now).execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
        )
    return PasswordChange(revoked_sessions, revoked_tokens)


def _wrong_password() -> UnauthenticatedError:
    # The answer a sign-in with a wrong password gets (and the rate limiter counts).
    return UnauthenticatedError("INVALID_CREDENTIALS", "the password is wrong")


def _account_gone() -> UnauthenticatedError:
    return UnauthenticatedError("TOKEN_INVALID", "invalid token")


class AccountService:
    """UpdateMe, ChangePassword and DeleteMe. `token_cache` is AuthService's verified-token
    cache: each change forgets the user's cached tokens (and the user GetMe reads) once it has
    committed."""

    def __init__(
        self, sessions: Sessions, hasher: PasswordHasher, clock: Clock, token_cache: TokenCache
    ) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._clock = clock
        self._token_cache = token_cache

    def update(self, principal: Principal, name: str | None) -> User:
        """Change what is given (today only the name; None leaves it). Returns the user."""
        user_id = principal.user_id
        now = self._clock()
        with self._sessions.write.begin() as session:
            user = AuthRepository(session).lock_user(user_id)
            if user is None:  # deleted since the token check
                raise _account_gone()
            changed: list[str] = []
            if name is not None and name != user.name:
                user.name = name
                changed.append("name")
            if changed:
                record(
                    session,
                    Event(
                        "account.updated",
                        user_id=user_id,
                        target_type="user",
                        target_id=str(user_id),
                        details={"fields": ",".join(changed)},
                    ),
                    now,
                )
            session.flush()
        # Committed: GetMe reads the user from the token cache, which must not keep the old name.
        self._token_cache.forget(user_id=user_id)
        return user

    def change_password(
        self,
        principal: Principal,
        current_password: str,
        new_password: str,
        revoke_cli_tokens: bool,
        call: WaitingCall | None = None,
    ) -> PasswordChange:
        """Replace the password; revoke every other session (every session when the call
        uses a personal token) and, with `revoke_cli_tokens`, every personal token but the
        calling one.

        Raises:
            UnauthenticatedError: INVALID_CREDENTIALS (wrong current password), TOKEN_REVOKED
                (the calling credential was revoked since its check).
            OverloadedError: SERVER_BUSY.
        """
        user_id = principal.user_id
        checked_hash = self._check_password(user_id, current_password, call)
        new_hash = self._hasher.hash(new_password, call)
        now = self._clock()
        with self._sessions.write.begin() as session:
            user = self._lock_checked_user(session, principal, checked_hash)
            user.password_hash = new_hash
            calling = principal.credential_id
            revoked = revoke_credentials(
                session,
                user_id,
                now,
                cli_tokens=revoke_cli_tokens,
                keep_session=calling if principal.credential is Credential.ACCESS_TOKEN else None,
                keep_token=calling if principal.credential is Credential.CLI_TOKEN else None,
            )
            record(
                session,
                Event(
                    "account.password_changed",
                    user_id=user_id,
                    target_type="user",
                    target_id=str(user_id),
                    details={
                        "revoked_sessions": revoked.revoked_sessions,
                        "revoked_cli_tokens": revoked.revoked_cli_tokens,
                    },
                ),
                now,
            )
        # Committed: the revoked sessions' and tokens' cached entries go (the calling one is
        # simply checked again once).
        self._token_cache.forget(user_id=user_id)
        return revoked

    def delete(self, principal: Principal, password: str, call: WaitingCall | None = None) -> None:
        """Delete the caller's account.

        Raises:
            UnauthenticatedError: INVALID_CREDENTIALS (wrong password), TOKEN_REVOKED.
            FailedPreconditionError: LAST_OWNER, with the organizations' slugs in the metadata
                ("organizations", comma-separated) and one PreconditionFailure violation each.
            OverloadedError: SERVER_BUSY.
        """
        user_id = principal.user_id
        checked_hash = self._check_password(user_id, password, call)
        now = self._clock()
        with self._sessions.write.begin() as session:
            # The device logins this user approved, first. Deleting the user sets their
            # approver_id to NULL (ON DELETE SET NULL), which locks them; PollDeviceLogin locks
            # a device login and then the approver's row (FOR SHARE, to claim the token). Taking
            # them after the user's row would be the opposite order: a poll holding its login
            # and waiting for the user's row, this call holding the row and waiting for the
            # login, a deadlock. Locked first, a poll either claims before (and the token it
            # issues is deleted with the user) or finds the approver gone.
            session.execute(
                select(DeviceLogin.id)
                .where(DeviceLogin.approver_id == user_id)
                .order_by(DeviceLogin.id)
                .with_for_update()
            )
            # The user's row FOR NO KEY UPDATE, not FOR UPDATE: OfferOwnershipTransfer locks the
            # organization and then, inserting its offer, takes FOR KEY SHARE on this row (the
            # foreign-key check); a full lock here, waiting for the organization next, would
            # deadlock with it. The DELETE at the end takes the full lock, once the
            # organizations are held.
            self._lock_checked_user(session, principal, checked_hash, key_share=True)
            # Every organization the user belongs to, locked as RemoveMember and
            # UpdateMemberRole lock it (organization/repository.py, find(lock=True)), in id
            # order, BEFORE the roles are read: a role read first could be stale by the time
            # the lock is granted (an ownership transfer committing in between). While this
            # transaction holds them no owner can leave or be demoted, nor can this user be
            # promoted; so two co-owners deleting their accounts at once count the owners one
            # after the other, and the second finds itself the last one.
            session.execute(
                select(Organization.id)
                .where(
                    Organization.id.in_(
                        select(Membership.organization_id).where(Membership.user_id == user_id)
                    )
                )
                .order_by(Organization.id)
                .with_for_update()
            )
            memberships = list(
                session.execute(
                    select(Membership.organization_id, Membership.role).where(
                        Membership.user_id == user_id
                    )
                )
            )
            owned = [organization_id for organization_id, role in memberships if role is Role.OWNER]
            last_owned = self._last_owned(session, owned)
            if last_owned:
                slugs = sorted(last_owned)
                raise FailedPreconditionError(
                    "LAST_OWNER",
                    "you are the last owner of "
                    + ", ".join(slugs)
                    + ": make someone else an owner, or delete the organization, first",
                    {"organizations": ",".join(slugs)},
                    [
                        PreconditionViolation(
                            "LAST_OWNER",
                            f"organizations/{slug}",
                            "an organization must keep at least one owner",
                        )
                        for slug in slugs
                    ],
                )
            for organization_id, role in memberships:
                # Each organization's own log shows the member leaving with their account.
                record(
                    session,
                    Event(
                        "member.removed",
                        user_id=user_id,
                        organization_id=organization_id,
                        target_type="membership",
                        target_id=str(user_id),
                        details={"role": role.value, "left": True, "account_deleted": True},
                    ),
                    now,
                )
            record(
                session,
                Event(
                    "account.deleted",
                    user_id=user_id,
                    target_type="user",
                    target_id=str(user_id),
                    details={"organizations_left": len(memberships)},
                ),
                now,
            )
            # The database cascades to memberships, sessions (and their refresh tokens) and
            # personal tokens; the audit event has no foreign key and stays.
            session.execute(
                delete(User).where(User.id == user_id).execution_options(synchronize_session=False)
            )
        # Committed: every cached token of the account fails on its next call here.
        self._token_cache.forget(user_id=user_id)

    def _check_password(self, user_id: uuid.UUID, password: str, call: WaitingCall | None) -> str:
        """The stored hash `password` was checked against; raises when it is wrong."""
        # Refused before any query when a hash would be refused anyway (passwords.py).
        self._hasher.check_capacity()
        with self._sessions.read.begin() as session:
            user = AuthRepository(session).user(user_id)
        if user is None:
            raise _account_gone()
        if not user.password_hash:
            # Made through an identity provider (federation/): no password to confirm with.
            raise FailedPreconditionError(
                "NO_PASSWORD",
                "this account has no password: it signs in through an identity provider; "
                "set a password with RequestPasswordReset first",
            )
        if not self._hasher.verify(password, user.password_hash, call):
            raise _wrong_password()
        return user.password_hash

    @staticmethod
    def _lock_checked_user(
        session: Session, principal: Principal, checked_hash: str, *, key_share: bool = False
    ) -> User:
        """The user's row, locked, with the password still the one checked, and the calling
        credential still standing (credential_locks.py, after the row, in its order)."""
        user = AuthRepository(session).lock_user(principal.user_id, key_share=key_share)
        if user is None:
            raise _account_gone()
        if user.password_hash != checked_hash:
            # Changed since the check (another ChangePassword): the password given is stale.
            raise _wrong_password()
        lock_calling_credential(session, principal)
        return user

    @staticmethod
    def _last_owned(session: Session, owned: list[uuid.UUID]) -> list[str]:
        """The slugs of the organizations in `owned` that have exactly one owner."""
        if not owned:
            return []
        rows = session.execute(
            select(Organization.slug)
            .join(Membership, Membership.organization_id == Organization.id)
            .where(Organization.id.in_(owned), Membership.role == Role.OWNER)
            .group_by(Organization.id, Organization.slug)
            .having(func.count() == 1)
        )
        return [slug for (slug,) in rows]
