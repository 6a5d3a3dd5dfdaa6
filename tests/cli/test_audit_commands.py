"""`luman audit` and `luman org audit SLUG` end to end against the real server."""

from __future__ import annotations

import json
from typing import Any

from tests.cli.conftest import Luman
from tests.support import PASSWORD, unique_email

OK, ERROR, USAGE = 0, 1, 2


def _json(text: str) -> Any:
    return json.loads(text)


def _register(luman: Luman, name: str = "Ada") -> str:
    email = unique_email(name.lower())
    result = luman("register", "--email", email, "--name", name, "--password-stdin", input=PASSWORD)
    assert result.exit_code == OK, result.output
    return email


def test_audit_shows_your_account_events_as_a_table_and_json(luman: Luman) -> None:
    _register(luman)
    result = luman("audit")
    assert result.exit_code == OK, result.output
    header = result.stdout.splitlines()[0].split()
    assert header[:2] == ["TIME", "ACTION"]
    assert "account.registered" in result.stdout
    assert "127.0.0.1" in result.stdout

    result = luman("--json", "audit")
    assert result.exit_code == OK, result.output
    events = _json(result.stdout)
    assert "account.registered" in [event["action"] for event in events]
    times = [event["time"] for event in events]
    assert times == sorted(times, reverse=True)
    assert {"id", "actor_type", "actor_id", "user_id", "details", "request_id"} <= set(events[0])

    result = luman("audit", "--json", "--action", "account.registered")
    assert [event["action"] for event in _json(result.stdout)] == ["account.registered"]
    result = luman("audit", "--since", "2999-01-01")
    assert result.exit_code == OK, result.output
    assert "No audit events." in result.stdout


def test_audit_limit_and_bad_options(luman: Luman) -> None:
    _register(luman)
    luman("org", "create", "Acme", "--slug", "acme-limit")
    result = luman("--json", "audit", "--limit", "1")
    assert result.exit_code == OK, result.output
    assert len(_json(result.stdout)) == 1
    result = luman("audit", "--since", "last tuesday")
    assert result.exit_code == USAGE
    assert "age like 7d" in result.output
    result = luman("audit", "--action", "Not An Action")
    assert result.exit_code == ERROR


def test_org_audit_for_owners_and_admins_only(luman: Luman) -> None:
    _register(luman, "Owner")
    assert luman("org", "create", "Acme", "--slug", "acme-audit").exit_code == OK
    member = luman.machine("member")
    member_email = _register(member, "Member")
    outsider = luman.machine("outsider")
    _register(outsider, "Outsider")
    result = luman("org", "add", "acme-audit", member_email, "--role", "member")
    assert result.exit_code == OK, result.output

    result = luman("org", "audit", "acme-audit")
    assert result.exit_code == OK, result.output
    assert "member.added" in result.stdout
    assert "organization.created" in result.stdout
    result = luman("--json", "org", "audit", "acme-audit", "--action", "member.added")
    events = _json(result.stdout)
    assert [event["action"] for event in events] == ["member.added"]
    assert events[0]["details"] == {"role": "member"}

    result = member("org", "audit", "acme-audit")
    assert result.exit_code == ERROR
    assert "owners and admins" in result.output
    result = outsider("org", "audit", "acme-audit")
    assert result.exit_code == ERROR
    assert "not found" in result.output.lower()
    # The member sees being added among their own account's events.
    result = member("--json", "audit", "--action", "member.added")
    assert len(_json(result.stdout)) == 1


def test_audit_help_has_examples(luman: Luman) -> None:
    for args in (("audit", "--help"), ("org", "audit", "--help")):
        result = luman(*args)
        assert result.exit_code == OK
        assert "Examples:" in result.stdout
        assert "--since" in result.stdout
        assert "--json" in result.stdout
