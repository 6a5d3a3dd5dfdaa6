"""`luman account verify-email | verify | forgot-password | reset-password` and whoami's
verification line, end to end: the real server, a real SMTP server, the codes from the mail."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.cli import account as account_commands
from luman.server.app import App
from luman.server.config import Settings
from tests.cli.conftest import Luman
from tests.mail_support import Mailbox, code_of, link_token
from tests.support import PASSWORD, FakeClock, refused_reason, register, unique_email

OK, ERROR, USAGE, UNAUTHENTICATED = 0, 1, 2, 3
NEW_PASSWORD = "a brand new passphrase"
Stub = auth_service_pb2_grpc.AuthServiceStub


@pytest.fixture
def settings(settings: Settings, mailbox: Mailbox) -> Settings:
    return dataclasses.replace(settings, smtp_url=mailbox.url)


@pytest.fixture
def channel(app: App) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield channel


@pytest.fixture
def auth(channel: grpc.Channel) -> Stub:
    return auth_service_pb2_grpc.AuthServiceStub(channel)


def _signed_up(luman: Luman, auth: Stub) -> tuple[str, str]:
    """A new account logged in on `luman`; its email and a web session's access token."""
    email = unique_email()
    web = register(auth, email=email, name="Ada").tokens.access_token
    result = luman(
        "login", "--password", "--email", email, "--password-stdin", input=PASSWORD + "\n"
    )
    assert result.exit_code == OK, result.output
    return email, web


def test_verify_with_the_code_and_whoami_shows_it(
    luman: Luman, auth: Stub, mailbox: Mailbox
) -> None:
    email, _ = _signed_up(luman, auth)
    status = next(line for line in luman("whoami").stdout.splitlines() if "Status:" in line)
    assert status == (
        "Status:  email not verified (luman account verify CODE; "
        "luman account verify-email sends a new message)"
    )
    code = code_of(mailbox.wait_for(email, "verify"))

    result = luman("account", "verify", code.lower())

    assert result.exit_code == OK, result.output
    assert f"Verified {email}." in result.stdout
    assert json.loads(luman("--json", "whoami").stdout)["email_verified"] is True
    again = luman("--json", "account", "verify-email")
    assert again.exit_code == ERROR
    assert json.loads(again.stderr)["error"]["reason"] == "EMAIL_ALREADY_VERIFIED"


def test_verify_email_resends_and_the_token_verifies(
    luman: Luman, auth: Stub, mailbox: Mailbox, clock: FakeClock
) -> None:
    email, _ = _signed_up(luman, auth)
    mailbox.wait_for(email, "verify")
    soon = luman("--json", "account", "verify-email")
    assert soon.exit_code == ERROR
    assert json.loads(soon.stderr)["error"]["reason"] == "EMAIL_RECENTLY_SENT"
    clock.advance(minutes=1)

    sent = luman("--json", "account", "verify-email")

    assert sent.exit_code == OK, sent.output
    assert json.loads(sent.stdout) == {"sent": True, "email": email}
    token = link_token(mailbox.wait_for(email, "verify", count=2))
    verified = luman("--json", "account", "verify", "--token", token)
    assert verified.exit_code == OK, verified.output
    assert json.loads(verified.stdout)["user"]["email_verified"] is True


def test_verify_refuses_a_wrong_code_and_bad_usage(
    luman: Luman, auth: Stub, mailbox: Mailbox
) -> None:
    email, _ = _signed_up(luman, auth)
    code = code_of(mailbox.wait_for(email, "verify"))
    wrong = "BBBB-BBBB" if code != "BBBB-BBBB" else "CCCC-CCCC"

    result = luman("account", "verify", wrong)

    # A wrong code is a refused request, not a rejected login: the saved login still works.
    assert result.exit_code == ERROR
    assert result.stderr == (
        "error: the link or code is not valid; check it, use the newest message, "
        "or ask for a new one\n"
    )
    assert luman("whoami").exit_code == OK
    missing = luman("account", "verify")
    assert missing.exit_code == USAGE
    assert "missing CODE" in missing.stderr
    both = luman("account", "verify", code, "--token", "t")
    assert both.exit_code == USAGE
    assert "not both" in both.stderr
    assert luman("account", "verify", "--token", "t", "--email", email).exit_code == USAGE


def test_a_wrong_code_signed_out_is_not_a_login_problem(
    luman: Luman, auth: Stub, mailbox: Mailbox
) -> None:
    email = unique_email()
    register(auth, email=email, name="Ada")
    code = code_of(mailbox.wait_for(email, "verify"))
    wrong = "BBBB-BBBB" if code != "BBBB-BBBB" else "CCCC-CCCC"

    verify = luman("--json", "account", "verify", wrong, "--email", email)
    reset = luman(
        "--json",
        "account",
        "reset-password",
        email,
        "--code",
        wrong,
        "--password-stdin",
        input=NEW_PASSWORD + "\n",
    )

    for result in (verify, reset):
        assert result.exit_code == ERROR, result.output
        error = json.loads(result.stderr)["error"]
        assert (error["code"], error["reason"]) == ("UNAUTHENTICATED", "EMAIL_CODE_INVALID")
        assert "luman login" not in error["message"]
    assert "luman login" not in luman("account", "verify", wrong, "--email", email).stderr


def test_verify_with_email_needs_no_login(luman: Luman, auth: Stub, mailbox: Mailbox) -> None:
    email = unique_email()
    register(auth, email=email, name="Ada")
    code = code_of(mailbox.wait_for(email, "verify"))
    signed_out = luman("account", "verify", code)
    assert signed_out.exit_code == USAGE
    assert "--email ADDRESS" in signed_out.stderr

    result = luman("account", "verify", code, "--email", email)

    assert result.exit_code == OK, result.output
    assert f"Verified {email}." in result.stdout
    assert not luman.auth_file.exists()


def test_forgot_and_reset_password_with_prompts(
    luman: Luman, auth: Stub, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(account_commands, "_at_terminal", lambda: True)
    email, web = _signed_up(luman, auth)
    assert luman("account", "verify", code_of(mailbox.wait_for(email, "verify"))).exit_code == OK
    anonymous = luman.machine("elsewhere")

    asked = anonymous("account", "forgot-password", email)

    assert asked.exit_code == OK, asked.output
    assert "a reset message is on its way" in asked.stdout
    assert f"Then run `luman account reset-password {email}`." in asked.stdout
    code = code_of(mailbox.wait_for(email, "reset"))
    reset = anonymous(
        "account",
        "reset-password",
        email,
        "--revoke-cli-tokens",
        input=f"{code}\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n",
    )
    assert reset.exit_code == OK, reset.output
    assert f"Code from the message: {code}" in reset.output  # not a secret: shown as typed
    assert "revoked 1 CLI token(s)" in reset.stdout
    assert refused_reason(auth, web) == "TOKEN_REVOKED"
    assert luman("whoami").exit_code == UNAUTHENTICATED
    auth.Login(auth_service_pb2.LoginRequest(email=email, password=NEW_PASSWORD))


def test_reset_password_for_scripts_and_a_used_code(
    luman: Luman, auth: Stub, mailbox: Mailbox
) -> None:
    email, _ = _signed_up(luman, auth)
    assert luman("account", "verify", code_of(mailbox.wait_for(email, "verify"))).exit_code == OK
    assert luman("--json", "account", "forgot-password", email).exit_code == OK
    code = code_of(mailbox.wait_for(email, "reset"))
    args = ("--json", "account", "reset-password", email, "--code", code, "--password-stdin")

    first = luman(*args, input=NEW_PASSWORD + "\n")
    second = luman(*args, input=NEW_PASSWORD + "\n")

    assert first.exit_code == OK, first.output
    assert json.loads(first.stdout) == {
        "reset": True,
        "revoked_sessions": 1,
        "revoked_cli_tokens": 0,
    }
    assert second.exit_code == ERROR
    assert json.loads(second.stderr)["error"]["reason"] == "EMAIL_CODE_USED"
    # This machine's login is a CLI token: the reset signed out sessions, not it.
    assert luman("whoami").exit_code == OK


def test_reset_password_without_revoking_keeps_the_saved_login(
    luman: Luman, auth: Stub, mailbox: Mailbox
) -> None:
    email, _ = _signed_up(luman, auth)
    assert luman("account", "verify", code_of(mailbox.wait_for(email, "verify"))).exit_code == OK
    assert luman("account", "forgot-password", email).exit_code == OK
    code = code_of(mailbox.wait_for(email, "reset"))

    reset = luman(
        "account",
        "reset-password",
        email,
        "--code",
        code,
        "--password-stdin",
        input=NEW_PASSWORD + "\n",
    )

    assert reset.exit_code == OK, reset.output
    assert "signed out 1 session(s)" in reset.stdout
    assert "CLI tokens were not revoked" in reset.stdout
    assert "luman login" not in reset.stdout
    assert luman("whoami").exit_code == OK


def test_reset_password_says_what_is_missing(luman: Luman) -> None:
    email = unique_email()
    for args in ((), ("--code", "BCDF-GHJK")):
        result = luman("account", "reset-password", *args)
        assert result.exit_code == USAGE
        assert "missing EMAIL" in result.stderr
    both = luman("account", "reset-password", email, "--token", "t")
    assert both.exit_code == USAGE
    assert "not both" in both.stderr

    # No terminal to ask: a usage error naming the option, not a hidden prompt.
    no_code = luman("account", "reset-password", email, input="")
    assert no_code.exit_code == USAGE
    assert "missing --code" in no_code.stderr
    no_password = luman("account", "reset-password", email, "--code", "BCDF-GHJK", input="")
    assert no_password.exit_code == USAGE
    assert "--password-stdin" in no_password.stderr


def test_forgot_password_answers_alike_for_an_unknown_address(luman: Luman) -> None:
    result = luman("--json", "account", "forgot-password", "nobody@example.com")
    assert result.exit_code == OK, result.output
    assert json.loads(result.stdout) == {"requested": True, "email": "nobody@example.com"}


def test_the_token_can_stay_off_the_command_line(
    luman: Luman, auth: Stub, mailbox: Mailbox, clock: FakeClock
) -> None:
    email, _ = _signed_up(luman, auth)
    token = link_token(mailbox.wait_for(email, "verify"))
    help_text = luman("account", "verify", "--help").stdout
    assert "--token-stdin" in help_text
    assert "(ps)" in help_text

    verified = luman("--json", "account", "verify", "--token-stdin", input=token + "\n")

    assert verified.exit_code == OK, verified.output
    assert json.loads(verified.stdout)["user"]["email_verified"] is True
    assert luman("account", "verify", "--token", "t", "--token-stdin").exit_code == USAGE
    assert luman("account", "verify", "--token-stdin", input="\n").exit_code == USAGE
    assert luman("--json", "account", "forgot-password", email).exit_code == OK
    reset_token = link_token(mailbox.wait_for(email, "reset"))
    anonymous = luman.machine("elsewhere")
    reset = anonymous(
        "--json",
        "account",
        "reset-password",
        "--token-stdin",
        "--password-stdin",
        input=f"{reset_token}\n{NEW_PASSWORD}\n",
    )
    assert reset.exit_code == OK, reset.output
    assert json.loads(reset.stdout)["reset"] is True
    auth.Login(auth_service_pb2.LoginRequest(email=email, password=NEW_PASSWORD))
    assert "--token-stdin" in luman("account", "reset-password", "--help").stdout
