"""Access and refresh JWTs, and CLI token secrets.

JWTs: HS256 with separate secrets for access and refresh tokens. Verification pins the
algorithm, requires every registered claim we issue, checks issuer and audience, checks the
`typ` claim ourselves (PyJWT does not), and checks expiry against the injected clock.
CLI tokens: "lmn_" + 256 random bits; only their SHA-256 is stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
import uuid
from typing import Any, Literal

import jwt

from luman.interceptors.errors import UnauthenticatedError
from luman.server.clock import Clock
from luman.server.config import Settings

ALGORITHM = "HS256"
CLI_TOKEN_PREFIX = "lmn_"  # noqa: S105 - a prefix, not a secret
_REQUIRED = ["exp", "iat", "sub", "jti", "iss", "aud", "typ", "sid"]
_CLOCK_SKEW = dt.timedelta(seconds=60)

TokenType = Literal["access", "refresh"]


@dataclasses.dataclass(frozen=True)
class Claims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    jti: uuid.UUID
    expire_time: dt.datetime


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: uuid.UUID
    expire_time: dt.datetime


class TokenCodec:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._secrets: dict[TokenType, str] = {
            "access": settings.jwt_secret,
            "refresh": settings.jwt_refresh_secret,
        }
        self._lifetimes: dict[TokenType, dt.timedelta] = {
            "access": dt.timedelta(seconds=settings.jwt_expires_in),
            "refresh": dt.timedelta(seconds=settings.jwt_refresh_expires_in),
        }
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._clock = clock

    def issue(self, kind: TokenType, user_id: uuid.UUID, session_id: uuid.UUID) -> IssuedToken:
        now = self._clock()
        expire_time = now + self._lifetimes[kind]
        jti = uuid.uuid4()
        claims = {
            "sub": str(user_id),
            "sid": str(session_id),
            "jti": str(jti),
            "typ": kind,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": int(now.timestamp()),
            "exp": int(expire_time.timestamp()),
        }
        token = jwt.encode(claims, self._secrets[kind], algorithm=ALGORITHM)
        return IssuedToken(token, jti, dt.datetime.fromtimestamp(claims["exp"], dt.UTC))  # type: ignore[arg-type]

    def verify(self, kind: TokenType, token: str) -> Claims:
        """Decode and check `token` as a `kind` token.

        Raises:
            UnauthenticatedError: TOKEN_EXPIRED, or TOKEN_INVALID for every other failure.
        """
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secrets[kind],
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                # Expiry is checked below against the injected clock, not PyJWT's.
                options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            raise _invalid() from None
        if claims.get("typ") != kind:
            raise _invalid()
        exp, iat = claims["exp"], claims["iat"]
        if not _is_number(exp) or not _is_number(iat):
            raise _invalid()
        now = self._clock().timestamp()
        if iat > now + _CLOCK_SKEW.total_seconds():
            raise _invalid()
        if now >= exp:
            raise UnauthenticatedError("TOKEN_EXPIRED", f"{kind} token has expired")
        try:
            return Claims(
                user_id=uuid.UUID(claims["sub"]),
                session_id=uuid.UUID(claims["sid"]),
                jti=uuid.UUID(claims["jti"]),
                expire_time=dt.datetime.fromtimestamp(exp, dt.UTC),
            )
        except (TypeError, ValueError, AttributeError, OverflowError, OSError):
            # OverflowError/OSError: a validly signed exp no datetime can hold (1e20).
            raise _invalid() from None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _invalid() -> UnauthenticatedError:
    return UnauthenticatedError("TOKEN_INVALID", "invalid token")


def new_cli_token() -> tuple[str, str]:
    """Return (secret, sha256 hex of the secret)."""
    secret = CLI_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return secret, hash_cli_token(secret)


def hash_cli_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_cli_token(token: str) -> bool:
    return token.startswith(CLI_TOKEN_PREFIX)
