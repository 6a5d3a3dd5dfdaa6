"""`luman org invite|invitations|resend-invite|cancel-invite` and `luman invitations|accept|
decline` end to end against the real server, with real mail (tests/mail_support.py): the
invitee verifies their address with the code mailed to them and accepts the invitation named
in the invitation email. The inviter verifies their own address first, as sending needs."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from luman.server.config import Settings
from luman.server.organization.invitations import SUBJECT
from tests.cli.conftest import Luman
from tests.mail_support import Mailbox, code_of
from tests.support import PASSWORD, FakeClock, unique_email

OK, ERROR, USAGE = 0, 1, 2


@pytest.fixture
def settings(settings: Settings, mailbox: Mailbox) -> Settings:
    return dataclasses.replace(settings, smtp_url=mailbox.url)


def _json(text: str) -> Any:
    return json.loads(text)


def _register(luman: Luman, name: str, email: str | None = None) -> str:
    email = email or unique_email(name.lower())
    result = luman("register", "--email", email, "--name", name, "--password-stdin", input=PASSWORD)
    assert result.exit_code == OK, result.output
    return email


def _verify(luman: Luman, mailbox: Mailbox, email: str) -> None:
    result = luman("account", "verify", code_of(mailbox.wait_for(email, "verify")))
    assert result.exit_code == OK, result.output


def test_invite_list_and_accept_from_the_email(luman: Luman, mailbox: Mailbox) -> None:
    ada = _register(luman, "Ada")
    assert luman("org", "create", "Acme Rockets", "--slug", "acme-inv").exit_code == OK
    grace = luman.machine("grace")
    email = unique_email("grace")

    result = luman("org", "invite", "acme-inv", email, "--role", "admin")
    assert result.exit_code == ERROR
    assert result.stderr == (
        "error: verify your email address first: enter the code from the verification "
        "email with `luman account verify CODE` (`luman account verify-email` sends a new one)\n"
    )
    _verify(luman, mailbox, ada)
    result = luman("org", "invite", "acme-inv", email, "--role", "admin")
    assert result.exit_code == OK, result.output
    assert f"Invited {email} to acme-inv as admin" in result.stdout

    listed = luman("--json", "org", "invitations", "acme-inv")
    assert listed.exit_code == OK, listed.output
    [invitation] = _json(listed.stdout)
    assert (invitation["email"], invitation["role"], invitation["state"]) == (
        email,
        "admin",
        "pending",
    )
    table = luman("org", "invitations", "acme-inv")
    assert invitation["id"] in table.stdout
    assert "EXPIRES" in table.stdout

    # Grace registers afterwards with the invited address and verifies it.
    _register(grace, "Grace", email)
    result = grace("invitations")
    assert result.exit_code == ERROR
    assert "`luman account verify CODE`" in result.stderr
    _verify(grace, mailbox, email)

    result = grace("invitations")
    assert result.exit_code == OK, result.output
    assert "Acme Rockets (acme-inv)" in result.stdout
    mail = mailbox.wait_for(email, SUBJECT)
    found = re.search(r"luman accept (\S+)", mail.text)
    assert found is not None
    result = grace("accept", found.group(1))
    assert result.exit_code == OK, result.output
    assert "You joined Acme Rockets (acme-inv) as admin." in result.stdout

    assert grace("invitations").stdout.strip() == "You have no pending invitations."
    result = grace("accept", found.group(1))
    assert result.exit_code == ERROR
    assert "accepted" in result.stderr
    closed = _json(luman("--json", "org", "invitations", "acme-inv", "--all").stdout)
    assert [i["state"] for i in closed] == ["accepted"]
    assert luman("org", "invitations", "acme-inv").stdout.startswith(
        "acme-inv has no pending invitations."
    )


def test_decline_resend_and_cancel(luman: Luman, mailbox: Mailbox, clock: FakeClock) -> None:
    _verify(luman, mailbox, _register(luman, "Ada"))
    assert luman("org", "create", "Acme", "--slug", "acme-dec").exit_code == OK
    grace = luman.machine("grace")
    email = _register(grace, "Grace")
    _verify(grace, mailbox, email)

    first = _json(luman("--json", "org", "invite", "acme-dec", email).stdout)
    result = grace("--json", "decline", first["id"])
    assert result.exit_code == OK, result.output
    assert _json(result.stdout) == {"invitation_id": first["id"], "declined": True}

    # One message a minute to an address, even after a decline.
    result = luman("org", "invite", "acme-dec", email)
    assert result.exit_code == ERROR
    assert result.stderr == (
        "error: an invitation was sent to this address less than a minute ago: try again in 60s\n"
    )
    clock.advance(seconds=61)
    second = _json(luman("--json", "org", "invite", "acme-dec", email).stdout)
    result = luman("org", "resend-invite", "acme-dec", second["id"])
    assert result.exit_code == ERROR
    assert "less than a minute ago: try again in 60s" in result.stderr
    # Inviting the address again names the invitation to resend.
    result = luman("org", "invite", "acme-dec", email.upper())
    assert result.exit_code == ERROR
    assert f"resend it: luman org resend-invite acme-dec {second['id']}" in result.stderr
    result = luman("--json", "org", "invite", "acme-dec", email)
    assert _json(result.stderr)["error"]["invitation_id"] == second["id"]
    clock.advance(seconds=61)
    result = luman("--json", "org", "resend-invite", "acme-dec", second["id"])
    assert result.exit_code == OK, result.output
    assert _json(result.stdout)["send_count"] == 2

    result = luman("org", "cancel-invite", "acme-dec", second["id"])
    assert result.exit_code == OK, result.output
    assert f"Cancelled the invitation of {email} to acme-dec." in result.stdout
    result = grace("accept", second["id"])
    assert result.exit_code == ERROR
    assert "cancelled" in result.stderr

    # A member of the organization may not invite; bad input is a usage error.
    assert luman("org", "invite", "acme-dec", email, "--role", "boss").exit_code == USAGE
    assert grace("org", "invite", "acme-dec", unique_email()).exit_code == ERROR
    assert grace("accept").exit_code == USAGE
    assert "owners and admins" in " ".join(luman("org", "invite", "--help").stdout.split())
