"""The calling credential, re-checked and locked inside a transaction that mints another one.

The token check (AuthService.verify_token) may answer from the verified-token cache, which
another replica's revocation reaches before the next call through the invalidation channel
(invalidations.py), but only within TOKEN_CACHE_TTL while that channel is down. That is the
documented bound for ordinary calls, but a call that mints a credential (CreateCliToken,
CreateServiceAccount) would turn it into forever: the new secret outlives the revocation. So
these calls read the calling credential again in their write transaction, locked, and refuse
with UNAUTHENTICATED TOKEN_REVOKED when it no longer stands:

- A sign-in's access token: its login session must be open (not revoked by RevokeSession or
  LogoutAll), and its iat not earlier than the user's LogoutAll not-before time.
- A personal token: its row must be unrevoked (and unexpired: the caller checks the expiry it
  gets back).

The locks order the mint against a concurrent revocation on any replica: the revocation either
commits first (and is seen here) or waits for this transaction's commit (and then revokes what
it minted: LogoutAll's and RevokeAllCliTokens' CLI-token UPDATEs come after their lock of the
user's row, RevokeCliToken's walk of the descendants after its UPDATE of the token). Taken in
LogoutAll's order, the user's row and then the session's or token's, so they never deadlock.
PostgreSQL: SELECT … FOR SHARE / FOR UPDATE; SQLite runs one write transaction at a time
(BEGIN IMMEDIATE), which orders them already.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from luman.interceptors.errors import UnauthenticatedError
from luman.interceptors.principal import Credential, Principal
from luman.server.auth.cli_token_repository import CliTokenRepository
from luman.server.db.models import CliToken, LoginSession, User


def revoked() -> UnauthenticatedError:
    return UnauthenticatedError("TOKEN_REVOKED", "token has been revoked")


def lock_calling_credential(session: Session, principal: Principal) -> CliToken | None:
    """Check, under a lock held until `session`'s transaction ends, that the caller's
    credential still stands. Returns the personal token's row (for its expiry), None for an
    access token.

    Raises:
        UnauthenticatedError: TOKEN_REVOKED, the credential was revoked since its check.
        UserRequiredError: the caller is a service account (it mints nothing for a user).
    """
    user_id = principal.user_id
    # The user's row first, FOR SHARE, whatever the credential: a revocation of many tokens at
    # once (LogoutAll, RevokeAllCliTokens) takes it before its UPDATE of cli_tokens, so that
    # statement starts after this mint commits and sees the new token. (Blocked on one row,
    # a PostgreSQL UPDATE re-reads that row only, never rows inserted meanwhile: the parent's
    # lock alone would let the child escape.) Mints do not wait for each other.
    not_before = session.scalars(
        select(User.tokens_not_before).where(User.id == user_id).with_for_update(read=True)
    ).one_or_none()
    if principal.credential is Credential.CLI_TOKEN:
        token = CliTokenRepository(session).lock_active(user_id, principal.credential_id)
        if token is None:
            raise revoked()
        return token
    if principal.issue_time is None or (
        not_before is not None and principal.issue_time < not_before
    ):
        # LogoutAll came after it was issued (as verify_token checks, but as of now). An
        # access token's principal always carries its issue time: one without fails closed.
        raise revoked()
    open_session = session.scalars(
        select(LoginSession.id)
        .where(
            LoginSession.id == principal.credential_id,
            LoginSession.user_id == user_id,
            LoginSession.revoke_time.is_(None),
        )
        .with_for_update()
    ).one_or_none()
    if open_session is None:
        raise revoked()
    return None


def lock_user_against_mints(session: Session, user_id: uuid.UUID) -> None:
    """Before revoking many of a user's tokens in one UPDATE: wait for the mints under way
    (they hold the user's row FOR SHARE) and keep new ones out until commit. FOR NO KEY UPDATE,
    as LogoutAll's UPDATE of the row takes, so sign-ins inserting rows that point at the user
    are not held up."""
    session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))
