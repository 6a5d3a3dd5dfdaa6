"""Service accounts' access tokens: short-lived JWTs signed like users' access tokens.

Signed with the same key ring, issuer and audience as a user's access token, so another
service verifies either offline with the published JWKS. What tells them apart:

- the claim `typ` is "service" (a user's is "access"): each check requires its own value,
  so neither kind passes for the other, whatever the header says;
- the header `typ` is "service+jwt" (RFC 8725 explicit typing): only a hint, read when a
  bearer token failed as a user's access token, that sends it to this check;
- `sub` is the service account id, `org_id` its organization, `scope` its scopes
  (space-separated, as in RFC 9068); no `sid`: there is no sign-in behind it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import jwt

from luman.interceptors.errors import UnauthenticatedError
from luman.server.auth.tokens import IssuedToken, TokenCodec
from luman.server.clock import Clock

CLAIM_TYPE = "service"
HEADER_TYPE = "service+jwt"
_REQUIRED = ["exp", "iat", "sub", "jti", "iss", "aud", "typ", "org_id", "scope"]
_CLOCK_SKEW = dt.timedelta(seconds=60)


@dataclasses.dataclass(frozen=True)
class ServiceClaims:
    service_account_id: uuid.UUID
    organization_id: uuid.UUID
    scopes: frozenset[str]
    jti: uuid.UUID
    expire_time: dt.datetime
    issue_time: dt.datetime
    kid: str | None
    key_retire_time: dt.datetime | None

    @property
    def believed_until(self) -> dt.datetime:
        """How long a cache may believe this check: until expiry or the key's retirement."""
        if self.key_retire_time is not None and self.key_retire_time < self.expire_time:
            return self.key_retire_time
        return self.expire_time


def looks_like_service_token(token: str) -> bool:
    """True when the token's header says it is a service token (not yet verified)."""
    try:
        return jwt.get_unverified_header(token).get("typ") == HEADER_TYPE
    except jwt.PyJWTError:
        return False


class ServiceTokenCodec:
    def __init__(self, codec: TokenCodec, clock: Clock) -> None:
        self._codec = codec
        self._clock = clock

    def issue(
        self, service_account_id: uuid.UUID, organization_id: uuid.UUID, scopes: frozenset[str]
    ) -> IssuedToken:
        now = self._clock()
        expire_time = now + self._codec.access_lifetime
        jti = uuid.uuid4()
        claims = {
            "sub": str(service_account_id),
            "typ": CLAIM_TYPE,
            "jti": str(jti),
            "org_id": str(organization_id),
            "scope": " ".join(sorted(scopes)),
            "iat": int(now.timestamp()),
            "exp": int(expire_time.timestamp()),
        }
        token = self._codec.sign_access(claims, {"typ": HEADER_TYPE})
        return IssuedToken(token, jti, dt.datetime.fromtimestamp(claims["exp"], dt.UTC))  # type: ignore[arg-type]

    def verify(self, token: str) -> ServiceClaims:
        """Raises:
        UnauthenticatedError: TOKEN_EXPIRED, or TOKEN_INVALID for every other failure.
        """
        claims, key_retire_time = self._codec.decode_access(token, _REQUIRED)
        exp, iat, scope = claims["exp"], claims["iat"], claims["scope"]
        if (
            claims["typ"] != CLAIM_TYPE
            or not _is_number(exp)
            or not _is_number(iat)
            or not isinstance(scope, str)
        ):
            raise _invalid()
        now = self._clock().timestamp()
        if iat > now + _CLOCK_SKEW.total_seconds():
            raise _invalid()
        if now >= exp:
            raise UnauthenticatedError("TOKEN_EXPIRED", "service token has expired")
        try:
            kid = jwt.get_unverified_header(token).get("kid")  # signed: verified above
            return ServiceClaims(
                service_account_id=uuid.UUID(claims["sub"]),
                organization_id=uuid.UUID(claims["org_id"]),
                scopes=frozenset(scope.split()),
                jti=uuid.UUID(claims["jti"]),
                expire_time=dt.datetime.fromtimestamp(exp, dt.UTC),
                issue_time=dt.datetime.fromtimestamp(iat, dt.UTC),
                kid=kid if isinstance(kid, str) else None,
                key_retire_time=key_retire_time,
            )
        except (TypeError, ValueError, AttributeError, OverflowError, OSError, jwt.PyJWTError):
            raise _invalid() from None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _invalid() -> UnauthenticatedError:
    return UnauthenticatedError("TOKEN_INVALID", "invalid token")
