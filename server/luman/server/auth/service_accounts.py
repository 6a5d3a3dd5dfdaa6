"""Service accounts: credentials for programs, owned by an organization.

- Managed by the organization's owners and admins (a member: PERMISSION_DENIED; a non-member:
  NOT_FOUND, as everywhere in OrganizationService).
- The credential is a secret, "lms_" in the personal-token format (luman.client.token_format:
  256 random bits, a CRC-32 checksum a secret scanner verifies offline), shown once and stored
  only as its SHA-256. It is never sent on ordinary calls: CreateServiceToken exchanges it for
  a short-lived access token (service_tokens.py), so a leaked access token is worth minutes.
- An access token is checked like a user's: signature and claims, then the account's row (one
  indexed read), then remembered in the verified-token cache under the account's id.
  Deleting the account deletes the row and forgets the id: on this replica the next call
  fails, and on others (invalidations.py); the secret fails at once everywhere (its check is
  always a database read).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import uuid

from sqlalchemy import Connection, and_, bindparam, delete, or_, select

from luman.client import token_format
from luman.interceptors.errors import NotFoundError, PermissionDeniedError, UnauthenticatedError
from luman.interceptors.principal import Credential, Principal
from luman.server.audit.record import Event, record
from luman.server.auth.credential_locks import lock_calling_credential
from luman.server.auth.introspection_policy import IntrospectionPolicy
from luman.server.auth.service_tokens import ServiceClaims, ServiceTokenCodec
from luman.server.auth.token_cache import TokenCache
from luman.server.auth.tokens import IssuedToken
from luman.server.clock import Clock
from luman.server.db.models import Organization, Role, ServiceAccount
from luman.server.db.session import Sessions
from luman.server.organization.repository import OrganizationRepository
from luman.server.organization.service import OrganizationRef

PageKey = tuple[dt.datetime, uuid.UUID]
_accounts = ServiceAccount.__table__.c
_COLUMNS = (_accounts.id, _accounts.organization_id, _accounts.scopes, _accounts.create_time)
_BY_ID = select(*_COLUMNS).where(_accounts.id == bindparam("account_id"))
_BY_SECRET = select(*_COLUMNS, _accounts.secret_hash).where(
    _accounts.secret_hash == bindparam("secret_hash")
)


@dataclasses.dataclass(frozen=True)
class AccountRecord:
    """What a token check needs of an account: plain values."""

    id: uuid.UUID
    organization_id: uuid.UUID
    scopes: frozenset[str]
    create_time: dt.datetime


@dataclasses.dataclass(frozen=True)
class CreatedServiceAccount:
    secret: str = dataclasses.field(repr=False)
    account: ServiceAccount


@dataclasses.dataclass(frozen=True)
class ServiceAccountPage:
    items: list[ServiceAccount]
    next_key: PageKey | None


@dataclasses.dataclass(frozen=True)
class ServiceToken:
    token: IssuedToken
    scopes: frozenset[str]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def account_by_id(conn: Connection, account_id: uuid.UUID) -> AccountRecord | None:
    row = conn.execute(_BY_ID, {"account_id": account_id}).first()
    return None if row is None else AccountRecord(row[0], row[1], frozenset(row[2].split()), row[3])


def account_by_secret(conn: Connection, secret: str) -> AccountRecord | None:
    """The account whose secret this is; None for anything else. A secret whose checksum is
    wrong is refused before the query."""
    if not token_format.verify_checksum(secret, token_format.SERVICE_PREFIX):
        return None
    secret_hash = hash_secret(secret)
    row = conn.execute(_BY_SECRET, {"secret_hash": secret_hash}).first()
    # The lookup is by hash, so timing reveals nothing about the secret; compare anyway.
    if row is None or not hmac.compare_digest(row[4], secret_hash):
        return None
    return AccountRecord(row[0], row[1], frozenset(row[2].split()), row[3])


def _denied() -> PermissionDeniedError:
    return PermissionDeniedError(
        "PERMISSION_DENIED", "only owners and admins manage service accounts"
    )


class ServiceAccounts:
    def __init__(
        self,
        sessions: Sessions,
        clock: Clock,
        token_cache: TokenCache,
        codec: ServiceTokenCodec,
        introspection: IntrospectionPolicy | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._token_cache = token_cache
        self.codec = codec
        # Who may hold `introspect` (INTROSPECTION_ORGANIZATIONS); None: nobody.
        self.introspection = introspection or IntrospectionPolicy(frozenset())

    # Management (OrganizationService RPCs).

    def create(
        self, principal: Principal, ref: OrganizationRef, name: str, scopes: frozenset[str]
    ) -> CreatedServiceAccount:
        secret = token_format.new_token(token_format.SERVICE_PREFIX)
        now = self._clock()
        with self._sessions.write.begin() as session:
            # The caller as of now, locked (credential_locks.py): a credential revoked on
            # another replica, still in this one's cache, mints no organization secret.
            personal = lock_calling_credential(session, principal)
            expire_time = None if personal is None else personal.expire_time
            if expire_time is not None and expire_time <= now:
                raise UnauthenticatedError("TOKEN_EXPIRED", "token has expired")
            repo = OrganizationRepository(session, self._clock())
            organization = self._managed(repo, principal, ref)
            # After the membership check: an outsider still learns nothing.
            self.introspection.check_create(organization, scopes)
            account = ServiceAccount(
                id=uuid.uuid4(),
                organization_id=organization.id,
                name=name,
                scopes=" ".join(sorted(scopes)),
                secret_hash=hash_secret(secret),
                secret_hint=token_format.hint(secret, token_format.SERVICE_PREFIX),
                create_time=now,
            )
            session.add(account)
            session.flush()
            event = Event(
                "service_account.created",
                organization_id=organization.id,
                target_type="service_account",
                target_id=str(account.id),
                details={"name": name, "scopes": account.scopes},
            )
            record(session, event, now)
        return CreatedServiceAccount(secret, account)

    def list(
        self, principal: Principal, ref: OrganizationRef, after: PageKey | None, page_size: int
    ) -> ServiceAccountPage:
        with self._sessions.read.begin() as session:
            repo = OrganizationRepository(session, self._clock())
            organization = self._managed(repo, principal, ref)
            query = select(ServiceAccount).where(ServiceAccount.organization_id == organization.id)
            if after is not None:
                query = query.where(
                    or_(
                        ServiceAccount.create_time > after[0],
                        and_(ServiceAccount.create_time == after[0], ServiceAccount.id > after[1]),
                    )
                )
            query = query.order_by(ServiceAccount.create_time, ServiceAccount.id)
            rows = list(session.scalars(query.limit(page_size + 1)))
        if len(rows) > page_size:
            rows = rows[:page_size]
            return ServiceAccountPage(rows, (rows[-1].create_time, rows[-1].id))
        return ServiceAccountPage(rows, None)

    def delete(self, principal: Principal, ref: OrganizationRef, account_id: uuid.UUID) -> None:
        """Raises:
        NotFoundError: ORGANIZATION_NOT_FOUND, SERVICE_ACCOUNT_NOT_FOUND (not this
            organization's, or already deleted).
        """
        with self._sessions.write.begin() as session:
            repo = OrganizationRepository(session, self._clock())
            organization = self._managed(repo, principal, ref)
            result = session.execute(
                delete(ServiceAccount)
                .where(
                    ServiceAccount.id == account_id,
                    ServiceAccount.organization_id == organization.id,
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise NotFoundError("SERVICE_ACCOUNT_NOT_FOUND", "service account not found")
            event = Event(
                "service_account.deleted",
                organization_id=organization.id,
                target_type="service_account",
                target_id=str(account_id),
            )
            record(session, event, self._clock())
        # Committed: its access tokens fail on their very next call here, cached or not.
        self._token_cache.forget(credential_id=account_id)

    # The credential.

    def exchange(self, secret: str) -> ServiceToken:
        """A fresh access token for the account whose secret this is.

        Raises:
            UnauthenticatedError: INVALID_CREDENTIALS, for an unknown, deleted or mistyped
                secret alike.
        """
        with self._sessions.engine.connect() as conn:
            account = account_by_secret(conn, secret)
        if account is None:
            raise UnauthenticatedError("INVALID_CREDENTIALS", "invalid service account secret")
        token = self.codec.issue(account.id, account.organization_id, account.scopes)
        return ServiceToken(token, account.scopes)

    def check(self, token: str) -> tuple[ServiceClaims, AccountRecord]:
        """Verify a service access token against its account's row; no cache.

        Raises:
            UnauthenticatedError: TOKEN_EXPIRED, TOKEN_INVALID, TOKEN_REVOKED (account deleted).
        """
        claims = self.codec.verify(token)
        with self._sessions.engine.connect() as conn:
            account = account_by_id(conn, claims.service_account_id)
        if account is None or account.organization_id != claims.organization_id:
            raise UnauthenticatedError("TOKEN_REVOKED", "the service account was deleted")
        return claims, account

    def verify_token(self, token: str, key: bytes, generation: int) -> Principal:
        """A service access token on a call (a cache miss): the Principal it proves."""
        claims, _account = self.check(token)
        principal = Principal(
            claims.service_account_id,
            Credential.SERVICE_TOKEN,
            claims.service_account_id,
            # The token's own scopes: an account's scopes never change after creation.
            claims.scopes,
            claims.organization_id,
        )
        self._token_cache.put(
            key, principal, None, expire_time=claims.believed_until, generation=generation
        )
        return principal

    @staticmethod
    def _managed(
        repo: OrganizationRepository, principal: Principal, ref: OrganizationRef
    ) -> Organization:
        organization = repo.find(ref.organization_id, ref.slug)
        caller = repo.membership(organization.id, principal.user_id) if organization else None
        # A non-member learns nothing, not even that the organization exists.
        if organization is None or caller is None:
            raise NotFoundError("ORGANIZATION_NOT_FOUND", "organization not found")
        if caller.role is Role.MEMBER:
            raise _denied()
        return organization
