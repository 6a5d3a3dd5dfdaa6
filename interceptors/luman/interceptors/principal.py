"""The authenticated caller of the current RPC, as token authentication recorded it."""

from __future__ import annotations

import dataclasses
import enum
import uuid

from luman.interceptors.call_context import optional_call


class Credential(enum.Enum):
    ACCESS_TOKEN = "access_token"  # noqa: S105 - a label, not a secret
    CLI_TOKEN = "cli_token"  # noqa: S105 - a label, not a secret


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the user and the credential that proved it.

    `credential_id` is the login session id for an access token and the token id for a CLI token.
    `scopes` limits what the credential may do on top of the user's own permissions; None means
    every scope (an access token from a sign-in).
    """

    user_id: uuid.UUID
    credential: Credential
    credential_id: uuid.UUID
    scopes: frozenset[str] | None = None

    def has_scope(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes


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
