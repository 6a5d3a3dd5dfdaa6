"""What an adapter raises when a sign-in cannot complete.

ProviderUnavailableError    the provider could not answer: unreachable, timed out, HTTP 5xx
                            or 429, an undecodable discovery document or JWK Set. The
                            caller answers UNAVAILABLE with RetryInfo.
ProviderRejectedError       the provider answered, and the answer ends the sign-in; `reason`:
    CODE_REJECTED           the token endpoint refused the code (invalid_grant,
                            bad_verification_code, redirect_uri_mismatch, PKCE failure,
                            any 4xx)
    ID_TOKEN_INVALID        signature, alg (none, HS*), iss, aud, azp, exp, iat in the
                            future, missing sub, kid unknown after one JWK Set refetch
    NONCE_MISMATCH          the ID token's nonce is not the one sent
    RESPONSE_INVALID        a 2xx that is not the documented shape, or a discovery document
                            naming another issuer (a misconfiguration)
"""

from __future__ import annotations

# MISCONFIGURED: the provider's discovery document is missing (HTTP 3xx or 4xx) or names
# another issuer: the configuration is wrong, which no retry mends.
REASONS = (
    "CODE_REJECTED",
    "ID_TOKEN_INVALID",
    "NONCE_MISMATCH",
    "RESPONSE_INVALID",
    "MISCONFIGURED",
)


class ProviderUnavailableError(Exception):
    """The provider could not be reached or answered 5xx/429: try again later."""


class ProviderRejectedError(Exception):
    """The provider's answer ends this sign-in.

    Attributes:
        reason: one of REASONS, stable (the caller's ErrorInfo reason).
        detail: for the logs; never a secret, code or token.
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
