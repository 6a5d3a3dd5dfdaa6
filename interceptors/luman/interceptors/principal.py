"""The authenticated caller of the current RPC, visible to servicers through a ContextVar."""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import uuid


class Credential(enum.Enum):
    ACCESS_TOKEN = "access_token"  # noqa: S105 - a label, not a secret
    CLI_TOKEN = "cli_token"  # noqa: S105 - a label, not a secret


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the user and the credential that proved it.

    `credential_id` is the login session id for an access token and the token id for a CLI token.
    """

    user_id: uuid.UUID
    credential: Credential
    credential_id: uuid.UUID


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "luman_principal", default=None
)


def current_principal() -> Principal:
    """The caller of the RPC being served. Only valid inside a non-public RPC."""
    principal = _current.get()
    if principal is None:
        raise RuntimeError("no authenticated principal: is the RPC declared public by mistake?")
    return principal


def optional_principal() -> Principal | None:
    return _current.get()


# set_principal(principal) -> token; reset_principal(token). The ContextVar's own methods:
# TokenAuthInterceptor calls them on every RPC.
set_principal = _current.set
reset_principal = _current.reset
