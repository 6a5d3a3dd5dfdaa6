"""`luman whoami` and `luman account identities | unlink` with a linked GitHub account, end to
end: the real server, the CLI, and GitHub's documented endpoints on a loopback fake."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App
from luman.server.config import Settings
from tests.cli.conftest import Luman
from tests.federation.github_fake import GitHubFake
from tests.federation.github_support import CALLBACK, PUBLIC_URL, ada, github_config, sign_in
from tests.support import PASSWORD, register, unique_email

OK, USAGE = 0, 2


@pytest.fixture
def github() -> Iterator[GitHubFake]:
    with GitHubFake(callback_url=CALLBACK) as fake:
        yield fake


@pytest.fixture
def settings(settings: Settings, github: GitHubFake) -> Settings:
    return dataclasses.replace(
        settings, public_url=PUBLIC_URL, identity_providers=(github_config(github),)
    )


@pytest.fixture
def auth(app: App) -> Iterator[auth_service_pb2_grpc.AuthServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


def test_whoami_lists_linked_accounts_and_unlink_removes_one(
    luman: Luman, auth: auth_service_pb2_grpc.AuthServiceStub, github: GitHubFake
) -> None:
    email = unique_email()
    register(auth, email=email, name="Ada")
    ada(github, email=email)
    link_token = sign_in(auth, github).link_required.link_token
    auth.LinkProviderIdentity(
        auth_service_pb2.LinkProviderIdentityRequest(link_token=link_token, password=PASSWORD)
    )
    login = luman(
        "login", "--password", "--email", email, "--password-stdin", input=PASSWORD + "\n"
    )
    assert login.exit_code == OK, login.output

    whoami = luman("whoami")
    assert whoami.exit_code == OK, whoami.output
    assert "GitHub (ada)" in whoami.stdout
    listed = json.loads(luman("--json", "account", "identities").stdout)
    assert [(i["provider"], i["username"], i["email"]) for i in listed] == [
        ("github", "ada", email)
    ]
    assert json.loads(luman("--json", "whoami").stdout)["identities"][0]["provider"] == "github"

    unlinked = luman("account", "unlink", "github")
    assert unlinked.exit_code == OK, unlinked.output
    assert "Unlinked GitHub (ada)." in unlinked.stdout
    linked = [line.split(maxsplit=1) for line in luman("whoami").stdout.splitlines()]
    assert ["Linked:", "none"] in linked
    again = luman("account", "unlink", "github")
    assert again.exit_code == USAGE
    assert "no such identity" in again.output
