"""What every adapter offers (Adapter) and returns (ProviderIdentity), and PKCE's S256."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from typing import Protocol

from luman.server.federation.providers import ProviderConfig

# RFC 7636 §4.1: 43 to 128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


@dataclasses.dataclass(frozen=True)
class ProviderIdentity:
    """Who the provider says signed in."""

    subject: str  # the provider's stable user id: OIDC `sub`, GitHub's numeric id as a string
    email: str  # lower-cased; "" when the provider gives none
    email_verified: bool
    name: str  # display name; "" when none
    username: str  # preferred_username, GitHub's login; "" when none
    # Google's `hd` claim, the Workspace domain of the account (lower-case); "" otherwise.
    hosted_domain: str = ""


class Adapter(Protocol):
    """The outbound OAuth 2.0 / OpenID Connect client for one provider. Thread-safe."""

    config: ProviderConfig

    def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_challenge: str
    ) -> str:
        """Where to send the browser to sign in (S256 PKCE; `nonce` unused by GitHub).

        Raises:
            ProviderUnavailableError: OIDC discovery failed.
            ProviderRejectedError: RESPONSE_INVALID, the discovery document is not usable.
        """
        ...

    def identity(
        self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> ProviderIdentity:
        """Exchanges the authorization code and returns who signed in.

        Raises:
            ProviderUnavailableError: the provider could not answer.
            ProviderRejectedError: CODE_REJECTED, ID_TOKEN_INVALID, NONCE_MISMATCH or
                RESPONSE_INVALID.
        """
        ...


def code_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 S256: BASE64URL(SHA256(ASCII(verifier))) without padding.

    Raises:
        ValueError: `verifier` is not 43 to 128 unreserved characters (RFC 7636 §4.1).
    """
    if not _VERIFIER.match(verifier):
        raise ValueError("a PKCE code verifier is 43 to 128 characters of [A-Za-z0-9-._~]")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
