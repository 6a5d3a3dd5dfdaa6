"""`luman` end to end: CliRunner drives the real click group against the real server."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import click
import grpc
import pytest
from click.testing import CliRunner

from luman.cli.main import cli
from luman.client import AuthData, save_auth
from luman.server.app import App
from tests.cli.conftest import Luman
from tests.client.conftest import Scripted
from tests.client.tls import Certificate, TlsServer
from tests.support import PASSWORD, FakeClock, unique_email

OK, ERROR, USAGE, UNAUTHENTICATED, UNREACHABLE = 0, 1, 2, 3, 4


def _register(luman: Luman, email: str, name: str = "Grace", *, then_login: bool = False) -> None:
    flag = "--login" if then_login else "--no-login"
    result = luman(
        "register", "--email", email, "--name", name, "--password-stdin", flag, input=PASSWORD
    )
    assert result.exit_code == OK, result.output


def _login(luman: Luman, email: str) -> None:
    result = luman(
        "login", "--password", "--email", email, "--password-stdin", input=PASSWORD + "\n"
    )
    assert result.exit_code == OK, result.output


def _json(text: str) -> Any:
    return json.loads(text)


def test_full_flow_register_login_org_members_logout(luman: Luman, clock: FakeClock) -> None:
    ada, grace = unique_email("ada"), unique_email("grace")
    _register(luman, ada, "Ada Lovelace")
    assert not luman.auth_file.exists()  # --no-login

    # Interactive login: email and hidden password from the prompts.
    result = luman("login", "--password", input=f"{ada}\n{PASSWORD}\n")
    assert result.exit_code == OK, result.output
    assert f"Logged in to {luman.api_url} as {ada}." in result.stdout
    assert PASSWORD not in result.output

    result = luman("whoami")
    assert result.exit_code == OK
    assert ada in result.stdout
    assert "Ada Lovelace" in result.stdout

    result = luman("org", "create", "Acme Corp", "--slug", "acme")
    assert result.exit_code == OK, result.output
    assert "Created Acme Corp (acme)" in result.stdout

    # Grace signs up on her own machine.
    _register(luman.machine("machine-b"), grace, "Grace Hopper")
    clock.advance(seconds=1)

    result = luman("org", "add", "acme", grace, "--role", "admin")
    assert result.exit_code == OK, result.output
    assert f"Added {grace} to acme as admin." in result.stdout

    result = luman("org", "members", "acme")
    assert result.exit_code == OK
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["EMAIL", "NAME", "ROLE", "JOINED", "USER", "ID"]
    ada_row, grace_row = lines[1].split(), lines[2].split()  # names are two words
    assert (ada_row[0], ada_row[3]) == (ada, "owner")
    assert (grace_row[0], grace_row[3]) == (grace, "admin")

    result = luman("org", "role", "acme", grace, "member")
    assert result.exit_code == OK, result.output
    assert f"{grace} is now member in acme." in result.stdout

    result = luman("org", "remove", "acme", grace)
    assert result.exit_code == OK, result.output
    assert [m["email"] for m in _json(luman("--json", "org", "members", "acme").stdout)] == [ada]

    result = luman("org", "list")
    assert result.exit_code == OK
    assert result.stdout.splitlines()[1].split()[:4] == ["acme", "Acme", "Corp", "owner"]

    result = luman("logout")
    assert result.exit_code == OK, result.output
    assert "token is revoked" in result.stdout
    assert not luman.auth_file.exists()

    result = luman("whoami")
    assert result.exit_code == UNAUTHENTICATED
    assert result.stderr == "error: not logged in: run `luman login`\n"


def test_register_logs_in_by_default(luman: Luman) -> None:
    email = unique_email()
    result = luman(
        "register", "--email", email, "--name", "Ada", "--password-stdin", input=PASSWORD
    )
    assert result.exit_code == OK, result.output
    assert f"A verification email is on its way to {email}" in result.output
    assert _json(luman("--json", "whoami").stdout)["email"] == email


def test_json_output_parses_back(luman: Luman, clock: FakeClock) -> None:
    ada, grace = unique_email("ada"), unique_email("grace")
    result = luman(
        "--json",
        "register",
        "--email",
        ada,
        "--name",
        "Ada",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    registered = _json(result.stdout)
    assert registered["user"]["email"] == ada
    assert registered["logged_in"] is True
    assert "token" not in result.stdout  # the secret stays in the auth file

    _register(luman.machine("b"), grace)
    # --json works before or after the subcommand.
    me = _json(luman("whoami", "--json").stdout)
    assert me == {
        "id": registered["user"]["id"],
        "email": ada,
        "name": "Ada",
        "create_time": me["create_time"],
        "email_verified": False,
        "api_url": luman.api_url,
        "cli_token": {
            "id": me["cli_token"]["id"],
            "name": me["cli_token"]["name"],
            "scopes": ["read", "write"],
            "expire_time": None,
        },
        "identities": [],
    }
    created = _json(luman("org", "create", "Acme", "--slug", "acme", "--json").stdout)
    assert (created["slug"], created["name"], created["role"]) == ("acme", "Acme", "owner")
    assert _json(luman("--json", "org", "show", "acme").stdout) == created
    assert _json(luman("--json", "org", "list").stdout) == [created]

    clock.advance(seconds=1)
    added = _json(luman("--json", "org", "add", "acme", grace).stdout)
    assert (added["email"], added["role"]) == (grace, "member")
    changed = _json(luman("--json", "org", "role", "acme", added["user_id"], "ADMIN").stdout)
    assert changed["role"] == "admin"
    members = _json(luman("--json", "org", "members", "acme").stdout)
    assert [(m["email"], m["role"]) for m in members] == [(ada, "owner"), (grace, "admin")]
    removed = _json(luman("--json", "org", "remove", "acme", added["user_id"]).stdout)
    assert removed == {"organization": "acme", "user": added["user_id"], "removed": True}

    logged_out = _json(luman("--json", "logout").stdout)
    assert logged_out == {"was_logged_in": True, "revoked": True, "api_url": luman.api_url}


def test_json_errors_go_to_stderr_as_json(luman: Luman) -> None:
    _register(luman, unique_email(), then_login=True)
    result = luman("--json", "org", "show", "nope-nope")
    assert result.exit_code == ERROR
    assert result.stdout == ""
    error = _json(result.stderr)["error"]
    assert error["code"] == "NOT_FOUND"
    assert error["reason"] == "ORGANIZATION_NOT_FOUND"
    assert error["exit_code"] == ERROR


@pytest.mark.parametrize("wrong", ["password", "email"])
def test_bad_credentials_exit_3_and_keep_nothing(luman: Luman, wrong: str) -> None:
    email = unique_email()
    _register(luman, email)
    login_email = unique_email() if wrong == "email" else email
    password = PASSWORD + "x" if wrong == "password" else PASSWORD
    result = luman(
        "login", "--password", "--email", login_email, "--password-stdin", input=password
    )
    assert result.exit_code == UNAUTHENTICATED
    assert result.stderr == "error: invalid email or password\n"
    assert not luman.auth_file.exists()


@pytest.mark.shape_check
def test_invalid_input_lists_each_field(luman: Luman) -> None:
    result = luman(
        "register", "--email", "nope", "--name", "Ada", "--password-stdin", input="short\n"
    )
    assert result.exit_code == ERROR
    assert result.stderr.splitlines() == [
        "error: invalid input:",
        "  email: must be a valid email address",
        "  password: must be at least 8 bytes",
    ]


def test_server_down_fails_fast_with_one_line(offline_luman: Luman, luman: Luman) -> None:
    email = unique_email()
    _register(luman, email, then_login=True)
    luman.copy_login_to(offline_luman)

    expected = (
        f"error: cannot reach the Luman backend at {offline_luman.api_url} "
        "(is it running? set --api-url or LUMAN_API_URL)\n"
    )
    for command in (("whoami",), ("org", "list"), ("health",)):
        result = offline_luman(*command)
        assert result.exit_code == UNREACHABLE, command
        assert result.stderr == expected
    result = offline_luman(
        "login", "--password", "--email", email, "--password-stdin", input=PASSWORD
    )
    assert result.exit_code == UNREACHABLE


def test_logout_with_server_down_still_removes_the_local_token(
    offline_luman: Luman, luman: Luman
) -> None:
    _register(luman, unique_email(), then_login=True)
    luman.copy_login_to(offline_luman)

    result = offline_luman("logout")
    assert result.exit_code == UNREACHABLE
    assert not offline_luman.auth_file.exists()
    assert "Deleted the local token." in result.stdout
    assert "the token was not revoked: cannot reach the Luman backend" in result.stderr
    assert "find it with `luman token list`" in result.stderr
    # The token really is still valid on the server.
    assert luman("whoami").exit_code == OK


def test_revoked_token_is_exit_3_with_a_clear_message(luman: Luman) -> None:
    _register(luman, unique_email(), then_login=True)
    other = luman.machine("machine-b")
    luman.copy_login_to(other)

    assert other("logout").exit_code == OK  # the same token, logged out elsewhere

    result = luman("whoami")
    assert result.exit_code == UNAUTHENTICATED
    assert result.stderr == (
        "error: your login has been revoked (logged out elsewhere?): run `luman login`\n"
    )
    result = luman("logout")
    assert result.exit_code == OK
    assert "already rejected" in result.stdout
    assert not luman.auth_file.exists()


@pytest.mark.parametrize(
    ("content", "phrase"),
    [("{definitely not json", "is corrupt (not valid JSON)"), ('{"foo": 1}', "not a Luman auth")],
)
def test_corrupt_auth_file_is_a_clear_message(luman: Luman, content: str, phrase: str) -> None:
    luman.config_dir.mkdir(parents=True)
    luman.auth_file.write_text(content)
    for command in (("whoami",), ("org", "list")):
        result = luman(*command)
        assert result.exit_code == ERROR
        assert phrase in result.stderr
        assert str(luman.auth_file) in result.stderr
        assert "`luman login` replaces it" in result.stderr
        assert "Traceback" not in result.output

    # login replaces it; logout would have removed it.
    email = unique_email()
    _register(luman, email)
    _login(luman, email)
    assert _json(luman("--json", "whoami").stdout)["email"] == email


def test_logout_removes_a_corrupt_auth_file(offline_luman: Luman) -> None:
    offline_luman.config_dir.mkdir(parents=True)
    offline_luman.auth_file.write_text("garbage")
    result = offline_luman("logout")
    assert result.exit_code == OK
    assert "Deleted the unreadable auth file" in result.stdout
    assert not offline_luman.auth_file.exists()


def test_auth_file_is_private(luman: Luman) -> None:
    email = unique_email()
    _register(luman, email)
    _login(luman, email)
    assert stat.S_IMODE(luman.auth_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(luman.config_dir.stat().st_mode) == 0o700
    saved = _json(luman.auth_file.read_text())
    assert saved["api_url"] == luman.api_url
    assert saved["user"]["email"] == email
    assert saved["token"].startswith("lmn_")


def test_commands_needing_no_backend_never_contact_it(offline_luman: Luman) -> None:
    # Nothing listens at the address: reaching it would exit 4.
    result = offline_luman("whoami")
    assert result.exit_code == UNAUTHENTICATED
    assert offline_luman("org", "members", "acme").exit_code == UNAUTHENTICATED
    result = offline_luman("logout")
    assert result.exit_code == OK
    assert result.stdout == "Not logged in.\n"
    assert offline_luman("--version").exit_code == OK
    assert offline_luman("org", "--help").exit_code == OK


def test_address_from_flag_env_saved_then_default(luman: Luman, closed_port: int) -> None:
    email = unique_email()
    _register(luman, email)
    _login(luman, email)
    # No --api-url: the address saved at login.
    assert _json(luman("--json", "whoami", api_url=None).stdout)["api_url"] == luman.api_url
    # LUMAN_API_URL beats the saved address, and --api-url beats LUMAN_API_URL.
    env = {"LUMAN_API_URL": f"127.0.0.1:{closed_port}"}
    assert luman("whoami", api_url=None, env=env).exit_code == UNREACHABLE
    assert luman("whoami", env=env).exit_code == OK


def test_usage_errors_exit_2(offline_luman: Luman) -> None:
    # No backend: usage errors are caught before any call (one that got further exits 3 or 4).
    luman = offline_luman
    assert luman("org", "role", "acme", "a@example.com", "boss").exit_code == USAGE
    result = luman("whoami", api_url="http://localhost:3000")
    assert result.exit_code == USAGE
    assert "use host:port, grpc://host:port or grpcs://host:port" in result.stderr
    result = luman("login", "--password", "--password-stdin", input=PASSWORD)
    assert result.exit_code == USAGE
    assert "--password-stdin needs --email" in result.stderr
    assert luman("org", "create", "!!").exit_code == USAGE
    assert luman("--timeout", "0", "whoami").exit_code == USAGE
    assert luman("nope").exit_code == USAGE


def test_org_create_derives_the_slug_from_the_name(luman: Luman) -> None:
    _register(luman, unique_email(), then_login=True)
    created = _json(luman("--json", "org", "create", "Ünïcode  Tëam!").stdout)
    assert created["slug"] == "unicode-team"


def test_permission_denied_and_already_exists_exit_1(luman: Luman) -> None:
    owner, member = unique_email("owner"), unique_email("member")
    _register(luman, owner, then_login=True)
    assert luman("org", "create", "Acme", "--slug", "acme").exit_code == OK
    result = luman("org", "create", "Acme", "--slug", "acme")
    assert result.exit_code == ERROR
    assert result.stderr == "error: an organization with this slug already exists\n"

    other = luman.machine("machine-b")
    _register(other, member, then_login=True)
    assert luman("org", "add", "acme", member).exit_code == OK
    result = other("org", "add", "acme", unique_email(), "--role", "owner")
    assert result.exit_code == ERROR
    assert result.stderr.startswith("error: permission denied: ")

    result = luman("org", "remove", "acme", owner)
    assert result.exit_code == ERROR
    assert "at least one owner" in result.stderr


def test_health(luman: Luman) -> None:
    result = luman("health")
    assert result.exit_code == OK
    assert result.stdout == f"{luman.api_url}: SERVING\n"
    assert _json(luman("--json", "health").stdout) == {
        "api_url": luman.api_url,
        "status": "SERVING",
    }


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, (*prefix, name)))
        else:
            paths.append((*prefix, name))
    return paths


@pytest.mark.parametrize("path", _command_paths(cli), ids=lambda p: " ".join(p) or "luman")
def test_every_command_has_help_with_an_example(
    offline_luman: Luman, path: tuple[str, ...]
) -> None:
    result = offline_luman(*path, "--help")
    assert result.exit_code == OK
    assert "Example" in result.stdout
    assert "luman " in result.stdout.split("Example", 1)[1]


def test_grpcs_backend_with_ca_cert(tls_server: TlsServer, certificate: Certificate) -> None:
    luman = Luman(CliRunner(), f"grpcs://localhost:{tls_server.port}", Path("/nonexistent"))
    result = luman("--ca-cert", str(certificate.cert_path), "health")
    assert result.exit_code == OK, result.output
    assert result.stdout == f"grpcs://localhost:{tls_server.port}: SERVING\n"

    result = luman("health")  # the self-signed certificate is not in the system store
    assert result.exit_code == UNREACHABLE
    assert "TLS handshake failed: untrusted certificate? see --ca-cert" in result.stderr


def test_password_to_a_remote_plaintext_backend_warns(luman: Luman, app: App) -> None:
    email = unique_email()
    _register(luman, email)
    assert (
        "without TLS"
        not in luman(
            "login", "--password", "--email", email, "--password-stdin", input=PASSWORD
        ).stderr
    )
    # 0.0.0.0 reaches the local server on Linux but is not a loopback address.
    result = luman(
        "login",
        "--password",
        "--email",
        email,
        "--password-stdin",
        input=PASSWORD,
        api_url=f"0.0.0.0:{app.port}",
    )
    assert result.exit_code == OK, result.output
    assert result.stderr == (
        f"warning: sending the password to 0.0.0.0:{app.port} without TLS; "
        "use grpcs:// for a remote backend\n"
    )


def test_backend_not_answering_in_time_exits_4(scripted: Scripted, tmp_path: Path) -> None:
    def stall(context: grpc.ServicerContext) -> None:
        scripted.servicer.released.wait()  # until the test ends; the deadline fires first

    scripted.servicer.behaviour = stall
    save_auth(
        AuthData(token="lmn_x", api_url=scripted.address, user_id="u", email="e@x.io"),
        tmp_path / ".luman",
    )
    luman = Luman(CliRunner(), None, tmp_path / ".luman")
    result = luman("--timeout", "0.2", "whoami")
    assert result.exit_code == UNREACHABLE
    assert result.stderr == (
        f"error: the Luman backend at {scripted.address} did not answer within 0.2s\n"
    )
