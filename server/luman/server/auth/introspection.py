"""IntrospectToken: is this token active now, and what is it (RFC 7662 semantics).

Every answer reads the database, never the verified-token cache: a revocation (a revoked
session or personal token, LogoutAll, a deleted service account) shows at once, on every
replica. That is the difference with offline verification against the JWKS, which checks
only the signature and the expiry: it cannot see a revocation before the token expires, which
is why access tokens live minutes (JWT_EXPIRES_IN).

Whatever makes a token inactive (unknown, expired, revoked, used, malformed, a wrong checksum,
a deleted account) gives the same answer, None here and `active: false` with no other field on
the wire, so that the answer says nothing about why.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import uuid

import jwt
from sqlalchemy import bindparam, select

from luman.auth.v1 import auth_pb2
from luman.client.token_format import SERVICE_PREFIX, is_legacy_token, verify_checksum
from luman.interceptors.errors import UnauthenticatedError
from luman.interceptors.principal import SERVICE_ONLY_SCOPES
from luman.server.auth import token_checks
from luman.server.auth.cli_tokens import hash_secret, parse_scopes
from luman.server.auth.repository import AuthRepository
from luman.server.auth.service_accounts import ServiceAccounts, account_by_secret
from luman.server.auth.service_tokens import looks_like_service_token
from luman.server.auth.tokens import CLI_TOKEN_PREFIX, TokenCodec
from luman.server.clock import Clock
from luman.server.db.models import CliToken
from luman.server.db.session import Sessions
from luman.server.methods import ALL_SCOPES

TokenKind = auth_pb2.TokenKind
# What a sign-in's access token may do: every scope but the service-only ones.
USER_SCOPES = ALL_SCOPES - SERVICE_ONLY_SCOPES

_cli = CliToken.__table__.c
_CLI_TOKEN = select(
    _cli.user_id, _cli.token_hash, _cli.revoke_time, _cli.expire_time, _cli.scopes, _cli.create_time
).where(_cli.token_hash == bindparam("token_hash"))


@dataclasses.dataclass(frozen=True)
class Introspection:
    """An active token."""

    kind: auth_pb2.TokenKind.ValueType
    subject: uuid.UUID
    scopes: frozenset[str]
    issue_time: dt.datetime
    expire_time: dt.datetime | None
    organization_id: uuid.UUID | None = None
    kid: str | None = None


class Introspector:
    def __init__(
        self,
        sessions: Sessions,
        codec: TokenCodec,
        service_accounts: ServiceAccounts,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._codec = codec
        self._service_accounts = service_accounts
        self._clock = clock

    def introspect(self, token: str) -> Introspection | None:
        """The token's description when it is active now; None for every other token."""
        try:
            if token.startswith(SERVICE_PREFIX):
                return self._service_secret(token)
            if token.startswith(CLI_TOKEN_PREFIX):
                return self._personal_token(token)
            if looks_like_service_token(token):
                return self._service_token(token)
            return self._access_token(token) or self._refresh_token(token)
        except UnauthenticatedError:
            return None

    def _service_secret(self, secret: str) -> Introspection | None:
        with self._sessions.engine.connect() as conn:
            account = account_by_secret(conn, secret)
        if account is None:
            return None
        return Introspection(
            TokenKind.TOKEN_KIND_SERVICE_SECRET,
            account.id,
            account.scopes,
            account.create_time,
            None,
            account.organization_id,
        )

    def _personal_token(self, token: str) -> Introspection | None:
        # A bad checksum is refused before the query, as on a call.
        if not (verify_checksum(token) or is_legacy_token(token)):
            return None
        token_hash = hash_secret(token)
        with self._sessions.engine.connect() as conn:
            row = conn.execute(_CLI_TOKEN, {"token_hash": token_hash}).first()
        if row is None or not hmac.compare_digest(row.token_hash, token_hash):
            return None
        if row.revoke_time is not None:
            return None
        if row.expire_time is not None and self._clock() >= row.expire_time:
            return None
        return Introspection(
            TokenKind.TOKEN_KIND_PERSONAL_TOKEN,
            row.user_id,
            parse_scopes(row.scopes),
            row.create_time,
            row.expire_time,
        )

    def _service_token(self, token: str) -> Introspection:
        claims, account = self._service_accounts.check(token)
        return Introspection(
            TokenKind.TOKEN_KIND_SERVICE_ACCESS_TOKEN,
            account.id,
            claims.scopes,
            claims.issue_time,
            claims.expire_time,
            account.organization_id,
            claims.kid,
        )

    def _access_token(self, token: str) -> Introspection | None:
        try:
            claims = self._codec.verify("access", token)
        except UnauthenticatedError:
            return None  # perhaps a refresh token
        with self._sessions.engine.connect() as conn:
            check = token_checks.login_session_check(conn, claims.session_id)
        if check is None or check.user.id != claims.user_id or check.revoke_time is not None:
            return None
        if check.tokens_not_before is not None and claims.issue_time < check.tokens_not_before:
            return None
        return Introspection(
            TokenKind.TOKEN_KIND_ACCESS_TOKEN,
            claims.user_id,
            USER_SCOPES,
            claims.issue_time,
            claims.expire_time,
            kid=_kid(token),
        )

    def _refresh_token(self, token: str) -> Introspection | None:
        claims = self._codec.verify("refresh", token)
        with self._sessions.read.begin() as session:
            repo = AuthRepository(session)
            login = repo.login_session(claims.session_id)
            stored = repo.refresh_token(claims.jti)
            user = repo.user(claims.user_id)
            if (
                login is None
                or stored is None
                or user is None
                or stored.session_id != login.id
                or login.user_id != user.id
                or login.revoke_time is not None
                # Used: it was exchanged (the short reuse grace is for the client that
                # exchanged it, not a sign that it is still good).
                or stored.use_time is not None
                or (
                    user.tokens_not_before is not None
                    and claims.issue_time < user.tokens_not_before
                )
            ):
                return None
        # A refresh token can only be exchanged: it carries no scope.
        return Introspection(
            TokenKind.TOKEN_KIND_REFRESH_TOKEN,
            claims.user_id,
            frozenset(),
            claims.issue_time,
            claims.expire_time,
        )


def _kid(token: str) -> str | None:
    kid = jwt.get_unverified_header(token).get("kid")  # the signature over it was checked
    return kid if isinstance(kid, str) else None
