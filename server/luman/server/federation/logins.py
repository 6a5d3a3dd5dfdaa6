"""Sign-in through identity providers: the rules behind StartProviderLogin,
CompleteProviderLogin, LinkProviderIdentity, ListIdentities and UnlinkIdentity.

A sign-in is an authorization code request with PKCE (S256), `state` and, for OpenID
Connect, `nonce` (adapters.py speaks each provider's protocol). Between start and completion
the pending sign-in is a `provider_logins` row: the state only as its SHA-256 (it is the
browser's secret), the PKCE verifier and nonce until the state is used, which it is once.

Who the provider's account is, in order:
1. An identity already linked (provider, subject): it signs in as its account.
2. Otherwise the provider must vouch for the email (verified); an account with that email
   that has a password gets `link_required`: the person proves the account is theirs with
   the password once (LinkProviderIdentity), never merged on the email alone. One without a
   password (made through another provider) is told to sign in with that provider.
3. No such account: one is created, its email verified, with no password.
The provider's ALLOWED_DOMAINS apply to every sign-in, linked identities included.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import logging
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from luman.interceptors.client_address import Caller
from luman.interceptors.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from luman.interceptors.principal import Principal
from luman.server.audit.record import Event, record
from luman.server.auth.cli_tokens import hash_secret
from luman.server.auth.passwords import PasswordHasher, WaitingCall
from luman.server.auth.repository import AuthRepository
from luman.server.auth.service import NO_CALLER, AuthService, TokenPair
from luman.server.clock import Clock
from luman.server.db.integrity import violates
from luman.server.db.models import Identity, IdentityLink, ProviderLogin, User
from luman.server.db.session import Sessions
from luman.server.federation.adapters import Adapter, ProviderIdentity, code_challenge
from luman.server.federation.errors import ProviderRejectedError, ProviderUnavailableError
from luman.server.federation.providers import ProviderConfig
from luman.server.validation import Violations, check_email

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

KEEP_AFTER_EXPIRY = dt.timedelta(days=1)
# Passwords one link token takes before it stops working (the sign-in rate limits apply too):
# enough for typos, too few to guess with.
MAX_LINK_ATTEMPTS = 5
# Seconds a client should wait before trying a provider that did not answer again.
PROVIDER_RETRY_SECONDS = 30.0
# Calls to one provider in progress at once (each on a gRPC worker thread, GRPC_MAX_WORKERS in
# all): more wait for nothing, they are told to retry.
MAX_PROVIDER_CALLS = 4
MAX_SUBJECT = 255
MAX_USERNAME = 100
MAX_NAME = 100
REDIRECT_PATH = "/device/providers/{provider}/callback"


@dataclasses.dataclass(frozen=True)
class StartedLogin:
    authorization_url: str
    state: str
    expire_time: dt.datetime


@dataclasses.dataclass(frozen=True)
class SignedIn:
    user: User
    tokens: TokenPair
    account_created: bool
    user_code: str
    identity: Identity


@dataclasses.dataclass(frozen=True)
class LinkRequired:
    link_token: str
    email: str
    expire_time: dt.datetime
    user_code: str


@dataclasses.dataclass(frozen=True)
class _Pending:
    code_verifier: str
    nonce: str
    user_code: str


@dataclasses.dataclass(frozen=True)
class LinkedIdentity:
    identity: Identity
    display_name: str


def _state_invalid() -> FailedPreconditionError:
    # One answer for a state never issued, already used, or another provider's.
    return FailedPreconditionError(
        "PROVIDER_LOGIN_STATE_INVALID",
        "this sign-in is not pending: it was already used or never started here; start again",
    )


def _link_invalid() -> FailedPreconditionError:
    return FailedPreconditionError(
        "LINK_TOKEN_INVALID", "this link request is used, expired or unknown; sign in again"
    )


def _wrong_password() -> UnauthenticatedError:
    return UnauthenticatedError("INVALID_CREDENTIALS", "invalid email or password")


class ProviderLogins:
    """Args:
    adapters: one per configured provider, by id (adapters.build_adapters).
    configs: the providers, in the configured order (IDENTITY_PROVIDERS).
    auth: issues the sign-in's tokens as Login does, and owns the token cache.
    ttl: seconds a pending sign-in, and a link request, stays usable (PROVIDER_LOGIN_TTL).
    password_login: PASSWORD_LOGIN; a password only counts as a way to sign in when on.
    public_url: the gateway's address, for the redirect URIs; set_public_url() may set it
        once the gateway has its port.
    defer_audit: records an event off the request path (a failed link password), as
        AuthService does for a failed sign-in.
    """

    def __init__(
        self,
        sessions: Sessions,
        clock: Clock,
        hasher: PasswordHasher,
        auth: AuthService,
        adapters: Mapping[str, Adapter],
        configs: tuple[ProviderConfig, ...],
        *,
        ttl: float = 600.0,
        password_login: bool = True,
        public_url: str = "http://localhost:8080",
        defer_audit: Callable[[Event], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._hasher = hasher
        self._auth = auth
        self._adapters = dict(adapters)
        self.providers = configs
        self._configs = {config.id: config for config in configs}
        self._slots = {
            config.id: threading.BoundedSemaphore(MAX_PROVIDER_CALLS) for config in configs
        }
        # Providers whose last call found them away: one warning per outage, not per sign-in.
        self._down: set[str] = set()
        self._ttl = dt.timedelta(seconds=ttl)
        self.password_login = password_login
        self._defer_audit = defer_audit
        self._public_url = ""
        self.set_public_url(public_url)

    def set_public_url(self, public_url: str) -> None:
        self._public_url = public_url.rstrip("/")

    def redirect_uri(self, provider_id: str) -> str:
        """Where the provider sends the browser back: the one URI to register with it."""
        return self._public_url + REDIRECT_PATH.format(provider=provider_id)

    def config(self, provider_id: str) -> ProviderConfig:
        config = self._configs.get(provider_id)
        if config is None:
            raise NotFoundError(
                "PROVIDER_NOT_FOUND", f"no identity provider {provider_id[:40]!r} is configured"
            )
        return config

    def display_name(self, provider_id: str) -> str:
        config = self._configs.get(provider_id)
        return provider_id if config is None else config.display_name

    # StartProviderLogin.

    def start(self, provider_id: str, user_code: str, caller: Caller = NO_CALLER) -> StartedLogin:
        """`user_code`: a normalised device-login user code, or ""."""
        config = self.config(provider_id)
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)  # 64 characters: RFC 7636 allows 43 to 128
        nonce = secrets.token_urlsafe(32)
        adapter = self._adapters[config.id]
        url = self._ask(
            config,
            lambda: adapter.authorization_url(
                redirect_uri=self.redirect_uri(config.id),
                state=state,
                nonce=nonce,
                code_challenge=code_challenge(verifier),
            ),
        )
        now = self._clock()
        expire_time = now + self._ttl
        with self._sessions.write.begin() as session:
            # Bounded housekeeping: starts are rate limited, and each deletes what aged out.
            session.execute(
                delete(ProviderLogin).where(ProviderLogin.expire_time < now - KEEP_AFTER_EXPIRY)
            )
            session.execute(
                delete(IdentityLink).where(IdentityLink.expire_time < now - KEEP_AFTER_EXPIRY)
            )
            session.add(
                ProviderLogin(
                    id=uuid.uuid4(),
                    state_hash=hash_secret(state),
                    provider=config.id,
                    code_verifier=verifier,
                    nonce=nonce,
                    user_code=user_code,
                    client_ip=caller.ip[:45],
                    create_time=now,
                    expire_time=expire_time,
                )
            )
        return StartedLogin(url, state, expire_time)

    # CompleteProviderLogin.

    def complete(
        self,
        provider_id: str,
        state: str,
        code: str,
        error: str,
        error_description: str,
        caller: Caller = NO_CALLER,
    ) -> SignedIn | LinkRequired:
        config = self.config(provider_id)
        pending = self._use_state(config, state)
        if error:
            raise self._provider_error(config, error, error_description)
        if not code:
            raise InvalidArgumentError.field("code", "is required unless error is set")
        adapter = self._adapters[config.id]
        identity = self._ask(
            config,
            lambda: adapter.identity(
                code=code,
                redirect_uri=self.redirect_uri(config.id),
                code_verifier=pending.code_verifier,
                nonce=pending.nonce,
            ),
        )
        if config.id in self._down:
            # The code exchange always reaches the provider (an authorization URL may come
            # from a cached discovery document, or GitHub's, from no request at all).
            self._down.discard(config.id)
            logger.info("identity provider %s answers again", config.id)
        identity = checked_identity(config, identity)
        try:
            return self._sign_in(config, identity, pending.user_code, caller)
        except AlreadyExistsError:
            # Two first sign-ins of one person at once (two tabs): the loser finds the account
            # the winner created.
            return self._sign_in(config, identity, pending.user_code, caller)

    def _ask(self, config: ProviderConfig, call: Callable[[], _T]) -> _T:
        """`call` to the provider, on at most MAX_PROVIDER_CALLS worker threads at once: a
        provider that hangs (each request may wait its timeouts, 5 s to connect and 10 s to
        read) holds those threads and no more, and the server's other calls keep the rest."""
        slots = self._slots[config.id]
        if not slots.acquire(blocking=False):
            raise UnavailableError(
                "PROVIDER_UNAVAILABLE",
                f"{config.display_name} is answering slowly; try again shortly",
                PROVIDER_RETRY_SECONDS,
            )
        try:
            return call()
        except ProviderUnavailableError as exc:
            raise self._unavailable(config, exc) from None
        except ProviderRejectedError as exc:
            raise self._rejected(config, exc) from None
        finally:
            slots.release()

    def _use_state(self, config: ProviderConfig, state: str) -> _Pending:
        """What the pending sign-in `state` names holds, once marked used (committed before the
        provider is asked anything: a state works once, whatever happens next)."""
        now = self._clock()
        with self._sessions.write.begin() as session:
            row_ = session.scalars(
                select(ProviderLogin)
                .where(ProviderLogin.state_hash == hash_secret(state))
                .with_for_update()
            ).one_or_none()
            if row_ is None or row_.use_time is not None or row_.provider != config.id:
                raise _state_invalid()
            if now >= row_.expire_time:
                raise FailedPreconditionError(
                    "PROVIDER_LOGIN_EXPIRED", "this sign-in took too long; start again"
                )
            pending = _Pending(row_.code_verifier, row_.nonce, row_.user_code)
            row_.use_time = now
            # Spent: the verifier and nonce are of no use to anyone any more.
            row_.code_verifier = ""
            row_.nonce = ""
        return pending

    def _sign_in(
        self, config: ProviderConfig, identity: ProviderIdentity, user_code: str, caller: Caller
    ) -> SignedIn | LinkRequired:
        now = self._clock()
        with self._sessions.write.begin() as session:
            repo = AuthRepository(session)
            linked = _linked(session, config, identity)
            user = None if linked is None else repo.lock_user(linked.user_id)
            if user is not None:
                # Again, under the user's lock: an UnlinkIdentity (or DeleteMe) may have
                # committed between the read and the lock.
                linked = _linked(session, config, identity)
            if user is not None and linked is not None and linked.user_id == user.id:
                linked.last_sign_in_time = now
                if identity.email:
                    linked.email = identity.email
                linked.username = identity.username
                tokens = self._auth.start_sign_in(session, user, now, caller)
                record(session, _signed_in(user, config), now)
                return SignedIn(user, tokens, False, user_code, linked)
            if not identity.email_verified or not identity.email:
                raise _email_not_verified(config)
            existing = repo.user_by_email(identity.email)
            if existing is not None:
                if not existing.password_hash:
                    raise self._uses_other_provider(session, existing)
                return self._link_required(session, existing, config, identity, user_code, now)
            user = repo.add_user(
                User(
                    id=uuid.uuid4(),
                    email=identity.email,
                    name=_account_name(identity),
                    password_hash="",
                    create_time=now,
                    email_verify_time=now,
                )
            )
            linked = _add_identity(session, _new_identity(user, config, identity, now))
            tokens = self._auth.start_sign_in(session, user, now, caller)
            record(
                session,
                Event(
                    "account.registered",
                    user.id,
                    target_type="user",
                    target_id=str(user.id),
                    details={"provider": config.id},
                ),
                now,
            )
            record(session, _identity_event("identity.linked", user, linked), now)
            return SignedIn(user, tokens, True, user_code, linked)

    def _link_required(
        self,
        session: Session,
        user: User,
        config: ProviderConfig,
        identity: ProviderIdentity,
        user_code: str,
        now: dt.datetime,
    ) -> LinkRequired:
        token = secrets.token_urlsafe(32)
        expire_time = now + self._ttl
        session.add(
            IdentityLink(
                id=uuid.uuid4(),
                token_hash=hash_secret(token),
                user_id=user.id,
                provider=config.id,
                issuer=issuer_of(config),
                subject=identity.subject,
                email=identity.email,
                username=identity.username,
                user_code=user_code,
                attempts=0,
                create_time=now,
                expire_time=expire_time,
            )
        )
        return LinkRequired(token, user.email, expire_time, user_code)

    def _uses_other_provider(self, session: Session, user: User) -> FailedPreconditionError:
        providers = session.scalars(
            select(Identity.provider).where(Identity.user_id == user.id).order_by(Identity.id)
        ).all()
        names = ", ".join(sorted({self.display_name(p) for p in providers})) or "a provider"
        return FailedPreconditionError(
            "ACCOUNT_USES_OTHER_PROVIDER",
            f"an account with this email exists and signs in with {names}; sign in with it",
            metadata={"providers": ",".join(sorted(set(providers)))},
        )

    # LinkProviderIdentity.

    def link(
        self,
        link_token: str,
        password: str,
        call: WaitingCall | None = None,
        caller: Caller = NO_CALLER,
    ) -> SignedIn:
        # A link the hasher would refuse is refused before it costs a query.
        self._hasher.check_capacity()
        token_hash = hash_secret(link_token)
        with self._sessions.read.begin() as session:
            pending = session.scalars(
                select(IdentityLink).where(IdentityLink.token_hash == token_hash)
            ).one_or_none()
            user = None if pending is None else AuthRepository(session).user(pending.user_id)
            checked_hash = "" if user is None else user.password_hash
            link_id = None if pending is None else pending.id
        if (
            pending is None
            or user is None
            or not self._usable(pending)
            or not hmac.compare_digest(pending.token_hash, token_hash)
            # Counted before the hash: parallel guesses with one token cannot exceed the
            # budget between a check and its count.
            or not self._claim_attempt(pending.id)
        ):
            raise _link_invalid()
        if not self._hasher.verify(password, checked_hash, call):
            if self._defer_audit is not None:
                self._defer_audit(
                    Event(
                        "auth.sign_in_failed",
                        user.id,
                        target_type="user",
                        target_id=str(user.id),
                        details={"provider": pending.provider, "link": True},
                    )
                )
            raise _wrong_password()
        now = self._clock()
        config = self._configs.get(pending.provider)
        if config is None:  # the provider was removed from the configuration meanwhile
            raise _link_invalid()
        with self._sessions.write.begin() as session:
            repo = AuthRepository(session)
            stored = session.get(IdentityLink, link_id, with_for_update=True)
            if stored is None or stored.use_time is not None or now >= stored.expire_time:
                raise _link_invalid()
            locked = repo.lock_user(stored.user_id)
            if locked is None or not hmac.compare_digest(locked.password_hash, checked_hash):
                # The password changed while it was checked: the one given is stale.
                raise _wrong_password()
            if stored.issuer != issuer_of(config):
                raise _link_invalid()  # the provider was pointed at another issuer meanwhile
            stored.use_time = now
            if locked.email_verify_time is None and locked.email == stored.email:
                # The password proves the account, the provider the address.
                locked.email_verify_time = now
            identity = _add_identity(
                session,
                Identity(
                    id=uuid.uuid4(),
                    user_id=locked.id,
                    provider=stored.provider,
                    issuer=stored.issuer,
                    subject=stored.subject,
                    email=stored.email,
                    username=stored.username,
                    create_time=now,
                    last_sign_in_time=now,
                ),
            )
            tokens = self._auth.start_sign_in(session, locked, now, caller)
            record(session, _identity_event("identity.linked", locked, identity), now)
            record(session, _signed_in(locked, config), now)
            return SignedIn(locked, tokens, False, stored.user_code, identity)

    def _usable(self, link: IdentityLink) -> bool:
        return (
            link.use_time is None
            and link.attempts < MAX_LINK_ATTEMPTS
            and self._clock() < link.expire_time
        )

    def _claim_attempt(self, link_id: uuid.UUID) -> bool:
        """Count one password tried with the link; False when its budget is spent."""
        with self._sessions.write.begin() as session:
            claimed = session.execute(
                update(IdentityLink)
                .where(
                    IdentityLink.id == link_id,
                    IdentityLink.use_time.is_(None),
                    IdentityLink.attempts < MAX_LINK_ATTEMPTS,
                )
                .values(attempts=IdentityLink.attempts + 1)
                .execution_options(synchronize_session=False)
            )
            return bool(claimed.rowcount)  # type: ignore[attr-defined]

    # ListIdentities, UnlinkIdentity.

    def list(self, principal: Principal) -> list[LinkedIdentity]:
        with self._sessions.read.begin() as session:
            rows = session.scalars(
                select(Identity)
                .where(Identity.user_id == principal.user_id)
                .order_by(Identity.create_time, Identity.id)
            ).all()
        return [LinkedIdentity(row_, self.display_name(row_.provider)) for row_ in rows]

    def unlink(self, principal: Principal, identity_id: uuid.UUID) -> None:
        now = self._clock()
        with self._sessions.write.begin() as session:
            # The user's row, locked: two unlinks at once must not both see the other link as
            # the way left to sign in.
            user = AuthRepository(session).lock_user(principal.user_id)
            identities = session.scalars(
                select(Identity).where(Identity.user_id == principal.user_id)
            ).all()
            target = next((i for i in identities if i.id == identity_id), None)
            if user is None or target is None:
                raise NotFoundError("IDENTITY_NOT_FOUND", "no linked identity of yours has this id")
            # Another way in: an identity that still signs in (its provider configured, with
            # the issuer it was linked at), or a password while passwords are on.
            others = [
                i
                for i in identities
                if i.id != identity_id
                and i.provider in self._configs
                and i.issuer == issuer_of(self._configs[i.provider])
            ]
            if not others and not (self.password_login and user.password_hash):
                remedy = (
                    "set a password (RequestPasswordReset) or link another provider first"
                    if self.password_login
                    else "link another provider first"
                )
                raise FailedPreconditionError(
                    "LAST_SIGN_IN_METHOD",
                    f"this is the only way left to sign in to the account; {remedy}",
                )
            session.delete(target)
            record(session, _identity_event("identity.unlinked", user, target), now, principal)

    # Errors.

    def _unavailable(
        self, config: ProviderConfig, exc: ProviderUnavailableError
    ) -> UnavailableError:
        if config.id not in self._down:
            self._down.add(config.id)
            logger.warning("identity provider %s unavailable: %s", config.id, exc)
        return UnavailableError(
            "PROVIDER_UNAVAILABLE",
            f"{config.display_name} is not answering; try again shortly",
            PROVIDER_RETRY_SECONDS,
        )

    def _rejected(
        self, config: ProviderConfig, exc: ProviderRejectedError
    ) -> UnauthenticatedError | FailedPreconditionError:
        if exc.reason == "MISCONFIGURED":
            logger.error("identity provider %s is misconfigured: %s", config.id, exc.detail)
            return FailedPreconditionError(
                "PROVIDER_MISCONFIGURED",
                f"sign-in with {config.display_name} is not set up correctly on this server; "
                "tell its administrator",
            )
        logger.warning("identity provider %s: %s (%s)", config.id, exc.reason, exc.detail)
        reason = exc.reason
        if reason == "RESPONSE_INVALID":
            reason = "PROVIDER_RESPONSE_INVALID"
        return UnauthenticatedError(
            reason, f"{config.display_name}'s answer was refused ({reason}); start again"
        )

    def _provider_error(
        self, config: ProviderConfig, error: str, description: str
    ) -> FailedPreconditionError | PermissionDeniedError | UnavailableError:
        error = error[:64]
        logger.info("identity provider %s answered %s: %s", config.id, error, description[:200])
        if error == "access_denied":
            return PermissionDeniedError(
                "PROVIDER_ACCESS_DENIED", f"the sign-in was declined at {config.display_name}"
            )
        if error in ("temporarily_unavailable", "server_error"):
            return UnavailableError(
                "PROVIDER_UNAVAILABLE",
                f"{config.display_name} could not complete the sign-in; try again shortly",
                PROVIDER_RETRY_SECONDS,
            )
        return FailedPreconditionError(
            "PROVIDER_ERROR",
            f"{config.display_name} refused the sign-in ({error}); start again",
            metadata={"provider_error": error},
        )


def checked_identity(config: ProviderConfig, identity: ProviderIdentity) -> ProviderIdentity:
    """What the provider said, within the columns' limits and the provider's allowed domains."""
    if (
        not identity.subject
        or len(identity.subject) > MAX_SUBJECT
        or not identity.subject.isprintable()
    ):
        raise UnauthenticatedError(
            "PROVIDER_RESPONSE_INVALID",
            f"{config.display_name} gave no usable account id; start again",
        )
    email = identity.email
    if email:
        v = Violations()
        email = check_email(v, "email", email)  # its length bound included
        if v.items:
            email = ""
    username = "".join(c for c in identity.username if c.isprintable())[:MAX_USERNAME]
    identity = dataclasses.replace(
        identity,
        email=email,
        email_verified=bool(email) and identity.email_verified,
        username=username,
        name="".join(c for c in identity.name if c.isprintable()),
    )
    if config.allowed_domains:
        if not identity.email_verified:
            raise _email_not_verified(config)
        # Google: the account's Workspace domain (hd) too. A consumer Google account can hold a
        # verified address at a company's domain (and keep it after leaving the company).
        workspace_ok = config.kind != "google" or identity.hosted_domain in config.allowed_domains
        if not config.email_domain_allowed(identity.email) or not workspace_ok:
            raise PermissionDeniedError(
                "EMAIL_DOMAIN_NOT_ALLOWED",
                f"sign-in with {config.display_name} is limited to email addresses at "
                + ", ".join(sorted(config.allowed_domains)),
            )
    return identity


def issuer_of(config: ProviderConfig) -> str:
    """Who vouches for an identity's subject: the OIDC issuer, or GitHub's web address. An
    identity is this provider account only with both (OIDC Core §5.7: sub is unique only
    within its issuer): a provider id pointed at another issuer (gitlab.com to a
    self-managed GitLab, whose user ids collide) signs none of the old identities in."""
    return config.issuer or config.github_url


def _linked(
    session: Session, config: ProviderConfig, identity: ProviderIdentity
) -> Identity | None:
    return session.scalars(
        select(Identity)
        .where(
            Identity.provider == config.id,
            Identity.issuer == issuer_of(config),
            Identity.subject == identity.subject,
        )
        .execution_options(populate_existing=True)
    ).one_or_none()


def _email_not_verified(config: ProviderConfig) -> FailedPreconditionError:
    return FailedPreconditionError(
        "PROVIDER_EMAIL_NOT_VERIFIED",
        f"{config.display_name} has no verified email address for this account; verify one "
        "there and try again",
    )


def _account_name(identity: ProviderIdentity) -> str:
    name = " ".join(identity.name.split()) or identity.username or identity.email.split("@")[0]
    return "".join(c for c in name if c.isprintable())[:MAX_NAME] or "Luman user"


def _new_identity(
    user: User, config: ProviderConfig, identity: ProviderIdentity, now: dt.datetime
) -> Identity:
    return Identity(
        id=uuid.uuid4(),
        user_id=user.id,
        provider=config.id,
        issuer=issuer_of(config),
        subject=identity.subject,
        email=identity.email,
        username=identity.username,
        create_time=now,
        last_sign_in_time=now,
    )


def _add_identity(session: Session, identity: Identity) -> Identity:
    """`identity`, inserted; one linked meanwhile (a sign-in or link of the same provider
    account committed first) is ALREADY_EXISTS, which complete() answers by signing in again."""
    session.add(identity)
    try:
        session.flush()
    except IntegrityError as exc:
        if violates(exc, "uq_identities_provider"):
            raise AlreadyExistsError(
                "IDENTITY_ALREADY_LINKED",
                "this provider account was linked to an account meanwhile; sign in",
            ) from None
        raise
    return identity


def _signed_in(user: User, config: ProviderConfig) -> Event:
    return Event(
        "auth.signed_in",
        user.id,
        target_type="user",
        target_id=str(user.id),
        details={"via": "provider", "provider": config.id},
    )


def _identity_event(action: str, user: User, identity: Identity) -> Event:
    return Event(
        action,
        user.id,
        target_type="identity",
        target_id=str(identity.id),
        details={"provider": identity.provider, "email": identity.email},
    )
