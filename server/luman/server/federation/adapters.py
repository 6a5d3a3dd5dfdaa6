"""One adapter per configured provider, and everything a caller of the adapters needs.

    adapters = build_adapters(settings.identity_providers, clock=system_clock)
    url = adapters["github"].authorization_url(
        redirect_uri=..., state=..., nonce=..., code_challenge=code_challenge(verifier)
    )
    ...
    identity = adapters["github"].identity(
        code=..., redirect_uri=..., code_verifier=verifier, nonce=...
    )

identity() raises ProviderUnavailableError (answer UNAVAILABLE, with RetryInfo) or
ProviderRejectedError (its `reason`: see errors.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

import httpx

from luman.server.federation.errors import ProviderRejectedError, ProviderUnavailableError
from luman.server.federation.github import GitHubAdapter
from luman.server.federation.http import new_client
from luman.server.federation.identity import Adapter, ProviderIdentity, code_challenge
from luman.server.federation.oidc import OidcAdapter
from luman.server.federation.providers import ProviderConfig

__all__ = [
    "Adapter",
    "ProviderIdentity",
    "ProviderRejectedError",
    "ProviderUnavailableError",
    "build_adapters",
    "code_challenge",
]


def build_adapters(
    configs: Iterable[ProviderConfig],
    *,
    clock: Callable[[], dt.datetime],
    client: httpx.Client | None = None,
) -> dict[str, Adapter]:
    """The adapters for `configs`, keyed by provider id.

    Args:
        clock: judges ID token times and cache ages (tests pass a fake one).
        client: shared by every adapter; by default one made by http.new_client() that lives
            as long as the process.
    """
    shared = client if client is not None else new_client()
    adapters: dict[str, Adapter] = {}
    for config in configs:
        if config.id in adapters:
            raise ValueError(f"provider id {config.id!r} appears twice")
        if config.kind == "github":
            adapters[config.id] = GitHubAdapter(config, client=shared)
        else:
            adapters[config.id] = OidcAdapter(config, client=shared, clock=clock)
    return adapters
