"""Typed results of the identity-provider calls (ListIdentityProviders, ListIdentities)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from luman.auth.v1 import auth_pb2, auth_service_pb2


@dataclasses.dataclass(frozen=True)
class IdentityProvider:
    """A provider people can sign in with (GitHub, Google, GitLab, an OpenID Connect issuer)."""

    id: str  # "github": what linked identities and URLs name it by
    display_name: str  # "GitHub"
    kind: str  # "github", "gitlab", "google" or "oidc"

    @classmethod
    def from_proto(cls, provider: auth_pb2.IdentityProvider) -> IdentityProvider:
        return cls(provider.id, provider.display_name, provider.kind)


@dataclasses.dataclass(frozen=True)
class SignInOptions:
    """How people sign in to the server: its providers, and whether passwords work."""

    providers: tuple[IdentityProvider, ...]
    password_login: bool

    @classmethod
    def from_proto(cls, response: auth_service_pb2.ListIdentityProvidersResponse) -> SignInOptions:
        providers = tuple(IdentityProvider.from_proto(p) for p in response.providers)
        return cls(providers, response.password_login)


@dataclasses.dataclass(frozen=True)
class Identity:
    """A provider account linked to the caller's account: it signs in as the account."""

    id: str
    provider: str
    provider_display_name: str
    email: str
    username: str  # the name at the provider (a GitHub login); "" if none
    create_time: dt.datetime | None
    last_sign_in_time: dt.datetime | None  # None: not since it was linked

    @classmethod
    def from_proto(cls, identity: auth_pb2.Identity) -> Identity:
        return cls(
            id=identity.id,
            provider=identity.provider,
            provider_display_name=identity.provider_display_name,
            email=identity.email,
            username=identity.username,
            create_time=(
                identity.create_time.ToDatetime(tzinfo=dt.UTC)
                if identity.HasField("create_time")
                else None
            ),
            last_sign_in_time=(
                identity.last_sign_in_time.ToDatetime(tzinfo=dt.UTC)
                if identity.HasField("last_sign_in_time")
                else None
            ),
        )
