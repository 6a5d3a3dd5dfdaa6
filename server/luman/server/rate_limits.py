"""Rate-limit wiring: settings and the `(luman.api.v1.access)` policies -> the two stages.

The per-IP stage runs before token authentication: auth-policy RPCs (Register, Login, CliLogin,
RefreshToken: the ones that hash passwords), service-token-policy RPCs (CreateServiceToken, in
a bucket of its own) and every call without a valid token count per client address before
anything touches the database. The per-user stage runs after it and counts default-policy calls
per verified user, and introspection-policy calls (IntrospectToken) per service account in a
bucket of their own (see luman.interceptors.rate_limit).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from luman.api.v1 import annotations_pb2
from luman.auth.v1 import auth_service_pb2
from luman.interceptors import rate_limit_sqlite
from luman.interceptors.errors import UnauthenticatedError
from luman.interceptors.rate_limit import (
    AccountLimit,
    ClientRateLimitInterceptor,
    Policy,
    RateLimiter,
    SlidingWindowLimiter,
    UserRateLimitInterceptor,
)
from luman.interceptors.token_auth import client_certificate
from luman.server import methods, supervisor
from luman.server.config import Settings
from luman.server.validation import normalize_email

_AUTH_SERVICE = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"]
# Sign-ins that take an email and password; their failures also count per account.
# (methods_by_name fails at import if one is ever renamed.)
SIGN_IN_METHODS = frozenset(
    methods.method_path(_AUTH_SERVICE, _AUTH_SERVICE.methods_by_name[name].name)
    for name in ("Login", "CliLogin")
)


def build_limiters(
    settings: Settings,
    monotonic: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> tuple[dict[Policy, RateLimiter], RateLimiter | None]:
    """One limiter per enabled policy (max requests 0 or window 0 disables one), plus the
    per-account sign-in limiter that shares the auth policy's numbers.

    In process by default; in Redis when RATE_LIMIT_REDIS_URL is set, so that replicas share
    their counts (Redis keys use wall-clock time: replicas share no monotonic clock).
    """
    limiter = limiter_factory(settings, monotonic, wall)
    limiters: dict[Policy, RateLimiter] = {}
    for policy, limit, window_ms in (
        (Policy.AUTH, settings.auth_rate_limit_max_requests, settings.auth_rate_limit_window_ms),
        (Policy.DEFAULT, settings.rate_limit_max_requests, settings.rate_limit_window_ms),
        (
            Policy.INTROSPECTION,
            settings.introspection_rate_limit_max_requests,
            settings.introspection_rate_limit_window_ms,
        ),
        (
            Policy.SERVICE_TOKEN,
            settings.service_token_rate_limit_max_requests,
            settings.service_token_rate_limit_window_ms,
        ),
        (
            Policy.DEVICE_START,
            settings.device_start_rate_limit_max_requests,
            settings.device_start_rate_limit_window_ms,
        ),
        (
            Policy.DEVICE_POLL,
            settings.device_poll_rate_limit_max_requests,
            settings.device_poll_rate_limit_window_ms,
        ),
        (Policy.EMAIL, settings.email_rate_limit_max_requests, settings.email_rate_limit_window_ms),
        (
            Policy.PROVIDER_LOGIN,
            settings.provider_login_rate_limit_max_requests,
            settings.provider_login_rate_limit_window_ms,
        ),
    ):
        if limit > 0 and window_ms > 0:
            limiters[policy] = limiter(policy.value, limit, window_ms / 1000)
    auth = limiters.get(Policy.AUTH)
    accounts = limiter("account", auth.limit, auth.window) if auth is not None else None
    return limiters, accounts


def limiter_factory(
    settings: Settings, monotonic: Callable[[], float], wall: Callable[[], float]
) -> Callable[[str, int, float], RateLimiter]:
    """`(name, limit, window seconds) -> RateLimiter`: in process, or in Redis under
    luman:ratelimit:<name>: when RATE_LIMIT_REDIS_URL is set, or else, in the workers of
    `serve --workers N`, in the SQLite file they share (rate_limit_sqlite.py says why)."""
    client = None
    shared = None
    if settings.rate_limit_redis_url:
        from luman.interceptors import rate_limit_redis

        client = rate_limit_redis.redis_client(settings.rate_limit_redis_url)
    elif (path := supervisor.rate_limit_store(settings)) is not None:
        shared = rate_limit_sqlite.SqliteStore(path, clock=wall)

    def limiter(name: str, limit: int, window: float) -> RateLimiter:
        if shared is not None:
            return rate_limit_sqlite.SqliteSlidingWindowLimiter(shared, name, limit, window)
        if client is None:
            return SlidingWindowLimiter(limit, window, monotonic)
        return rate_limit_redis.RedisSlidingWindowLimiter(
            client, limit, window, prefix=f"luman:ratelimit:{name}:", clock=wall
        )

    return limiter


def build_code_attempt_limiters(
    settings: Settings,
    monotonic: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> tuple[RateLimiter | None, RateLimiter | None, RateLimiter | None]:
    """The limiters of wrong device-login user codes: per client IP, per account, and for the
    whole server (auth/device_logins.py). None where disabled (0)."""
    limiter = limiter_factory(settings, monotonic, wall)
    window = settings.device_code_attempts_window_ms / 1000
    if window <= 0:
        return None, None, None
    budgets = (
        ("device_code_ip", settings.device_code_attempts_per_ip),
        ("device_code_account", settings.device_code_attempts_per_account),
        ("device_code_global", settings.device_code_attempts_global),
    )
    per_ip, per_account, overall = (
        limiter(name, limit, window) if limit > 0 else None for name, limit in budgets
    )
    return per_ip, per_account, overall


def build_rate_limit_stages(
    settings: Settings,
    public_methods: frozenset[str],
    monotonic: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> tuple[ClientRateLimitInterceptor, UserRateLimitInterceptor]:
    """The per-IP stage (before token authentication) and the per-user stage (after it);
    `public_methods` are the ones token authentication lets through without a token."""
    limiters, account_limiter = build_limiters(settings, monotonic, wall)
    accounts = None
    if account_limiter is not None:
        accounts = AccountLimit(
            limiter=account_limiter,
            key_of=sign_in_account,
            is_failure=is_failed_sign_in,
            methods=SIGN_IN_METHODS,
        )
    policy_of = policy_resolver()
    # Introspection's own budget is for callers whose service token checked out; one without
    # a valid token is counted per address like any other (the default policy's numbers).
    per_ip_limiters: dict[Policy, RateLimiter] = {
        policy: each for policy, each in limiters.items() if policy is not Policy.INTROSPECTION
    }
    if Policy.DEFAULT in limiters:
        per_ip_limiters[Policy.INTROSPECTION] = limiters[Policy.DEFAULT]
    per_ip = ClientRateLimitInterceptor(
        policy_of=policy_of,
        limiters=per_ip_limiters,
        public_methods=public_methods,
        ipv6_prefix=settings.rate_limit_ipv6_prefix,
        accounts=accounts,
        has_certificate=(
            (lambda context: client_certificate(context) is not None)
            if settings.tls_client_ca_file
            else None
        ),
    )
    per_user = UserRateLimitInterceptor(
        policy_of=policy_of,
        limiter=limiters.get(Policy.DEFAULT),
        public_methods=public_methods,
        introspection=limiters.get(Policy.INTROSPECTION),
    )
    return per_ip, per_user


# The contract's policies; UNSPECIFIED and DEFAULT are the default policy.
_POLICIES = {
    annotations_pb2.RATE_LIMIT_POLICY_AUTH: Policy.AUTH,
    annotations_pb2.RATE_LIMIT_POLICY_INTROSPECTION: Policy.INTROSPECTION,
    annotations_pb2.RATE_LIMIT_POLICY_SERVICE_TOKEN: Policy.SERVICE_TOKEN,
    annotations_pb2.RATE_LIMIT_POLICY_DEVICE_START: Policy.DEVICE_START,
    annotations_pb2.RATE_LIMIT_POLICY_DEVICE_POLL: Policy.DEVICE_POLL,
    annotations_pb2.RATE_LIMIT_POLICY_EMAIL: Policy.EMAIL,
    annotations_pb2.RATE_LIMIT_POLICY_PROVIDER_LOGIN: Policy.PROVIDER_LOGIN,
}


def policy_resolver() -> Callable[[str], Policy | None]:
    table = {
        name: _POLICIES.get(policy.rate_limit, Policy.DEFAULT)
        for name, policy in methods.policies().items()
    }

    def policy_of(method_name: str) -> Policy | None:
        if methods.is_infrastructure(method_name):
            return None
        return table.get(method_name, Policy.DEFAULT)

    return policy_of


def sign_in_account(method_name: str, request: Any) -> str | None:
    """The account a sign-in targets, as a key that does not keep the email in memory."""
    if method_name not in SIGN_IN_METHODS:
        return None
    email = normalize_email(getattr(request, "email", ""))
    if not email:
        return None
    return "account:" + hashlib.sha256(email.encode()).hexdigest()


def is_failed_sign_in(exc: BaseException) -> bool:
    return isinstance(exc, UnauthenticatedError) and exc.reason == "INVALID_CREDENTIALS"
