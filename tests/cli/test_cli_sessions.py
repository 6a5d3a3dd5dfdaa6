"""`luman sessions` and `luman logout --all`, end to end against the real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from luman.auth.v1 import auth_service_pb2_grpc
from luman.server.app import App
from tests.cli.conftest import Luman
from tests.support import PASSWORD, refused_reason, register, unique_email

OK, ERROR, USAGE, UNAUTHENTICATED = 0, 1, 2, 3


@pytest.fixture
def auth(app: App) -> Iterator[auth_service_pb2_grpc.AuthServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


def _login(luman: Luman, email: str) -> None:
    result = luman(
        "login", "--password", "--email", email, "--password-stdin", input=PASSWORD + "\n"
    )
    assert result.exit_code == OK, result.output


def test_sessions_list_and_revoke(
    luman: Luman, auth: auth_service_pb2_grpc.AuthServiceStub
) -> None:
    email = unique_email()
    web = register(auth, email=email).tokens
    _login(luman, email)

    result = luman("sessions", "--json")
    assert result.exit_code == OK, result.output
    (listed,) = json.loads(result.stdout)
    assert listed["client_ip"] == "127.0.0.1"
    assert listed["current"] is False  # the CLI calls with its CLI token, not a session's

    table = luman("sessions")
    assert table.exit_code == OK
    assert "LAST REFRESHED" in table.stdout
    assert listed["id"] in table.stdout

    result = luman("sessions", "revoke", listed["id"])
    assert result.exit_code == OK, result.output
    assert f"Revoked session {listed['id']}." in result.stdout
    assert refused_reason(auth, web.access_token) == "TOKEN_REVOKED"
    assert "No open sessions." in luman("sessions").stdout

    again = luman("--json", "sessions", "revoke", listed["id"])
    assert again.exit_code == ERROR
    assert json.loads(again.stderr)["error"]["reason"] == "SESSION_ALREADY_REVOKED"
    bad = luman("sessions", "revoke", "not-a-uuid")
    assert bad.exit_code == ERROR
    assert "session_id" in bad.stderr


def test_logout_all_keeps_other_cli_tokens_unless_asked(
    luman: Luman, auth: auth_service_pb2_grpc.AuthServiceStub, tmp_path: Path
) -> None:
    email = unique_email()
    web = register(auth, email=email).tokens
    other_machine = Luman(CliRunner(), luman.api_url, tmp_path / "machine-b" / ".luman")
    third_machine = Luman(CliRunner(), luman.api_url, tmp_path / "machine-c" / ".luman")
    for machine in (luman, other_machine, third_machine):
        _login(machine, email)

    result = luman("logout", "--all", "--json")
    assert result.exit_code == OK, result.output
    data = json.loads(result.stdout)
    assert data["logout_all"] == {"revoked_sessions": 1, "revoked_cli_tokens": 0}
    assert data["revoked"] is True
    assert not luman.auth_file.exists()
    assert refused_reason(auth, web.access_token) == "TOKEN_REVOKED"
    assert other_machine("whoami").exit_code == OK

    result = other_machine("logout", "--all", "--include-cli-tokens")
    assert result.exit_code == OK, result.output
    assert "Signed out everywhere: revoked 0 session(s) and 2 CLI token(s)." in result.stdout
    assert not other_machine.auth_file.exists()
    assert third_machine("whoami").exit_code == UNAUTHENTICATED


def test_include_cli_tokens_needs_all(luman: Luman) -> None:
    result = luman("logout", "--include-cli-tokens")
    assert result.exit_code == USAGE
    assert "--include-cli-tokens needs --all" in result.output


def test_logout_all_when_not_logged_in_is_exit_3(luman: Luman) -> None:
    assert luman("logout", "--all").exit_code == UNAUTHENTICATED
