"""Access and refresh JWTs, and telling CLI tokens from them.

JWTs: access tokens are signed with the active signing key (EdDSA or ES256, key_ring.py) and
carry its `kid`; with JWT_ALGORITHM=HS256 they are signed with JWT_SECRET as in the seed.
Refresh tokens stay HS256 with JWT_REFRESH_SECRET: only this server ever verifies them, so
publishing a key for them would buy nothing, and HMAC is the cheaper check. Verification pins
the algorithm (the key's own, looked up by the token's kid: a token cannot pick it), requires
every registered claim we issue, checks issuer and audience, checks the `typ` claim ourselves
(PyJWT does not), and checks expiry against the injected clock.
CLI tokens: their format and checksum live in luman.client.token_format, their management in
cli_tokens.py; only the prefix is needed here, to tell them from JWTs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any, Literal

import jwt

from luman.interceptors.errors import UnauthenticatedError
from luman.server.clock import Clock
from luman.server.config import Settings

if TYPE_CHECKING:
    from luman.server.auth.key_ring import KeyRing

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
    # iat: LogoutAll refuses tokens issued before the user's not-before time (auth/sessions.py).
    issue_time: dt.datetime
    # When the key that signed the token retires (key_ring.py); None: not scheduled, or HS256.
    key_retire_time: dt.datetime | None = None

    @property
    def believed_until(self) -> dt.datetime:
        """How long a cache may believe this check: until expiry or the key's retirement."""
        if self.key_retire_time is not None and self.key_retire_time < self.expire_time:
            return self.key_retire_time
        return self.expire_time


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: uuid.UUID
    expire_time: dt.datetime


class TokenCodec:
    """Args:
    keys: the signing keys for access tokens; None: access tokens use HS256 and JWT_SECRET.
    """

    def __init__(self, settings: Settings, clock: Clock, keys: KeyRing | None = None) -> None:
        self._keys = keys
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

    def issue(
        self,
        kind: TokenType,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        *,
        jti: uuid.UUID | None = None,
        issue_time: dt.datetime | None = None,
    ) -> IssuedToken:
        """Sign a new token; `jti` and `issue_time` (default: fresh, the clock) let the refresh
        grace issue the same claims again (auth/service.py)."""
        now = self._clock() if issue_time is None else issue_time
        expire_time = now + self._lifetimes[kind]
        jti = uuid.uuid4() if jti is None else jti
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
        if kind == "access" and self._keys is not None:
            key = self._keys.signing_key()
            assert key.private_key is not None  # signing_key() returns decrypted keys only
            token = jwt.encode(
                claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid}
            )
        else:
            token = jwt.encode(claims, self._secrets[kind], algorithm=ALGORITHM)
        return IssuedToken(token, jti, dt.datetime.fromtimestamp(claims["exp"], dt.UTC))  # type: ignore[arg-type]

    def verify(self, kind: TokenType, token: str) -> Claims:
        """Decode and check `token` as a `kind` token.

        Raises:
            UnauthenticatedError: TOKEN_EXPIRED, or TOKEN_INVALID for every other failure.
        """
        # Expiry is checked below against the injected clock, not PyJWT's.
        claims, key_retire_time = self._decode(kind, token, _REQUIRED)
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
                issue_time=dt.datetime.fromtimestamp(iat, dt.UTC),
                key_retire_time=key_retire_time,
            )
        except (TypeError, ValueError, AttributeError, OverflowError, OSError):
            # OverflowError/OSError: a validly signed exp no datetime can hold (1e20).
            raise _invalid() from None

    # Service accounts' access tokens (auth/service_tokens.py) are signed and checked with the
    # same keys, issuer and audience as users' access tokens; these two are their way in.

    @property
    def access_lifetime(self) -> dt.timedelta:
        return self._lifetimes["access"]

    def sign_access(self, claims: dict[str, Any], headers: dict[str, str]) -> str:
        """Sign `claims` (iss and aud added) as access tokens are signed: the active key, its
        kid in the header; HS256 with JWT_SECRET under JWT_ALGORITHM=HS256."""
        claims = {**claims, "iss": self._issuer, "aud": self._audience}
        if self._keys is not None:
            key = self._keys.signing_key()
            assert key.private_key is not None  # signing_key() returns decrypted keys only
            return jwt.encode(
                claims,
                key.private_key,
                algorithm=key.algorithm,
                headers={**headers, "kid": key.kid},
            )
        return jwt.encode(claims, self._secrets["access"], algorithm=ALGORITHM, headers=headers)

    def decode_access(
        self, token: str, required: list[str]
    ) -> tuple[dict[str, Any], dt.datetime | None]:
        """The claims of a token signed as access tokens are (signature, issuer, audience and
        the `required` claims checked; expiry is the caller's) and when its key retires.

        Raises:
            UnauthenticatedError: TOKEN_INVALID.
        """
        return self._decode("access", token, required)

    def _decode(
        self, kind: TokenType, token: str, required: list[str]
    ) -> tuple[dict[str, Any], dt.datetime | None]:
        """Signature (by the key `kind` tokens are signed with), issuer, audience and the
        `required` claims; expiry and issue time are the caller's, against its clock."""
        try:
            secret, algorithm, key_retire_time = self._verification_key(kind, token)
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": required, "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            raise _invalid() from None
        return claims, key_retire_time

    def published_keys(self) -> list[dict[str, str]]:
        """The JWKS members (RFC 7517): every key that may verify an access token."""
        return [] if self._keys is None else self._keys.published()

    def _verification_key(self, kind: TokenType, token: str) -> tuple[Any, str, dt.datetime | None]:
        """The key `token` must verify under, its algorithm (chosen by us: for a signed access
        token, the key its kid names; an unknown or retired kid is TOKEN_INVALID) and when that
        key retires.

        Raises:
            jwt.PyJWTError: no usable kid.
        """
        if kind == "refresh" or self._keys is None:
            return self._secrets[kind], ALGORITHM, None
        kid = jwt.get_unverified_header(token).get("kid")
        key = self._keys.verification_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise jwt.InvalidKeyError("unknown kid")
        return key.public_key, key.algorithm, key.retire_time


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _invalid() -> UnauthenticatedError:
    return UnauthenticatedError("TOKEN_INVALID", "invalid token")


def looks_like_cli_token(token: str) -> bool:
    return token.startswith(CLI_TOKEN_PREFIX)
