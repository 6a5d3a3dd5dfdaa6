"""`luman org config get|set|pull` end to end against the real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.conftest import Luman
from tests.support import PASSWORD, unique_email

OK, ERROR, USAGE = 0, 1, 2


def _register(luman: Luman, name: str = "Ada") -> str:
    email = unique_email(name.lower())
    result = luman("register", "--email", email, "--name", name, "--password-stdin", input=PASSWORD)
    assert result.exit_code == OK, result.output
    return email


def _team(luman: Luman, slug: str) -> Luman:
    """An organization owned by `luman`'s user, and another machine whose user is a member."""
    _register(luman)
    assert luman("org", "create", "Acme", "--slug", slug).exit_code == OK
    member = luman.machine("grace")
    email = _register(member, "Grace")
    result = luman("org", "add", slug, email)
    assert result.exit_code == OK, result.output
    return member


def _json(text: str) -> Any:
    return json.loads(text)


def test_pull_edit_set_and_get(luman: Luman, tmp_path: Path) -> None:
    member = _team(luman, "acme-conf")

    # Never written: an empty object, version 0.
    result = luman("--json", "org", "config", "get", "acme-conf")
    assert result.exit_code == OK, result.output
    shown = _json(result.stdout)
    assert (shown["version"], shown["etag"], shown["config"]) == (0, 'W/"0"', {})

    # pull writes it where the CLI reads it, with the etag beside it.
    result = luman("org", "config", "pull", "acme-conf")
    assert result.exit_code == OK, result.output
    pulled = luman.config_dir / "orgs" / "acme-conf" / "config.json"
    assert str(pulled) in result.stdout
    assert _json(pulled.read_text()) == {}
    assert _json((pulled.parent / "pull.json").read_text())["etag"] == 'W/"0"'

    # Edit the pulled file and set it: conditional on the pulled etag.
    pulled.write_text(json.dumps({"sources": ["https://ui.acme.dev"], "preset": "dark"}))
    result = luman("org", "config", "set", "acme-conf", str(pulled))
    assert result.exit_code == OK, result.output
    assert "version 1" in result.stdout
    assert _json((pulled.parent / "pull.json").read_text())["etag"] == 'W/"1"'

    # A member reads it, plain JSON by default.
    result = member("org", "config", "get", "acme-conf")
    assert result.exit_code == OK, result.output
    assert _json(result.stdout) == {"preset": "dark", "sources": ["https://ui.acme.dev"]}
    # ... and pulls it to their own machine.
    result = member("--json", "org", "config", "pull", "acme-conf")
    assert result.exit_code == OK, result.output
    assert _json(result.stdout)["version"] == 1
    member_copy = member.config_dir / "orgs" / "acme-conf" / "config.json"
    assert _json(member_copy.read_text())["preset"] == "dark"

    # A member may not change it.
    result = member("org", "config", "set", "acme-conf", str(member_copy))
    assert result.exit_code == ERROR
    assert "owners and admins" in result.stderr


def test_set_refuses_a_stale_pull_and_force_overwrites(luman: Luman, tmp_path: Path) -> None:
    _register(luman)
    assert luman("org", "create", "Acme", "--slug", "acme-stale").exit_code == OK
    assert luman("org", "config", "pull", "acme-stale").exit_code == OK
    other = tmp_path / "other.json"
    other.write_text('{"preset": "light"}')
    # Someone else writes meanwhile (here: with an explicit etag).
    result = luman("org", "config", "set", "acme-stale", str(other), "--if-match", 'W/"0"')
    assert result.exit_code == OK, result.output
    # Now the local pull.json is W/"1" (set updates the pull); make it stale again by hand.
    pull_file = luman.config_dir / "orgs" / "acme-stale" / "pull.json"
    meta = _json(pull_file.read_text())
    meta["etag"] = 'W/"0"'
    pull_file.write_text(json.dumps(meta))

    mine = tmp_path / "mine.json"
    mine.write_text('{"preset": "dark"}')
    result = luman("org", "config", "set", "acme-stale", str(mine))
    assert result.exit_code == ERROR
    assert 'it is now W/"1"' in result.stderr
    result = luman("--json", "org", "config", "get", "acme-stale")
    assert _json(result.stdout)["config"] == {"preset": "light"}

    result = luman("org", "config", "set", "acme-stale", "-", "--force", input='{"preset": "x"}')
    assert result.exit_code == OK, result.output
    result = luman("--json", "org", "config", "get", "acme-stale")
    assert (_json(result.stdout)["version"], _json(result.stdout)["config"]) == (2, {"preset": "x"})


def test_set_needs_a_base_version_and_a_json_object(luman: Luman, tmp_path: Path) -> None:
    _register(luman)
    assert luman("org", "create", "Acme", "--slug", "acme-base").exit_code == OK
    document = tmp_path / "c.json"
    document.write_text('{"a": 1}')
    result = luman("org", "config", "set", "acme-base", str(document))
    assert result.exit_code == USAGE
    assert "pull acme-base" in result.output
    document.write_text("[1, 2]")
    result = luman("org", "config", "set", "acme-base", str(document), "--force")
    assert result.exit_code == USAGE
    assert "JSON object" in result.output
    result = luman("org", "config", "pull", "../etc")
    assert result.exit_code == USAGE


def test_non_member_gets_not_found(luman: Luman) -> None:
    _register(luman)
    assert luman("org", "create", "Acme", "--slug", "acme-hidden").exit_code == OK
    stranger = luman.machine("stranger")
    _register(stranger, "Eve")
    result = stranger("org", "config", "get", "acme-hidden")
    assert result.exit_code == ERROR
    assert not (stranger.config_dir / "orgs").exists()


def test_help_has_examples(luman: Luman) -> None:
    for command in ("get", "set", "pull"):
        result = luman("org", "config", command, "--help")
        assert result.exit_code == OK
        assert f"luman org config {command}" in result.output
    assert "org config" in luman("--help").output


def test_set_writes_only_to_the_organization_that_was_pulled(luman: Luman, tmp_path: Path) -> None:
    """Etags are versions, which every configuration has: W/"0" of a deleted organization
    must not apply to a new one that took its slug."""
    _register(luman)
    assert luman("org", "create", "Old", "--slug", "acme-reuse").exit_code == OK
    assert luman("org", "config", "pull", "acme-reuse").exit_code == OK
    pulled = luman.config_dir / "orgs" / "acme-reuse" / "config.json"
    result = luman("org", "delete", "acme-reuse", "--confirm", "acme-reuse")
    assert result.exit_code == OK, result.output
    # The slug is free at once; the new organization's configuration is at W/"0" too.
    assert luman("org", "create", "New", "--slug", "acme-reuse").exit_code == OK
    pulled.write_text(json.dumps({"preset": "meant for the old one"}))
    result = luman("org", "config", "set", "acme-reuse", str(pulled))
    assert result.exit_code != OK
    shown = _json(luman("--json", "org", "config", "get", "acme-reuse").stdout)
    assert (shown["version"], shown["config"]) == (0, {})
