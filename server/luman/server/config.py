"""Settings: read once from the environment (and ./.env), validated, then passed down."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import re
import secrets
import urllib.parse
import uuid
from collections.abc import Mapping
from pathlib import Path

from luman.server.federation.providers import (
    ProviderConfig,
    ProviderConfigError,
    providers_from_env,
)
from luman.server.tracing import TracingConfig, TracingConfigError, tracing_config

logger = logging.getLogger(__name__)

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the server reads from its environment. Names match `.env.example`."""

    env: str = "development"
    host: str = "0.0.0.0"  # noqa: S104 - a service listens on all interfaces unless told otherwise
    port: int = 3000
    database_url: str = ""
    embedded_database: bool = True  # DATABASE_URL unset: SQLite under data_dir, auto-migrated
    data_dir: Path = Path("data")
    jwt_secret: str = ""
    jwt_refresh_secret: str = ""
    jwt_expires_in: float = 15 * 60
    jwt_refresh_expires_in: float = 7 * 86400
    jwt_issuer: str = "luman"
    jwt_audience: str = "luman-api"
    # Access tokens: EdDSA or ES256 with a signing key from the database (auth/key_ring.py),
    # or HS256 with JWT_SECRET (the seed's configuration: nothing is published in the JWKS).
    jwt_algorithm: str = "EdDSA"
    # Encrypts the signing keys' private halves at rest (auth/signing_keys.py).
    signing_key_secret: str = ""
    bcrypt_rounds: int = 10
    bcrypt_nice: int = 10
    # Sign-ins that may wait for a hash slot (auth/passwords.py), each on a worker thread of
    # its own on top of GRPC_MAX_WORKERS.
    bcrypt_max_waiting: int = 128
    # Verified-token cache (auth/token_cache.py); 0 seconds turns it off.
    token_cache_ttl: float = 30.0
    token_cache_max_entries: int = 10_000
    # Longest lifetime of a personal (CLI) token, in seconds; 0: no cap, tokens may not expire.
    max_token_lifetime: float = 0.0
    # Seconds in which a just-rotated refresh token gets the same new pair again instead of
    # revoking the sign-in (auth/service.py); 0 turns the grace off.
    refresh_reuse_grace_seconds: int = 10
    rate_limit_window_ms: int = 15 * 60 * 1000
    rate_limit_max_requests: int = 100
    auth_rate_limit_window_ms: int = 15 * 60 * 1000
    auth_rate_limit_max_requests: int = 5
    # IntrospectToken, per service account: enough to introspect every request a service serves.
    introspection_rate_limit_window_ms: int = 60 * 1000
    introspection_rate_limit_max_requests: int = 6000
    # CreateServiceToken, per client IP, apart from the sign-ins' bucket.
    service_token_rate_limit_window_ms: int = 15 * 60 * 1000
    service_token_rate_limit_max_requests: int = 60
    # Device login (RFC 8628, auth/device_logins.py): the clients allowed to start one, how
    # long its codes live and the poll interval; StartDeviceLogin and PollDeviceLogin per
    # client IP; wrong user codes per client IP and for the whole server.
    device_client_ids: tuple[str, ...] = ("luman-cli",)
    device_code_lifetime: float = 600.0
    device_poll_interval: int = 5
    device_start_rate_limit_window_ms: int = 15 * 60 * 1000
    device_start_rate_limit_max_requests: int = 30
    device_poll_rate_limit_window_ms: int = 15 * 60 * 1000
    device_poll_rate_limit_max_requests: int = 1800
    device_code_attempts_window_ms: int = 15 * 60 * 1000
    device_code_attempts_per_ip: int = 10
    device_code_attempts_per_account: int = 10
    device_code_attempts_global: int = 200
    # The address people reach the HTTP gateway at, for the device login's verification_uri;
    # empty: http://localhost:<HTTP_PORT> (development).
    public_url: str = ""
    trusted_proxies: tuple[str, ...] = ()
    # IPv6 clients are counted by network: one subscriber usually holds a whole /64.
    rate_limit_ipv6_prefix: int = 64
    rate_limit_redis_url: str = ""  # empty: counted in process (one replica)
    # INTROSPECTION_ORGANIZATIONS: the organizations (slugs, ids as str(UUID), or "*" for every
    # one) whose service accounts may hold the introspect scope; empty: nobody may introspect.
    introspection_organizations: frozenset[str] = frozenset()
    # Days a renamed organization's former slug keeps resolving to it (and stays reserved);
    # 0: the old slug is free at once.
    organization_slug_redirect_days: int = 30
    request_log_enabled: bool = True
    request_log_retention_days: int = 30
    # Entries held in memory while waiting to be written, through a database outage too
    # (request_logs/writer.py); past it, new entries are dropped and counted.
    request_log_max_queue: int = 100_000
    # Days of audit events to keep (audit/worker.py); 0 keeps them forever.
    audit_log_retention_days: int = 365
    # Mail (mail/): SMTP_URL is smtp:// (plain, a relay on the host), smtp+starttls:// (STARTTLS
    # required) or smtps:// (TLS from the start), with user:password@ when the relay wants
    # them. Unset outside production: messages go to MAIL_DIR (.eml files) or, without it, to
    # the log, with a warning. Production requires SMTP_URL.
    smtp_url: str = ""
    mail_from: str = "Luman <no-reply@localhost>"
    mail_dir: str = ""
    # How long a verification link and code, a password-reset link and code, and an invitation
    # stay valid.
    email_verification_ttl: float = 48 * 3600
    password_reset_ttl: float = 3600
    invitation_ttl: float = 7 * 86400
    # Pending invitations one organization may hold.
    max_pending_invitations: int = 500
    # SendVerificationEmail, VerifyEmail and RequestPasswordReset, per client IP.
    email_rate_limit_window_ms: int = 15 * 60 * 1000
    email_rate_limit_max_requests: int = 20
    # Sign-in through identity providers (federation/): IDENTITY_PROVIDERS and the IDP_<ID>_*
    # variables (federation/providers.py); none by default. PASSWORD_LOGIN=false refuses
    # Register, Login and CliLogin: accounts sign in through a provider only.
    identity_providers: tuple[ProviderConfig, ...] = ()
    password_login: bool = True
    # How long a provider sign-in may take between StartProviderLogin and its completion (and
    # a link_required answer stays usable).
    provider_login_ttl: float = 600.0
    # StartProviderLogin and CompleteProviderLogin, per client IP.
    provider_login_rate_limit_window_ms: int = 15 * 60 * 1000
    provider_login_rate_limit_max_requests: int = 60
    cors_origin: str = "http://localhost:3000"
    http_port: int = 8080
    http_max_body_bytes: int = 64 * 1024
    max_workers: int = 16
    max_concurrent_rpcs: int = 256
    max_message_bytes: int = 64 * 1024
    # Largest shared organization configuration as canonical JSON (organization/
    # config_service.py); at most half of GRPC_MAX_MESSAGE_BYTES, which leaves the room a
    # Struct's binary encoding takes beyond the JSON.
    organization_config_max_bytes: int = 32 * 1024
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"
    # "text" (one line for people) or "json" (one JSON object per line, for log collectors).
    log_format: str = "text"
    # TLS on both ports (PEM files; reloaded on SIGHUP); empty: plaintext. With TLS, HTTP
    # responses carry Strict-Transport-Security unless HSTS is false. TLS_CLIENT_CA_FILE asks
    # callers for a client certificate signed by that CA (optional for them) on the HTTP port,
    # and serves gRPC for callers that present one on MTLS_PORT (required there: grpcio cannot
    # ask for a certificate without requiring it). A certificate that names a service account
    # (SAN URI urn:luman:service-account:<id>) authenticates as that account (tls.py).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    mtls_port: int | None = None
    hsts: bool = True
    # Prometheus metrics: GET /metrics on the HTTP port, or on a port of their own when
    # METRICS_PORT is set (keeps them off the public port); METRICS_ENABLED=false: none.
    metrics_enabled: bool = True
    metrics_port: int | None = None
    # Where the METRICS_PORT listener binds: loopback unless told otherwise (a scraper on
    # another host needs METRICS_HOST=0.0.0.0 or the host's private address).
    metrics_host: str = "127.0.0.1"
    # OpenTelemetry tracing from the standard OTEL_* variables (tracing.py); None: off, the
    # default unless OTEL_EXPORTER_OTLP_ENDPOINT or another of them says where spans go.
    tracing: TracingConfig | None = None
    # Not from the environment: a worker of `serve --workers N` (supervisor.py) is told its
    # slot, 0..N-1, and then binds with SO_REUSEPORT. None: a single `serve`.
    worker_slot: int | None = None

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default: os.environ plus ./.env).

        Raises:
            ConfigError: naming the first bad variable.
        """
        env = dict(_dotenv() if environ is None else {})
        env.update(os.environ if environ is None else environ)
        r = _Reader(env)
        data_dir = Path(r.text("LUMAN_DATA_DIR", "data"))
        try:
            tracing = tracing_config(env)
        except TracingConfigError as exc:
            raise ConfigError(str(exc)) from None
        try:
            identity_providers = providers_from_env(env)
        except ProviderConfigError as exc:
            raise ConfigError(str(exc)) from None
        settings = cls(
            env=r.choice("LUMAN_ENV", "development", ("development", "production", "test")),
            host=r.text("HOST", cls.host),
            port=r.integer("PORT", 3000, 0, 65535),
            database_url=r.text("DATABASE_URL", f"sqlite:///{data_dir / 'luman.db'}"),
            embedded_database=r.text("DATABASE_URL", "") == "",
            data_dir=data_dir,
            jwt_secret=r.text("JWT_SECRET", ""),
            jwt_refresh_secret=r.text("JWT_REFRESH_SECRET", ""),
            jwt_expires_in=r.duration("JWT_EXPIRES_IN", "15m"),
            jwt_refresh_expires_in=r.duration("JWT_REFRESH_EXPIRES_IN", "7d"),
            jwt_issuer=r.text("JWT_ISSUER", cls.jwt_issuer),
            jwt_audience=r.text("JWT_AUDIENCE", cls.jwt_audience),
            jwt_algorithm=_jwt_algorithm(r.text("JWT_ALGORITHM", cls.jwt_algorithm)),
            signing_key_secret=r.text("SIGNING_KEY_SECRET", ""),
            bcrypt_rounds=r.integer("BCRYPT_ROUNDS", 10, 4, 16),
            bcrypt_nice=r.integer("BCRYPT_NICE", 10, 0, 19),
            bcrypt_max_waiting=r.integer("BCRYPT_MAX_WAITING", 128, 0, 10000),
            # 0 is allowed here only: it turns the cache off. At most an hour, because while
            # the invalidation channel is down a revocation on another replica goes unnoticed
            # for up to this long.
            token_cache_ttl=r.duration("TOKEN_CACHE_TTL", "30s", allow_zero=True, most=3600),
            token_cache_max_entries=r.integer("TOKEN_CACHE_MAX_ENTRIES", 10000, 1, 10**7),
            # 0: no cap. At most 10 years, so that now + the cap always fits a timestamp.
            max_token_lifetime=r.duration(
                "MAX_TOKEN_LIFETIME", "0", allow_zero=True, most=3650 * 86400
            ),
            # At most a minute: within the grace a copied refresh token gets the same pair as
            # its owner instead of tripping reuse detection, so the window stays short.
            refresh_reuse_grace_seconds=r.integer("REFRESH_REUSE_GRACE_SECONDS", 10, 0, 60),
            # A policy with max requests 0 (or window 0) is disabled.
            rate_limit_window_ms=r.integer("RATE_LIMIT_WINDOW_MS", 900000, 0, 86400000),
            rate_limit_max_requests=r.integer("RATE_LIMIT_MAX_REQUESTS", 100, 0, 10**9),
            auth_rate_limit_window_ms=r.integer("AUTH_RATE_LIMIT_WINDOW_MS", 900000, 0, 86400000),
            auth_rate_limit_max_requests=r.integer("AUTH_RATE_LIMIT_MAX_REQUESTS", 5, 0, 10**9),
            introspection_rate_limit_window_ms=r.integer(
                "INTROSPECTION_RATE_LIMIT_WINDOW_MS", 60000, 0, 86400000
            ),
            introspection_rate_limit_max_requests=r.integer(
                "INTROSPECTION_RATE_LIMIT_MAX_REQUESTS", 6000, 0, 10**9
            ),
            service_token_rate_limit_window_ms=r.integer(
                "SERVICE_TOKEN_RATE_LIMIT_WINDOW_MS", 900000, 0, 86400000
            ),
            service_token_rate_limit_max_requests=r.integer(
                "SERVICE_TOKEN_RATE_LIMIT_MAX_REQUESTS", 60, 0, 10**9
            ),
            device_client_ids=r.items("DEVICE_CLIENT_IDS") or cls.device_client_ids,
            # At most an hour: a pending login is a code someone may still phish with.
            device_code_lifetime=r.duration("DEVICE_CODE_LIFETIME", "10m", most=3600),
            device_poll_interval=r.integer("DEVICE_POLL_INTERVAL", 5, 1, 60),
            device_start_rate_limit_window_ms=r.integer(
                "DEVICE_START_RATE_LIMIT_WINDOW_MS", 900000, 0, 86400000
            ),
            device_start_rate_limit_max_requests=r.integer(
                "DEVICE_START_RATE_LIMIT_MAX_REQUESTS", 30, 0, 10**9
            ),
            device_poll_rate_limit_window_ms=r.integer(
                "DEVICE_POLL_RATE_LIMIT_WINDOW_MS", 900000, 0, 86400000
            ),
            device_poll_rate_limit_max_requests=r.integer(
                "DEVICE_POLL_RATE_LIMIT_MAX_REQUESTS", 1800, 0, 10**9
            ),
            device_code_attempts_window_ms=r.integer(
                "DEVICE_CODE_ATTEMPTS_WINDOW_MS", 900000, 0, 86400000
            ),
            device_code_attempts_per_ip=r.integer("DEVICE_CODE_ATTEMPTS_PER_IP", 10, 0, 10**6),
            device_code_attempts_per_account=r.integer(
                "DEVICE_CODE_ATTEMPTS_PER_ACCOUNT", 10, 0, 10**6
            ),
            device_code_attempts_global=r.integer("DEVICE_CODE_ATTEMPTS_GLOBAL", 200, 0, 10**9),
            public_url=_public_url(r.text("PUBLIC_URL", "")),
            trusted_proxies=r.networks("TRUSTED_PROXIES"),
            rate_limit_ipv6_prefix=r.integer("RATE_LIMIT_IPV6_PREFIX", 64, 1, 128),
            rate_limit_redis_url=r.redis_url("RATE_LIMIT_REDIS_URL"),
            introspection_organizations=r.organizations("INTROSPECTION_ORGANIZATIONS"),
            organization_slug_redirect_days=r.integer(
                "ORGANIZATION_SLUG_REDIRECT_DAYS", 30, 0, 3650
            ),
            request_log_enabled=r.flag("REQUEST_LOG_ENABLED", True),
            request_log_retention_days=r.integer("REQUEST_LOG_RETENTION_DAYS", 30, 0, 36500),
            request_log_max_queue=r.integer("REQUEST_LOG_MAX_QUEUE", 100000, 1000, 10**7),
            audit_log_retention_days=r.integer("AUDIT_LOG_RETENTION_DAYS", 365, 0, 36500),
            smtp_url=_smtp_url(r.text("SMTP_URL", "")),
            mail_from=r.text("MAIL_FROM", cls.mail_from),
            mail_dir=r.text("MAIL_DIR", ""),
            email_verification_ttl=r.duration("EMAIL_VERIFICATION_TTL", "48h", most=30 * 86400),
            # At most a day: a reset link is a password for whoever holds the mailbox copy.
            password_reset_ttl=r.duration("PASSWORD_RESET_TTL", "1h", most=86400),
            invitation_ttl=r.duration("INVITATION_TTL", "7d", most=90 * 86400),
            max_pending_invitations=r.integer("MAX_PENDING_INVITATIONS", 500, 1, 100000),
            email_rate_limit_window_ms=r.integer("EMAIL_RATE_LIMIT_WINDOW_MS", 900000, 0, 86400000),
            email_rate_limit_max_requests=r.integer("EMAIL_RATE_LIMIT_MAX_REQUESTS", 20, 0, 10**9),
            identity_providers=identity_providers,
            password_login=r.flag("PASSWORD_LOGIN", True),
            # At most an hour: a pending sign-in holds a PKCE verifier.
            provider_login_ttl=r.duration("PROVIDER_LOGIN_TTL", "10m", most=3600),
            provider_login_rate_limit_window_ms=r.integer(
                "PROVIDER_LOGIN_RATE_LIMIT_WINDOW_MS", 900000, 0, 86400000
            ),
            provider_login_rate_limit_max_requests=r.integer(
                "PROVIDER_LOGIN_RATE_LIMIT_MAX_REQUESTS", 60, 0, 10**9
            ),
            cors_origin=r.text("CORS_ORIGIN", cls.cors_origin),
            http_port=r.integer("HTTP_PORT", 8080, 0, 65535),
            http_max_body_bytes=r.integer("HTTP_MAX_BODY_BYTES", 65536, 1024, 16 * 1024 * 1024),
            max_workers=r.integer("GRPC_MAX_WORKERS", 16, 1, 1024),
            max_concurrent_rpcs=r.integer("GRPC_MAX_CONCURRENT_RPCS", 256, 1, 100000),
            max_message_bytes=r.integer("GRPC_MAX_MESSAGE_BYTES", 65536, 1024, 16 * 1024 * 1024),
            organization_config_max_bytes=r.integer(
                "ORGANIZATION_CONFIG_MAX_BYTES", 32768, 2, 8 * 1024 * 1024
            ),
            shutdown_grace_seconds=r.duration("SHUTDOWN_GRACE_PERIOD", "10s"),
            log_level=r.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_format=r.choice("LOG_FORMAT", "text", ("text", "json")),
            tls_cert_file=r.text("TLS_CERT_FILE", ""),
            tls_key_file=r.text("TLS_KEY_FILE", ""),
            tls_client_ca_file=r.text("TLS_CLIENT_CA_FILE", ""),
            mtls_port=r.integer("MTLS_PORT", 0, 0, 65535) if r.text("MTLS_PORT", "") else None,
            hsts=r.flag("HSTS", True),
            metrics_enabled=r.flag("METRICS_ENABLED", True),
            metrics_host=r.text("METRICS_HOST", "127.0.0.1"),
            metrics_port=(
                r.integer("METRICS_PORT", 0, 0, 65535) if r.text("METRICS_PORT", "") else None
            ),
            tracing=tracing,
        )
        if settings.bcrypt_max_waiting + settings.max_workers > settings.max_concurrent_rpcs:
            # Waiting sign-ins count as RPCs in progress: they must leave other calls room.
            raise ConfigError(
                f"BCRYPT_MAX_WAITING ({settings.bcrypt_max_waiting}) plus GRPC_MAX_WORKERS "
                f"({settings.max_workers}) must be at most GRPC_MAX_CONCURRENT_RPCS "
                f"({settings.max_concurrent_rpcs})"
            )
        if settings.organization_config_max_bytes > settings.max_message_bytes // 2:
            raise ConfigError(
                "ORGANIZATION_CONFIG_MAX_BYTES "
                f"({settings.organization_config_max_bytes}) must be at most half of "
                f"GRPC_MAX_MESSAGE_BYTES ({settings.max_message_bytes})"
            )
        if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
            raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both, or neither")
        if settings.tls_client_ca_file and not settings.tls_cert_file:
            raise ConfigError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE")
        if settings.mtls_port is not None and not settings.tls_client_ca_file:
            raise ConfigError(
                "MTLS_PORT needs TLS_CLIENT_CA_FILE (and TLS_CERT_FILE, TLS_KEY_FILE)"
            )
        if not settings.password_login and not settings.identity_providers:
            raise ConfigError(
                "PASSWORD_LOGIN=false needs IDENTITY_PROVIDERS: nobody could sign in otherwise"
            )
        settings = settings.with_secrets()
        if settings.production and not settings.smtp_url:
            raise ConfigError(
                "SMTP_URL is required when LUMAN_ENV=production: verification, password-reset "
                "and invitation emails must reach people"
            )
        if settings.production and not settings.public_url:
            raise ConfigError(
                "PUBLIC_URL is required when LUMAN_ENV=production: the links in emails and the "
                "device login's verification_uri must reach people"
            )
        return settings

    def with_secrets(self) -> Settings:
        """Check the JWT secrets; outside production, fill missing ones from the data folder."""
        # JWT_SECRET signs access tokens under HS256 only; with EdDSA or ES256 nothing reads
        # it (refresh tokens use JWT_REFRESH_SECRET), so production does not ask for it.
        jwt_secret_needed = self.jwt_algorithm == "HS256"
        for name, value, needed in (
            ("JWT_SECRET", self.jwt_secret, jwt_secret_needed),
            ("JWT_REFRESH_SECRET", self.jwt_refresh_secret, True),
        ):
            if value and len(value.encode()) < MIN_SECRET_BYTES and self.production:
                raise ConfigError(f"{name} must be at least {MIN_SECRET_BYTES} bytes in production")
            if not value and needed and self.production:
                raise ConfigError(
                    f"{name} is required when LUMAN_ENV=production"
                    + (" and JWT_ALGORITHM=HS256" if name == "JWT_SECRET" else "")
                )
        if self.jwt_secret and self.jwt_secret == self.jwt_refresh_secret:
            raise ConfigError("JWT_REFRESH_SECRET must differ from JWT_SECRET")
        # HS256 signs with JWT_SECRET: there are no signing keys to encrypt.
        signing_key_secret_needed = self.jwt_algorithm != "HS256"
        if signing_key_secret_needed and self.production:
            if not self.signing_key_secret:
                raise ConfigError("SIGNING_KEY_SECRET is required when LUMAN_ENV=production")
            if len(self.signing_key_secret.encode()) < MIN_SECRET_BYTES:
                raise ConfigError(
                    f"SIGNING_KEY_SECRET must be at least {MIN_SECRET_BYTES} bytes in production"
                )
        if (
            (self.jwt_secret or not jwt_secret_needed)
            and self.jwt_refresh_secret
            and (self.signing_key_secret or not signing_key_secret_needed)
        ):
            return self
        stored = _development_secrets(self.data_dir)
        return dataclasses.replace(
            self,
            jwt_secret=self.jwt_secret or stored["jwt_secret"],
            jwt_refresh_secret=self.jwt_refresh_secret or stored["jwt_refresh_secret"],
            signing_key_secret=self.signing_key_secret or stored["signing_key_secret"],
        )


def _development_secrets(data_dir: Path) -> dict[str, str]:
    path = data_dir / "dev-secrets.json"
    names = ("jwt_secret", "jwt_refresh_secret", "signing_key_secret")
    kept: dict[str, str] = {}
    try:
        stored = json.loads(path.read_text())
        if isinstance(stored, dict):
            kept = {
                k: stored[k]
                for k in names
                if isinstance(stored.get(k), str) and len(stored[k]) >= MIN_SECRET_BYTES
            }
        if len(kept) == len(names):
            return kept
        if set(kept) != set(names[:2]):
            kept = {}
        # else: a file from before signing keys; keep its JWT secrets (signed-in users stay
        # signed in) and add the signing-key secret.
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"JWT_SECRET is unset and {path} is unreadable: {exc}") from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    stored = {name: kept.get(name) or secrets.token_urlsafe(48) for name in names}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(stored, fh)
    os.replace(tmp, path)
    logger.warning(
        "JWT_SECRET/JWT_REFRESH_SECRET/SIGNING_KEY_SECRET are unset: generated development "
        "secrets in %s; set them (32+ bytes) and LUMAN_ENV=production for a real deployment",
        path,
    )
    return stored


_SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")


def _smtp_url(value: str) -> str:
    """smtp://, smtp+starttls:// or smtps://[user:password@]host[:port]; the password is never
    repeated in an error."""
    if not value:
        return value
    parts = urllib.parse.urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in _SMTP_SCHEMES
        or not parts.hostname
        or port == -1
        or parts.path not in ("", "/")
    ):
        raise ConfigError(
            "SMTP_URL must be smtp://, smtp+starttls:// or smtps:// followed by "
            "[user:password@]host[:port], got one with scheme "
            f"{parts.scheme!r} and host {parts.hostname!r}"
        )
    if parts.scheme == "smtp" and parts.username and not _is_loopback(parts.hostname):
        raise ConfigError(
            "SMTP_URL: smtp:// sends the user and password in clear text; use "
            "smtp+starttls:// or smtps:// for a mail server that is not on this host"
        )
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_JWT_ALGORITHMS = {"eddsa": "EdDSA", "es256": "ES256", "hs256": "HS256"}


def _public_url(value: str) -> str:
    """An origin, http(s)://host[:port]: the device page's links and cookies live at /device of
    it, so a path prefix (a proxy serving the gateway under /luman) would break them."""
    value = value.strip().rstrip("/")
    if not value:
        return value
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise ConfigError(
            "PUBLIC_URL must be an http:// or https:// origin (scheme, host and optional port, "
            f"no path or query), got {value!r}"
        )
    return value


def _jwt_algorithm(value: str) -> str:
    try:
        return _JWT_ALGORITHMS[value.lower()]
    except KeyError:
        raise ConfigError(
            f"JWT_ALGORITHM must be one of EdDSA, ES256, HS256, got {value!r}"
        ) from None


def _dotenv() -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(".env").items() if v is not None}


class _Reader:
    """Parses one variable at a time and raises ConfigError naming it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {number}")
        return number

    def duration(
        self, name: str, default: str, *, allow_zero: bool = False, most: float | None = None
    ) -> float:
        """Durations as in the seed: '15m', '7d', '30s', '500ms', or plain seconds.

        Zero is refused unless `allow_zero` (for settings where 0 means "off"); `most` caps
        the value in seconds.
        """
        value = self._raw(name) or default
        match = _DURATION.match(value)
        if not match or (int(match.group(1)) == 0 and not allow_zero):
            kind = "a duration" if allow_zero else "a positive duration"
            raise ConfigError(f"{name} must be {kind} such as 30s, 15m, 12h or 7d, got {value!r}")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if most is not None and seconds > most:
            raise ConfigError(f"{name} must be at most {most:g} seconds, got {value!r}")
        return seconds

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in ("true", "1", "yes", "on"):
            return True
        if value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._raw(name)
        if value is None:
            return default
        normalised = value.upper() if default.isupper() else value.lower()
        if normalised not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return normalised

    def items(self, name: str) -> tuple[str, ...]:
        value = self._raw(name)
        return () if value is None else tuple(p.strip() for p in value.split(",") if p.strip())

    def organizations(self, name: str) -> frozenset[str]:
        """Comma-separated organization ids, or `*` alone (every organization). Not slugs:
        anyone can create an organization with a slug that is not taken yet, or whose slug is
        another organization's id (auth/introspection_policy.py)."""
        items = self.items(name)
        if "*" in items:
            if len(items) != 1:
                raise ConfigError(f"{name}: '*' (every organization) stands alone, got {items!r}")
            return frozenset(items)
        parsed = set()
        for item in items:
            try:
                parsed.add(str(uuid.UUID(item)))  # one spelling, as str(organization.id)
            except ValueError:
                raise ConfigError(
                    f"{name} must list organization ids (UUIDs; `luman org list --json` shows "
                    f"them), not slugs, which anyone can claim: got {item!r}"
                ) from None
        return frozenset(parsed)

    def redis_url(self, name: str) -> str:
        value = self.text(name, "")
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"{name} must be a redis://, rediss:// or unix:// URL")
        return value

    def networks(self, name: str) -> tuple[str, ...]:
        """Comma-separated IP addresses or CIDRs, normalised ('10.0.0.7' -> '10.0.0.7/32')."""
        networks = []
        for item in self.items(name):
            try:
                networks.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ConfigError(
                    f"{name} must be comma-separated IP addresses or CIDRs, got {item!r}"
                ) from None
        return tuple(networks)
