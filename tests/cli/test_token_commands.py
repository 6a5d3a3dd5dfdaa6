"""`luman token create / list / revoke` end to end against the real server."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click
import pytest

from luman.cli.tokens import parse_expires
from luman.client import token_format
from tests.cli.conftest import Luman
from tests.support import PASSWORD, FakeClock, unique_email

OK, ERROR, USAGE, UNAUTHENTICATED = 0, 1, 2, 3


def _logged_in(luman: Luman) -> str:
    email = unique_email()
    result = luman(
        "register", "--email", email, "--name", "Ada", "--password-stdin", input=PASSWORD
    )
    assert result.exit_code == OK, result.output
    return email


def _json(text: str) -> Any:
    return json.loads(text)


def test_create_list_revoke(luman: Luman, clock: FakeClock) -> None:
    _logged_in(luman)
    result = luman("--json", "token", "create", "ci", "--expires", "30d", "--read-only")
    assert result.exit_code == OK, result.output
    created = _json(result.stdout)
    secret = created["token"]
    assert token_format.verify_checksum(secret)
    assert created["cli_token"]["scopes"] == ["read"]
    assert created["cli_token"]["expire_time"] == (clock() + dt.timedelta(days=30)).isoformat()

    # People see the secret once, with a warning on stderr.
    result = luman("token", "create", "laptop")
    assert result.exit_code == OK, result.output
    assert "Token:" in result.stdout
    assert "only time the token is shown" in result.stderr

    result = luman("token", "list")
    assert result.exit_code == OK, result.output
    assert "ci" in result.stdout
    assert "laptop" in result.stdout
    assert secret not in result.stdout
    assert secret[-4:] in result.stdout  # the hint
    assert "* this login's token" in result.stderr

    listed = _json(luman("--json", "token", "list").stdout)
    names = {t["name"]: t for t in listed}
    assert set(names) >= {"ci", "laptop"}
    assert [t["current"] for t in listed].count(True) == 1

    result = luman("token", "revoke", created["cli_token"]["id"])
    assert result.exit_code == OK, result.output
    assert "Revoked token" in result.stdout
    result = luman("--json", "token", "revoke", created["cli_token"]["id"])
    assert result.exit_code == ERROR
    assert _json(result.stderr)["error"]["reason"] == "TOKEN_ALREADY_REVOKED"
    assert "ci" not in {t["name"] for t in _json(luman("--json", "token", "list").stdout)}


def test_revoke_all_signs_this_cli_out_too(luman: Luman) -> None:
    _logged_in(luman)
    assert luman("token", "create", "ci").exit_code == OK
    result = luman("--json", "token", "revoke", "--all")
    assert result.exit_code == OK, result.output
    assert _json(result.stdout) == {"revoked_count": 2}
    result = luman("whoami")
    assert result.exit_code == UNAUTHENTICATED


def test_revoking_the_current_login_says_so(luman: Luman) -> None:
    _logged_in(luman)
    current = next(t for t in _json(luman("--json", "token", "list").stdout) if t["current"])
    result = luman("token", "revoke", current["id"])
    assert result.exit_code == OK
    assert "this login's token" in result.stdout


def test_a_read_only_token_is_refused_writes(luman: Luman) -> None:
    _logged_in(luman)
    secret = _json(luman("--json", "token", "create", "ro", "--read-only").stdout)["token"]
    auth = _json(luman.auth_file.read_text())
    auth["token"] = secret
    luman.auth_file.write_text(json.dumps(auth))
    assert luman("whoami").exit_code == OK
    result = luman("--json", "org", "create", "Acme", "--slug", "acme-ro-cli")
    assert result.exit_code == ERROR
    error = _json(result.stderr)["error"]
    assert (error["code"], error["reason"]) == ("PERMISSION_DENIED", "INSUFFICIENT_SCOPE")


@pytest.mark.parametrize(
    "args",
    [
        ("token", "revoke"),
        ("token", "revoke", "x", "--all"),
        ("token", "create", "ci", "--expires", "30"),
        ("token", "create", "ci", "--expires", "0d"),
        ("token", "create", "ci", "--expires", "soon"),
    ],
)
def test_token_usage_errors_exit_2(luman: Luman, args: tuple[str, ...]) -> None:
    _logged_in(luman)
    assert luman(*args).exit_code == USAGE


def test_server_side_bad_input_names_the_field(luman: Luman) -> None:
    _logged_in(luman)
    result = luman("--json", "token", "create", "x" * 101)
    assert result.exit_code == ERROR
    assert list(_json(result.stderr)["error"]["field_violations"]) == ["name"]
    result = luman("token", "revoke", "not-a-uuid")
    assert result.exit_code == ERROR
    assert "token_id" in result.stderr


def test_parse_expires() -> None:
    assert parse_expires(None, None, "30d") == dt.timedelta(days=30)
    assert parse_expires(None, None, "90m") == dt.timedelta(minutes=90)
    assert parse_expires(None, None, "2w") == dt.timedelta(weeks=2)
    assert parse_expires(None, None, None) is None
    with pytest.raises(click.BadParameter):
        parse_expires(None, None, "12")
