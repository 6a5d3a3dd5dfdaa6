"""Password reset through the real server and a real SMTP server (tests/mail_support.py), on
SQLite and PostgreSQL: the links and codes come from the messages received."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import grpc
import pytest
from sqlalchemy import select

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App
from luman.server.auth.email_codes import PASSWORD_RESET
from luman.server.config import Settings
from luman.server.db.models import AuditEvent, EmailCode, MailMessage
from luman.server.db.session import Sessions
from luman.server.mail.worker import retry_delay
from tests.mail_support import Mailbox, code_of, link_token, verify
from tests.server.organization_support import Account, sign_up
from tests.support import PASSWORD, FakeClock, RichError, bearer, refused_reason, rich_error

Stub = auth_service_pb2_grpc.AuthServiceStub
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def settings(settings: Settings, mailbox: Mailbox) -> Settings:
    return dataclasses.replace(settings, smtp_url=mailbox.url)


def _error(call: Callable[[], object]) -> RichError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return rich_error(caught.value)


def _verified(auth: Stub, mailbox: Mailbox) -> Account:
    account = sign_up(auth)
    verify(auth, mailbox, account.email)
    return account


def _request(auth: Stub, email: str) -> auth_service_pb2.RequestPasswordResetResponse:
    response: auth_service_pb2.RequestPasswordResetResponse = auth.RequestPasswordReset(
        auth_service_pb2.RequestPasswordResetRequest(email=email)
    )
    return response


def _reset(auth: Stub, **fields: str | bool) -> auth_service_pb2.ResetPasswordResponse:
    response: auth_service_pb2.ResetPasswordResponse = auth.ResetPassword(
        auth_service_pb2.ResetPasswordRequest(new_password=NEW_PASSWORD, **fields)  # type: ignore[arg-type]
    )
    return response


def _login(auth: Stub, email: str, password: str) -> auth_service_pb2.LoginResponse:
    response: auth_service_pb2.LoginResponse = auth.Login(
        auth_service_pb2.LoginRequest(email=email, password=password)
    )
    return response


def _outbox_empty(sessions: Sessions) -> bool:
    with sessions.read.begin() as session:
        return not session.scalars(select(MailMessage.id)).all()


def _wait_outbox_empty(sessions: Sessions) -> None:
    """Until the mail worker has taken every queued message: sent, or dropped by its renderer
    (a dropped one is deleted without mail)."""
    deadline = time.monotonic() + 10
    while not _outbox_empty(sessions):
        assert time.monotonic() < deadline, "the outbox did not empty"
        time.sleep(0.02)


def test_the_same_answer_for_any_address_and_only_a_verified_one_gets_mail(
    auth: Stub, mailbox: Mailbox, sessions: Sessions
) -> None:
    verified = _verified(auth, mailbox)
    unverified = sign_up(auth)
    mailbox.wait_for(unverified.email, "verify")
    unknown = "nobody-here@example.com"

    answers = [_request(auth, email) for email in (unknown, unverified.email, verified.email)]

    assert all(answer == auth_service_pb2.RequestPasswordResetResponse() for answer in answers)
    mail = mailbox.wait_for(verified.email, "reset")
    assert "/password/reset?token=" in mail.text
    _wait_outbox_empty(sessions)
    assert mailbox.to(unverified.email, "reset") == []
    assert mailbox.to(unknown) == []
    with sessions.read.begin() as session:
        requested = session.scalars(
            select(AuditEvent.user_id).where(
                AuditEvent.action == "account.password_reset_requested"
            )
        ).all()
    assert [str(user_id) for user_id in requested] == [verified.id]


def test_reset_by_link_revokes_every_session(auth: Stub, mailbox: Mailbox) -> None:
    account = _verified(auth, mailbox)
    other = _login(auth, account.email, PASSWORD).tokens.access_token
    _request(auth, account.email)
    mail = mailbox.wait_for(account.email, "reset")

    reset = _reset(auth, token=link_token(mail))

    assert (reset.revoked_sessions, reset.revoked_cli_tokens) == (2, 0)
    assert refused_reason(auth, account.token) == "TOKEN_REVOKED"
    assert refused_reason(auth, other) == "TOKEN_REVOKED"
    error = _error(lambda: _login(auth, account.email, PASSWORD))
    assert error.reason == "INVALID_CREDENTIALS"
    assert _login(auth, account.email, NEW_PASSWORD).user.email == account.email


def test_reset_by_code_with_cli_tokens(auth: Stub, mailbox: Mailbox, sessions: Sessions) -> None:
    account = _verified(auth, mailbox)
    cli = auth.CliLogin(
        auth_service_pb2.CliLoginRequest(email=account.email, password=PASSWORD)
    ).token
    _request(auth, account.email)
    code = code_of(mailbox.wait_for(account.email, "reset"))

    reset = _reset(auth, email=account.email, code=code, revoke_cli_tokens=True)

    assert (reset.revoked_sessions, reset.revoked_cli_tokens) == (1, 1)
    assert refused_reason(auth, cli) == "TOKEN_REVOKED"
    with sessions.read.begin() as session:
        (event,) = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "account.password_reset")
        ).all()
    assert str(event.user_id) == account.id


def test_a_reset_works_once(auth: Stub, mailbox: Mailbox) -> None:
    account = _verified(auth, mailbox)
    _request(auth, account.email)
    mail = mailbox.wait_for(account.email, "reset")
    _reset(auth, token=link_token(mail))

    again = _error(lambda: _reset(auth, token=link_token(mail)))

    assert (again.code, again.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "EMAIL_CODE_USED")


def test_an_expired_reset_is_refused(auth: Stub, mailbox: Mailbox, clock: FakeClock) -> None:
    account = _verified(auth, mailbox)
    _request(auth, account.email)
    mail = mailbox.wait_for(account.email, "reset")
    clock.advance(hours=1, seconds=1)

    error = _error(lambda: _reset(auth, email=account.email, code=code_of(mail)))

    assert error.reason == "EMAIL_CODE_EXPIRED"
    assert _login(auth, account.email, PASSWORD).user.email == account.email


def test_five_wrong_codes_spend_the_reset(auth: Stub, mailbox: Mailbox) -> None:
    account = _verified(auth, mailbox)
    _request(auth, account.email)
    code = code_of(mailbox.wait_for(account.email, "reset"))
    wrong = "BBBB-BBBB" if code != "BBBB-BBBB" else "CCCC-CCCC"
    for _ in range(5):
        error = _error(lambda: _reset(auth, email=account.email, code=wrong))
        assert error.reason == "EMAIL_CODE_INVALID"

    spent = _error(lambda: _reset(auth, email=account.email, code=code))

    assert spent.reason == "EMAIL_CODE_INVALID"


def test_resets_are_limited_per_account(
    auth: Stub, mailbox: Mailbox, clock: FakeClock, sessions: Sessions
) -> None:
    account = _verified(auth, mailbox)
    _request(auth, account.email)
    mailbox.wait_for(account.email, "reset")
    _request(auth, account.email)  # within the minute: dropped
    _wait_outbox_empty(sessions)
    # Here, before the hourly cap can hide it: the one-a-minute rule dropped that one.
    assert len(mailbox.to(account.email, "reset")) == 1
    for count in (2, 3):
        clock.advance(minutes=1)
        _request(auth, account.email)
        mailbox.wait_for(account.email, "reset", count=count)
    clock.advance(minutes=1)
    _request(auth, account.email)  # a 4th within the hour: dropped
    _wait_outbox_empty(sessions)

    assert len(mailbox.to(account.email, "reset")) == 3


def _through_refusals(app: App, sessions: Sessions, clock: FakeClock, refusals: int) -> None:
    """Move the clock past each retry delay (30 s, 60 s, 120 s, ...) once the mail worker has
    counted the refusal before it, until the attempt after the last refusal."""
    assert app.mail is not None
    for attempt in range(1, refusals + 1):
        deadline = time.monotonic() + 10
        while True:
            with sessions.read.begin() as session:
                attempts = session.scalars(select(MailMessage.attempts)).all()
            if list(attempts) == [attempt]:
                break
            assert time.monotonic() < deadline, f"attempt {attempt} not seen: {attempts}"
            time.sleep(0.02)
        clock.advance(seconds=retry_delay(attempt).total_seconds())
        app.mail.wake()


def test_a_reset_message_survives_refused_attempts(
    app: App, auth: Stub, mailbox: Mailbox, clock: FakeClock, sessions: Sessions
) -> None:
    account = _verified(auth, mailbox)
    mailbox.refuse_next(4)  # 451: try again later
    _request(auth, account.email)

    _through_refusals(app, sessions, clock, 4)

    mail = mailbox.wait_for(account.email, "reset")
    _reset(auth, email=account.email, code=code_of(mail))
    assert _login(auth, account.email, NEW_PASSWORD).user.email == account.email
    with sessions.read.begin() as session:
        codes = session.scalars(select(EmailCode).where(EmailCode.purpose == PASSWORD_RESET))
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "account.password_reset_requested")
        )
        # One request, however many attempts: one code row, one audit event.
        assert (len(codes.all()), len(events.all())) == (1, 1)
    # ... and one of the hour's three: two more are sent.
    for count in (2, 3):
        clock.advance(minutes=1)
        _request(auth, account.email)
        mailbox.wait_for(account.email, "reset", count=count)


def test_two_resets_with_one_token_at_once_one_succeeds(auth: Stub, mailbox: Mailbox) -> None:
    account = _verified(auth, mailbox)
    _request(auth, account.email)
    token = link_token(mailbox.wait_for(account.email, "reset"))
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt() -> None:
        start.wait()
        try:
            _reset(auth, token=token)
            outcomes.append("ok")
        except grpc.RpcError as exc:
            outcomes.append(rich_error(exc).reason)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["EMAIL_CODE_USED", "ok"]


def test_a_short_password_names_the_field(auth: Stub) -> None:
    error = _error(
        lambda: auth.ResetPassword(
            auth_service_pb2.ResetPasswordRequest(token="t" * 43, new_password="short")
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "new_password" in error.field_violations


def test_request_needs_a_valid_address(auth: Stub) -> None:
    error = _error(lambda: _request(auth, "not an address"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "email" in error.field_violations


def test_signed_in_calls_still_work_without_a_token(auth: Stub, mailbox: Mailbox) -> None:
    # Public: a bearer token is not needed, and a valid one changes nothing.
    account = _verified(auth, mailbox)
    response = auth.RequestPasswordReset(
        auth_service_pb2.RequestPasswordResetRequest(email=account.email),
        metadata=bearer(account.token),
    )
    assert response == auth_service_pb2.RequestPasswordResetResponse()
