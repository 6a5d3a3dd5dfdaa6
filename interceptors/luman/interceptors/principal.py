"""The authenticated caller of the current RPC, as token authentication recorded it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid

from luman.interceptors.call_context import optional_call
from luman.interceptors.errors import PermissionDeniedError

# Scopes only a service account's credential can carry: never implied by a sign-in's "every
# scope", never granted to a personal token (the issue: only service credentials introspect).
SERVICE_ONLY_SCOPES = frozenset({"introspect"})


class Credential(enum.Enum):
    ACCESS_TOKEN = "access_token"  # noqa: S105 - a label, not a secret
    CLI_TOKEN = "cli_token"  # noqa: S105 - a label, not a secret
    SERVICE_TOKEN = "service_token"  # noqa: S105 - a label, not a secret
    # A TLS client certificate naming a service account (MTLS_PORT, or the HTTP port with
    # TLS_CLIENT_CA_FILE): the account's principal, with no token at all.
    CLIENT_CERTIFICATE = "client_certificate"


# The credentials of service accounts, not users.
SERVICE_CREDENTIALS = frozenset({Credential.SERVICE_TOKEN, Credential.CLIENT_CERTIFICATE})


class UserRequiredError(PermissionDeniedError):
    """A service account called an RPC that acts for a user (GetMe, memberships, tokens)."""

    def __init__(self) -> None:
        super().__init__(
            "USER_REQUIRED", "this method acts for a user; a service account cannot call it"
        )


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: a user or a service account, and the credential that proved it.

    `subject_id` is the user id, or the service account id for a service token.
    `credential_id` is the login session id for an access token, the token id for a CLI token
    and the service account id for a service token or client certificate.
    `scopes` limits what the credential may do on top of the caller's own permissions; None
    means every user scope (an access token from a sign-in), never SERVICE_ONLY_SCOPES.
    `organization_id` is the service account's organization; None for a user.
    `issue_time` is an access token's iat, None for other credentials: what mints a credential
    re-checks it against the user's LogoutAll not-before time under a lock.
    """

    subject_id: uuid.UUID
    credential: Credential
    credential_id: uuid.UUID
    scopes: frozenset[str] | None = None
    organization_id: uuid.UUID | None = None
    issue_time: dt.datetime | None = None

    @property
    def is_service(self) -> bool:
        return self.credential in SERVICE_CREDENTIALS

    @property
    def user_id(self) -> uuid.UUID:
        """The calling user. A service account has none: code acting for a user fails closed
        with PERMISSION_DENIED USER_REQUIRED instead of mistaking it for a user.

        Raises:
            UserRequiredError: the caller is a service account.
        """
        if self.credential in SERVICE_CREDENTIALS:
            raise UserRequiredError()
        return self.subject_id

    def has_scope(self, scope: str) -> bool:
        if self.scopes is None:
            return scope not in SERVICE_ONLY_SCOPES
        return scope in self.scopes


def optional_principal() -> Principal | None:
    """The verified caller of the RPC being served, or None when it carried no valid token."""
    record = optional_call()
    return None if record is None else record.principal


def current_principal() -> Principal:
    """The caller of the RPC being served. Only valid inside a non-public RPC."""
    principal = optional_principal()
    if principal is None:
        raise RuntimeError("no authenticated principal: is the RPC declared public by mistake?")
    return principal
