"""`luman account update | password | delete`, end to end against the real server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2_grpc
from luman.server.app import App
from tests.cli.conftest import Luman
from tests.server.organization_support import Account, create_organization, unique_slug
from tests.support import PASSWORD, get_me, refused_reason, register, unique_email

OK, ERROR, USAGE, UNAUTHENTICATED = 0, 1, 2, 3
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def channel(app: App) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield channel


@pytest.fixture
def auth(channel: grpc.Channel) -> auth_service_pb2_grpc.AuthServiceStub:
    return auth_service_pb2_grpc.AuthServiceStub(channel)


def _signed_up(luman: Luman, auth: auth_service_pb2_grpc.AuthServiceStub) -> tuple[str, str]:
    """A new account logged in on `luman`; its email and a web session's access token."""
    email = unique_email()
    web = register(auth, email=email, name="Ada").tokens.access_token
    result = luman(
        "login", "--password", "--email", email, "--password-stdin", input=PASSWORD + "\n"
    )
    assert result.exit_code == OK, result.output
    return email, web


def test_account_update_changes_the_name(
    luman: Luman, auth: auth_service_pb2_grpc.AuthServiceStub
) -> None:
    _, web = _signed_up(luman, auth)
    result = luman("account", "update", "--name", "Ada Lovelace")
    assert result.exit_code == OK, result.output
    assert "Your name is now Ada Lovelace." in result.stdout
    assert get_me(auth, web).user.name == "Ada Lovelace"
    assert json.loads(luman("--json", "whoami").stdout)["name"] == "Ada Lovelace"

    bad = luman("--json", "account", "update", "--name", "x" * 101)
    assert bad.exit_code == ERROR
    assert "user.name" in json.loads(bad.stderr)["error"]["field_violations"]


def test_account_password_prompts_and_keeps_cli_tokens(
    luman: Luman, auth: auth_service_pb2_grpc.AuthServiceStub
) -> None:
    email, web = _signed_up(luman, auth)
    result = luman("account", "password", input=f"{PASSWORD}\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert result.exit_code == OK, result.output
    assert "signed out 1 other session(s)" in result.stdout
    assert refused_reason(auth, web) == "TOKEN_REVOKED"
    assert luman("whoami").exit_code == OK  # this machine's login stays
    auth.Login(auth_service_pb2.LoginRequest(email=email, password=NEW_PASSWORD))


def test_account_password_stdin_revokes_other_cli_tokens(
    luman: Luman, auth: auth_service_pb2_grpc.AuthServiceStub
) -> None:
    email, _ = _signed_up(luman, auth)
    other = luman.machine("laptop")
    login = other(
        "login", "--password", "--email", email, "--password-stdin", input=PASSWORD + "\n"
    )
    assert login.exit_code == OK, login.output

    result = luman(
        "--json",
        "account",
        "password",
        "--password-stdin",
        "--revoke-cli-tokens",
        input=f"{PASSWORD}\n{NEW_PASSWORD}\n",
    )
    assert result.exit_code == OK, result.output
    assert json.loads(result.stdout) == {
        "changed": True,
        "revoked_sessions": 1,
        "revoked_cli_tokens": 1,
    }
    assert luman("whoami").exit_code == OK
    assert other("whoami").exit_code == UNAUTHENTICATED


def test_account_password_wrong_current_password(
    luman: Luman, auth: auth_service_pb2_grpc.AuthServiceStub
) -> None:
    _signed_up(luman, auth)
    result = luman(
        "account", "password", "--password-stdin", input=f"not the password\n{NEW_PASSWORD}\n"
    )
    assert result.exit_code == UNAUTHENTICATED
    assert "wrong password" in result.stderr
    short = luman("--json", "account", "password", "--password-stdin", input=f"{PASSWORD}\nx\n")
    assert short.exit_code == ERROR
    assert "new_password" in json.loads(short.stderr)["error"]["field_violations"]


def test_account_delete_confirms_with_the_email_and_logs_out(
    luman: Luman, auth: auth_service_pb2_grpc.AuthServiceStub
) -> None:
    email, web = _signed_up(luman, auth)

    mistyped = luman("account", "delete", input="someone@example.com\n")
    assert mistyped.exit_code == ERROR
    assert "nothing was deleted" in mistyped.stderr
    assert get_me(auth, web).user.email == email

    wrong = luman("account", "delete", input=f"{email}\nnot the password\n")
    assert wrong.exit_code == UNAUTHENTICATED
    assert luman.auth_file.exists()

    result = luman("account", "delete", input=f"{email.upper()}\n{PASSWORD}\n")
    assert result.exit_code == OK, result.output
    assert f"Deleted the account {email}. Removed the saved login." in result.stdout
    assert not luman.auth_file.exists()
    assert refused_reason(auth, web) in {"TOKEN_INVALID", "TOKEN_REVOKED"}


def test_account_delete_last_owner_names_the_organizations(
    luman: Luman, auth: auth_service_pb2_grpc.AuthServiceStub, channel: grpc.Channel
) -> None:
    email, web = _signed_up(luman, auth)
    orgs = organization_service_pb2_grpc.OrganizationServiceStub(channel)
    slug = unique_slug()
    create_organization(orgs, Account("", email, web), slug=slug)

    usage = luman("account", "delete", "--password-stdin", input=PASSWORD + "\n")
    assert usage.exit_code == USAGE

    result = luman(
        "--json", "account", "delete", "--yes", "--password-stdin", input=PASSWORD + "\n"
    )
    assert result.exit_code == ERROR
    error = json.loads(result.stderr)["error"]
    assert (error["reason"], error["organizations"]) == ("LAST_OWNER", [slug])
    assert slug in error["message"]
    assert luman.auth_file.exists()
    assert luman("whoami").exit_code == OK


def test_account_help_has_examples(luman: Luman) -> None:
    for command in ("update", "password", "delete"):
        result = luman("account", command, "--help")
        assert result.exit_code == OK
        assert "Example" in result.stdout
