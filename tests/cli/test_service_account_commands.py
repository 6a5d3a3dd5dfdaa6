"""`luman org service-accounts|service-account`, `luman service-token` and `luman introspect`
end to end against the real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from luman.client import token_format
from tests.cli.conftest import Luman
from tests.support import PASSWORD, unique_email

OK, ERROR, USAGE, UNAUTHENTICATED = 0, 1, 2, 3


def _json(text: str) -> Any:
    return json.loads(text)


def _owner_of(luman: Luman, slug: str) -> None:
    result = luman(
        "register", "--email", unique_email(), "--name", "Ada", "--password-stdin", input=PASSWORD
    )
    assert result.exit_code == OK, result.output
    result = luman("org", "create", "Acme", "--slug", slug)
    assert result.exit_code == OK, result.output


def test_create_list_exchange_introspect_delete(luman: Luman, tmp_path: Path) -> None:
    _owner_of(luman, "acme-cli")
    result = luman(
        "--json", "org", "service-account", "create", "acme-cli", "billing", "--scope", "introspect"
    )
    assert result.exit_code == OK, result.output
    created = _json(result.stdout)
    secret = created["secret"]
    assert token_format.verify_checksum(secret, token_format.SERVICE_PREFIX)
    account_id = created["service_account"]["id"]
    assert created["service_account"]["scopes"] == ["introspect"]

    # People see the secret once, with a warning on stderr.
    result = luman("org", "service-account", "create", "acme-cli", "other", "--scope", "read")
    assert result.exit_code == OK, result.output
    assert "Secret:" in result.stdout
    assert "only time the secret is shown" in result.stderr

    result = luman("org", "service-accounts", "acme-cli")
    assert result.exit_code == OK, result.output
    assert "billing" in result.stdout
    assert "lms_..." + secret[-4:] in result.stdout
    assert secret not in result.stdout

    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(secret + "\n")
    result = luman("--json", "service-token", "--secret-file", str(secret_file))
    assert result.exit_code == OK, result.output
    issued = _json(result.stdout)
    assert issued["scopes"] == ["introspect"]
    # Plain output is the bare token, for `TOKEN=$(luman service-token ...)`.
    result = luman("service-token", "--secret-file", "-", input=secret)
    assert result.exit_code == OK, result.output
    assert result.stdout.count(".") == 2  # header.payload.signature, nothing else

    user_token = _json(luman.auth_file.read_text())["token"]
    # The token to look at comes from stdin or a file, never the command line (`ps`).
    args = ("--json", "introspect", "--token-file", "-", "--secret-file", str(secret_file))
    result = luman(*args, input=user_token + "\n")
    assert result.exit_code == OK, result.output
    found = _json(result.stdout)
    assert (found["active"], found["token_kind"]) == (True, "personal_token")
    token_file = tmp_path / "token.txt"
    token_file.write_text("lmn_unknown\n")
    result = luman("introspect", "--token-file", str(token_file), "--secret-file", str(secret_file))
    assert (result.exit_code, result.stdout.strip()) == (ERROR, "Not active.")
    # The old positional form is gone: a token argument is a usage error, not a lookup.
    result = luman("introspect", user_token, "--secret-file", str(secret_file))
    assert result.exit_code == USAGE
    result = luman("introspect", "--token-file", "-", "--secret-file", "-", input=user_token)
    assert result.exit_code == USAGE

    result = luman("--json", "org", "service-account", "delete", "acme-cli", account_id)
    assert result.exit_code == OK, result.output
    assert _json(result.stdout)["deleted"] is True
    result = luman("service-token", "--secret-file", str(secret_file))
    assert result.exit_code == UNAUTHENTICATED, result.output


def test_errors_have_their_exit_codes(luman: Luman, tmp_path: Path) -> None:
    _owner_of(luman, "acme-bad")
    result = luman("org", "service-account", "create", "acme-bad", "x", "--scope", "root")
    assert result.exit_code == ERROR
    assert "scopes" in result.output
    result = luman("org", "service-account", "create", "acme-bad", "x")
    assert result.exit_code == USAGE  # --scope is required
    result = luman("org", "service-account", "delete", "acme-bad", "not-a-uuid")
    assert result.exit_code == ERROR
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    result = luman("service-token", "--secret-file", str(empty))
    assert result.exit_code == USAGE
    result = luman("introspect", "--token-file", str(empty), "--secret-file", str(empty))
    assert result.exit_code == USAGE
    assert "--token-file" in result.output
    assert "--help" not in result.stdout
    result = luman("org", "--help")
    assert "service-accounts" in result.stdout
