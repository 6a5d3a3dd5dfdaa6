"""TLS client certificates as service-account credentials (TLS_CLIENT_CA_FILE).

A service that holds a certificate from the deployment's client CA can call without any token:
on MTLS_PORT (gRPC, where the certificate is required) or on the HTTP port (where it is asked
for, not required). The TLS layer has already verified the chain against TLS_CLIENT_CA_FILE and
the validity period at the handshake; what is left here is which service account it proves.

- The certificate names its account in a subject alternative name URI,
  `urn:luman:service-account:<account id>` (exactly one). Whoever issues certificates from the
  client CA decides which services are which accounts; a certificate without such a name, or
  naming an account that does not exist (deleted), is refused: UNAUTHENTICATED,
  CERTIFICATE_UNMAPPED.
- The principal is the account's, as a service access token would prove it: its organization,
  its scopes, only the RPCs open to service accounts.
- Checked like a token: the account's row (one indexed read), then remembered in the
  verified-token cache under the account's id, never past the certificate's notAfter (a
  connection opened before it expired would otherwise go on using it). Deleting the account
  forgets it: the next call with the certificate is refused.
- A bearer token on the same call wins: the certificate is only read when there is none.
- Revoking one certificate without deleting its account is the CA's business (short-lived
  certificates, or a new client CA); Luman reads no CRL.
"""

from __future__ import annotations

import hashlib
import uuid

from cryptography import x509

from luman.interceptors.errors import UnauthenticatedError
from luman.interceptors.principal import Credential, Principal
from luman.server.auth.service_accounts import account_by_id
from luman.server.auth.token_cache import TokenCache
from luman.server.clock import Clock
from luman.server.db.session import Sessions

SAN_URI_PREFIX = "urn:luman:service-account:"


def _unmapped() -> UnauthenticatedError:
    return UnauthenticatedError(
        "CERTIFICATE_UNMAPPED",
        "the client certificate names no service account "
        f"(one subject alternative name URI {SAN_URI_PREFIX}<id> of an existing account)",
    )


def named_account(certificate: x509.Certificate) -> uuid.UUID | None:
    """The service account id the certificate's SAN URI names; None for none or several."""
    try:
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        return None
    accounts = [name[len(SAN_URI_PREFIX) :] for name in names if name.startswith(SAN_URI_PREFIX)]
    if len(accounts) != 1:
        return None
    try:
        return uuid.UUID(accounts[0])
    except ValueError:
        return None


class ClientCertificates:
    """Turns a verified client certificate into the Principal of the account it names."""

    def __init__(self, sessions: Sessions, token_cache: TokenCache, clock: Clock) -> None:
        self._sessions = sessions
        self._token_cache = token_cache
        self._clock = clock

    def verify(self, pem: bytes) -> Principal:
        """The principal `pem` (a certificate the TLS layer verified) proves.

        Raises:
            UnauthenticatedError: CERTIFICATE_UNMAPPED (no account named, or a deleted one),
                CERTIFICATE_EXPIRED (expired since the connection's handshake).
        """
        key = b"certificate:" + hashlib.sha256(pem).digest()
        cached = self._token_cache.get(key)
        if cached is not None:
            return cached.principal
        generation = self._token_cache.generation()
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise _unmapped() from None
        if self._clock() >= certificate.not_valid_after_utc:
            raise UnauthenticatedError("CERTIFICATE_EXPIRED", "the client certificate has expired")
        account_id = named_account(certificate)
        if account_id is None:
            raise _unmapped()
        with self._sessions.engine.connect() as conn:
            account = account_by_id(conn, account_id)
        if account is None:
            raise _unmapped()
        principal = Principal(
            account.id,
            Credential.CLIENT_CERTIFICATE,
            account.id,
            account.scopes,
            account.organization_id,
        )
        self._token_cache.put(
            key,
            principal,
            None,
            expire_time=certificate.not_valid_after_utc,
            generation=generation,
        )
        return principal
