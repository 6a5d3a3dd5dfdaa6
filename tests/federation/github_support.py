"""GitHub sign-in helpers shared by the server and CLI tests: the provider configured against
the loopback GitHub fake (github_fake.py), a user there, and one sign-in as a browser would
make it (start, "Authorize", complete)."""

from __future__ import annotations

import dataclasses
import urllib.parse

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.federation.providers import ProviderConfig
from tests.federation.github_fake import GitHubEmail, GitHubFake, GitHubUser

Stub = auth_service_pb2_grpc.AuthServiceStub
PUBLIC_URL = "http://127.0.0.1:9"  # never dialled: only the redirect URI is built from it
CALLBACK = f"{PUBLIC_URL}/device/providers/github/callback"  # the provider id "github"


def github_config(fake: GitHubFake, **changes: object) -> ProviderConfig:
    config = ProviderConfig(
        id="github",
        kind="github",
        display_name="GitHub",
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        github_url=fake.url,
        github_api_url=fake.api_url,
        scopes=("read:user", "user:email"),
    )
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def ada(fake: GitHubFake, *, verified: bool = True, email: str = "ada@example.com") -> GitHubUser:
    return fake.add_user(
        GitHubUser(
            id=583231,
            login="ada",
            name="Ada Lovelace",
            emails=[GitHubEmail(email, primary=True, verified=verified)],
        )
    )


def callback_url(provider: str) -> str:
    return f"{PUBLIC_URL}/device/providers/{provider}/callback"


def sign_in(
    auth: Stub, fake: GitHubFake, *, user_code: str = "", provider: str = "github"
) -> auth_service_pb2.CompleteProviderLoginResponse:
    started = auth.StartProviderLogin(
        auth_service_pb2.StartProviderLoginRequest(provider=provider, user_code=user_code)
    )
    back = callback_query(fake.approve(started.authorization_url), provider)
    assert back["state"] == started.state
    response: auth_service_pb2.CompleteProviderLoginResponse = auth.CompleteProviderLogin(
        auth_service_pb2.CompleteProviderLoginRequest(
            provider=provider, state=back["state"], code=back.get("code", "")
        )
    )
    return response


def callback_query(location: str, provider: str = "github") -> dict[str, str]:
    parts = urllib.parse.urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == callback_url(provider)
    return dict(urllib.parse.parse_qsl(parts.query))
