"""`luman org rename|delete|transfer|transfer-status|accept-transfer|decline-transfer|
cancel-transfer` end to end against the real server."""

from __future__ import annotations

import json
from typing import Any

from tests.cli.conftest import Luman
from tests.support import PASSWORD, unique_email

OK, ERROR, USAGE = 0, 1, 2


def _json(text: str) -> Any:
    return json.loads(text)


def _register(luman: Luman, name: str) -> str:
    email = unique_email(name.lower())
    result = luman("register", "--email", email, "--name", name, "--password-stdin", input=PASSWORD)
    assert result.exit_code == OK, result.output
    return email


def _team(luman: Luman, slug: str) -> tuple[Luman, str]:
    """`luman` is the owner of `slug`; the returned CLI is a member's, on another machine."""
    _register(luman, "Ada")
    assert luman("org", "create", "Acme", "--slug", slug).exit_code == OK
    grace = luman.machine("grace")
    email = _register(grace, "Grace")
    result = luman("org", "add", slug, email, "--role", "admin")
    assert result.exit_code == OK, result.output
    return grace, email


def test_rename_and_change_the_slug(luman: Luman) -> None:
    admin, _ = _team(luman, "acme-rn")
    result = admin("org", "rename", "acme-rn", "Acme Corporation")
    assert result.exit_code == OK, result.output
    assert "acme-rn is now Acme Corporation (acme-rn)." in result.stdout

    # Admins may not change the slug.
    result = admin("org", "rename", "acme-rn", "--slug", "acme-corp")
    assert result.exit_code == ERROR
    assert "owner" in result.stderr

    result = luman("--json", "org", "rename", "acme-rn", "--slug", "acme-corp")
    assert result.exit_code == OK, result.output
    assert _json(result.stdout)["slug"] == "acme-corp"
    # The old slug still leads there, and shows the new one.
    result = admin("--json", "org", "show", "acme-rn")
    assert result.exit_code == OK, result.output
    assert (_json(result.stdout)["slug"], _json(result.stdout)["name"]) == (
        "acme-corp",
        "Acme Corporation",
    )
    # Nobody else can take it meanwhile.
    result = admin("org", "create", "Copycat", "--slug", "acme-rn")
    assert result.exit_code == ERROR
    assert "reserved" in result.stderr

    assert luman("org", "rename", "acme-corp").exit_code == USAGE


def test_delete_asks_for_the_slug(luman: Luman) -> None:
    admin, _ = _team(luman, "acme-del")
    result = admin("org", "delete", "acme-del", "--confirm", "acme-del")
    assert result.exit_code == ERROR
    assert "owner" in result.stderr

    result = luman("org", "delete", "acme-del", input="acme\n")
    assert result.exit_code == ERROR
    assert "nothing deleted" in result.stderr
    assert luman("org", "show", "acme-del").exit_code == OK

    result = luman("org", "delete", "acme-del", input="acme-del\n")
    assert result.exit_code == OK, result.output
    assert "Deleted acme-del." in result.stdout
    assert luman("org", "show", "acme-del").exit_code == ERROR


def test_delete_with_confirm_and_json(luman: Luman) -> None:
    _team(luman, "acme-del2")
    assert luman("--json", "org", "delete", "acme-del2").exit_code == USAGE
    result = luman("--json", "org", "delete", "acme-del2", "--confirm", "acme-del2")
    assert result.exit_code == OK, result.output
    assert _json(result.stdout) == {"organization": "acme-del2", "deleted": True}


def test_transfer_and_accept(luman: Luman) -> None:
    grace, email = _team(luman, "acme-tr")
    result = luman("org", "transfer", "acme-tr", email)
    assert result.exit_code == OK, result.output
    assert f"Offered ownership of acme-tr to {email}" in result.stdout

    result = grace("--json", "org", "transfer-status", "acme-tr")
    assert result.exit_code == OK, result.output
    assert _json(result.stdout)["to_email"] == email

    result = grace("org", "accept-transfer", "acme-tr")
    assert result.exit_code == OK, result.output
    assert "You are now an owner of acme-tr." in result.stdout
    result = grace("--json", "org", "members", "acme-tr")
    roles = {m["email"]: m["role"] for m in _json(result.stdout)}
    assert roles[email] == "owner"
    assert sorted(roles.values()) == ["admin", "owner"]


def test_decline_and_cancel(luman: Luman) -> None:
    grace, email = _team(luman, "acme-dc")
    assert luman("org", "transfer", "acme-dc", email).exit_code == OK
    result = grace("org", "decline-transfer", "acme-dc")
    assert result.exit_code == OK, result.output
    result = grace("org", "accept-transfer", "acme-dc")
    assert result.exit_code == ERROR
    assert "no ownership transfer is pending" in result.stderr

    assert luman("org", "transfer", "acme-dc", email).exit_code == OK
    result = luman("--json", "org", "cancel-transfer", "acme-dc")
    assert result.exit_code == OK, result.output
    assert _json(result.stdout) == {"organization": "acme-dc", "cancelled": True}
    assert luman("org", "transfer-status", "acme-dc").exit_code == ERROR


def test_help_shows_the_new_commands_with_examples(luman: Luman) -> None:
    result = luman("org", "--help")
    assert result.exit_code == OK
    for command in (
        "rename",
        "delete",
        "transfer",
        "transfer-status",
        "accept-transfer",
        "decline-transfer",
        "cancel-transfer",
    ):
        assert command in result.stdout
    for command in ("rename", "delete", "transfer", "accept-transfer"):
        assert "Example" in luman("org", command, "--help").stdout
