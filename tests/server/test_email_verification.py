"""Email verification through the real server and a real SMTP server (tests/mail_support.py),
on SQLite and PostgreSQL: the links and codes come from the messages received."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable

import grpc
import pytest
from sqlalchemy import select, text

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App
from luman.server.auth.email_codes import (
    PASSWORD_RESET,
    VERIFY_EMAIL,
    make_reset_renderer,
    make_verification_renderer,
)
from luman.server.config import Settings
from luman.server.db.models import AuditEvent, EmailCode, MailMessage, User
from luman.server.db.session import Sessions
from luman.server.mail.message import Queued
from luman.server.mail.worker import retry_delay
from tests.mail_support import Mailbox, ReceivedMail, code_of, link_token, verify
from tests.server.organization_support import Account, sign_up
from tests.support import PASSWORD, FakeClock, RichError, get_me, rich_error

Stub = auth_service_pb2_grpc.AuthServiceStub
VerifyRequest = auth_service_pb2.VerifyEmailRequest


@pytest.fixture
def settings(settings: Settings, mailbox: Mailbox) -> Settings:
    return dataclasses.replace(settings, smtp_url=mailbox.url)


def _error(call: Callable[[], object]) -> RichError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return rich_error(caught.value)


def _first_mail(mailbox: Mailbox, account: Account) -> ReceivedMail:
    return mailbox.wait_for(account.email, "verify")


def _resend(auth: Stub, account: Account) -> auth_service_pb2.SendVerificationEmailResponse:
    response: auth_service_pb2.SendVerificationEmailResponse = auth.SendVerificationEmail(
        auth_service_pb2.SendVerificationEmailRequest(), metadata=account.metadata
    )
    return response


def test_register_sends_a_link_that_verifies(
    auth: Stub, mailbox: Mailbox, sessions: Sessions
) -> None:
    account = sign_up(auth)
    assert get_me(auth, account.token).user.email_verified is False  # cached now
    mail = _first_mail(mailbox, account)
    assert mail.to == (account.email,)
    assert "/email/verify?token=" in mail.text
    assert code_of(mail) in mail.html

    verified = auth.VerifyEmail(VerifyRequest(token=link_token(mail)))

    assert verified.user.email == account.email
    assert verified.user.email_verified
    # GetMe reads a cached user: the verification forgot it.
    assert get_me(auth, account.token).user.email_verified is True
    with sessions.read.begin() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "account.email_verified")
        ).all()
        stored = session.scalars(select(EmailCode.token_hash, EmailCode.code_hash)).all()
    assert [str(event.user_id) for event in events] == [account.id]
    # Only hashes are stored.
    assert link_token(mail) not in str(stored)
    assert code_of(mail) not in str(stored)


def test_the_code_verifies_whatever_its_case_and_dash(auth: Stub, mailbox: Mailbox) -> None:
    account = sign_up(auth)
    code = code_of(_first_mail(mailbox, account))

    typed = code.replace("-", " ").lower()
    verified = auth.VerifyEmail(VerifyRequest(email=account.email.upper(), code=typed))

    assert verified.user.email_verified


def test_five_wrong_codes_spend_the_message(auth: Stub, mailbox: Mailbox) -> None:
    account = sign_up(auth)
    code = code_of(_first_mail(mailbox, account))
    wrong = "BBBB-BBBB" if code != "BBBB-BBBB" else "CCCC-CCCC"

    for _ in range(5):
        error = _error(lambda: auth.VerifyEmail(VerifyRequest(email=account.email, code=wrong)))
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "EMAIL_CODE_INVALID",
        )
    # The right code now gets the same answer: the message is spent.
    spent = _error(lambda: auth.VerifyEmail(VerifyRequest(email=account.email, code=code)))
    assert (spent.reason, spent.message) == (error.reason, error.message)


def test_unknown_token_address_and_wrong_code_are_one_answer(auth: Stub, mailbox: Mailbox) -> None:
    account = sign_up(auth)
    code = code_of(_first_mail(mailbox, account))
    wrong = "BBBB-BBBB" if code != "BBBB-BBBB" else "CCCC-CCCC"
    answers = [
        _error(lambda: auth.VerifyEmail(VerifyRequest(token="x" * 43))),
        _error(lambda: auth.VerifyEmail(VerifyRequest(email="nobody@example.com", code=code))),
        _error(lambda: auth.VerifyEmail(VerifyRequest(email=account.email, code=wrong))),
    ]
    assert {(a.code, a.reason, a.message) for a in answers} == {
        (grpc.StatusCode.UNAUTHENTICATED, "EMAIL_CODE_INVALID", answers[0].message)
    }


def test_an_expired_link_is_refused(auth: Stub, mailbox: Mailbox, clock: FakeClock) -> None:
    account = sign_up(auth)
    mail = _first_mail(mailbox, account)
    clock.advance(hours=48, seconds=1)

    error = _error(lambda: auth.VerifyEmail(VerifyRequest(token=link_token(mail))))

    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "EMAIL_CODE_EXPIRED",
    )


def test_a_link_works_once(auth: Stub, mailbox: Mailbox) -> None:
    account = sign_up(auth)
    mail = _first_mail(mailbox, account)
    auth.VerifyEmail(VerifyRequest(token=link_token(mail)))

    again = _error(lambda: auth.VerifyEmail(VerifyRequest(token=link_token(mail))))
    by_code = _error(
        lambda: auth.VerifyEmail(VerifyRequest(email=account.email, code=code_of(mail)))
    )

    assert (again.code, again.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "EMAIL_CODE_USED")
    assert by_code.reason == "EMAIL_CODE_USED"


def test_a_newer_message_spends_the_older(auth: Stub, mailbox: Mailbox, clock: FakeClock) -> None:
    account = sign_up(auth)
    first = _first_mail(mailbox, account)
    clock.advance(minutes=1)
    assert _resend(auth, account).email == account.email
    second = mailbox.wait_for(account.email, "verify", count=2)
    assert link_token(second) != link_token(first)

    old = _error(lambda: auth.VerifyEmail(VerifyRequest(token=link_token(first))))
    assert old.reason == "EMAIL_CODE_USED"
    assert auth.VerifyEmail(VerifyRequest(token=link_token(second))).user.email_verified


def test_resending_waits_a_minute(auth: Stub, mailbox: Mailbox, clock: FakeClock) -> None:
    account = sign_up(auth)
    _first_mail(mailbox, account)
    clock.advance(seconds=20)

    error = _error(lambda: _resend(auth, account))

    assert (error.code, error.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "EMAIL_RECENTLY_SENT",
    )
    assert error.retry_delay_seconds == 40
    clock.advance(seconds=40)
    _resend(auth, account)
    mailbox.wait_for(account.email, "verify", count=2)


def test_at_most_five_messages_a_day(auth: Stub, mailbox: Mailbox, clock: FakeClock) -> None:
    account = sign_up(auth)
    _first_mail(mailbox, account)  # Register's: the first of the five
    for count in range(2, 6):
        clock.advance(minutes=1)
        _resend(auth, account)
        mailbox.wait_for(account.email, "verify", count=count)
    clock.advance(minutes=1)

    error = _error(lambda: _resend(auth, account))

    assert (error.code, error.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "EMAIL_RECENTLY_SENT",
    )
    # Until Register's message, 5 minutes ago, is 24 hours old.
    assert error.retry_delay_seconds == 24 * 3600 - 5 * 60
    clock.advance(seconds=24 * 3600 - 5 * 60 - 1)
    signed_in = auth.Login(auth_service_pb2.LoginRequest(email=account.email, password=PASSWORD))
    again = dataclasses.replace(account, token=signed_in.tokens.access_token)
    assert _error(lambda: _resend(auth, again)).retry_delay_seconds == 1
    clock.advance(seconds=1)
    _resend(auth, again)
    mailbox.wait_for(account.email, "verify", count=6)


def test_a_message_survives_refused_attempts(
    app: App, auth: Stub, mailbox: Mailbox, clock: FakeClock, sessions: Sessions
) -> None:
    assert app.mail is not None
    mailbox.refuse_next(4)  # 451: try again later
    account = sign_up(auth)
    for attempt in range(1, 5):
        # The worker counted the refusal: past its retry delay, the next attempt.
        deadline = time.monotonic() + 10
        while _attempts(sessions) != [attempt]:
            assert time.monotonic() < deadline, f"attempt {attempt} not seen"
            time.sleep(0.02)
        clock.advance(seconds=retry_delay(attempt).total_seconds())
        app.mail.wake()

    mail = _first_mail(mailbox, account)

    assert auth.VerifyEmail(
        VerifyRequest(email=account.email, code=code_of(mail))
    ).user.email_verified
    with sessions.read.begin() as session:
        # One message, one code row, however many attempts: the daily cap counts messages.
        assert len(session.scalars(select(EmailCode.id)).all()) == 1


def _attempts(sessions: Sessions) -> list[int]:
    with sessions.read.begin() as session:
        return list(session.scalars(select(MailMessage.attempts)).all())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("kind", [VERIFY_EMAIL, PASSWORD_RESET])
def test_a_renderer_locks_the_user_before_any_code(
    auth: Stub, mailbox: Mailbox, clock: FakeClock, sessions: Sessions, kind: str
) -> None:
    """The lock order (email_codes.py): a message being rendered waits for the user's row
    before it locks any email_codes row. Whoever holds the user's row (DeleteMe deleting it,
    then cascading into email_codes; _check, then locking its code) can then take the code
    rows: here NOWAIT succeeds. A renderer that locked the codes first and waited for the user
    (the foreign-key check of its INSERT) would make that a deadlock."""
    account = sign_up(auth)
    user_id = uuid.UUID(account.id)
    if kind == PASSWORD_RESET:
        verify(auth, mailbox, account.email)
        auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=account.email))
        mailbox.wait_for(account.email, "reset")
        render = make_reset_renderer("http://luman.test", 3600)
    else:
        _first_mail(mailbox, account)
        render = make_verification_renderer("http://luman.test", 3600)
    clock.advance(minutes=1)  # past the one-a-minute rule: the renderer makes a code
    queued = Queued(
        id=uuid.uuid4(),
        kind=kind,
        recipient=account.email,
        user_id=user_id,
        subject_id=None,
        params={},
        create_time=clock(),
        attempts=0,
    )
    renderer_pid: list[int] = []
    failures: list[BaseException] = []

    def send() -> None:
        try:
            with sessions.write.begin() as session:
                renderer_pid.append(int(session.scalar(text("SELECT pg_backend_pid()"))))
                assert render(session, queued, clock()) is not None
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    with sessions.write.begin() as holder:
        # FOR UPDATE, as DeleteMe's DELETE of the user takes it.
        holder.execute(select(User.id).where(User.id == user_id).with_for_update())
        thread = threading.Thread(target=send)
        thread.start()
        deadline = time.monotonic() + 10
        while not _waits_for_a_lock(sessions, renderer_pid):
            assert time.monotonic() < deadline, "the renderer never waited for the user's row"
            time.sleep(0.02)

        codes = holder.scalars(
            select(EmailCode.id)
            .where(EmailCode.user_id == user_id, EmailCode.purpose == kind)
            .with_for_update(nowait=True)
        ).all()

        assert codes
    thread.join(10)
    assert not thread.is_alive()
    assert failures == []


def _waits_for_a_lock(sessions: Sessions, pids: list[int]) -> bool:
    if not pids:
        return False
    with sessions.read.begin() as session:
        waiting = session.scalar(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
            {"pid": pids[0]},
        )
    return bool(waiting == "Lock")


def test_a_verified_address_gets_no_new_message(auth: Stub, mailbox: Mailbox) -> None:
    account = sign_up(auth)
    auth.VerifyEmail(VerifyRequest(token=link_token(_first_mail(mailbox, account))))

    error = _error(lambda: _resend(auth, account))

    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "EMAIL_ALREADY_VERIFIED",
    )


def test_sending_needs_a_sign_in(auth: Stub) -> None:
    error = _error(
        lambda: auth.SendVerificationEmail(auth_service_pb2.SendVerificationEmailRequest())
    )
    assert error.code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (VerifyRequest(), "token"),
        (VerifyRequest(token="t", code="BCDF-GHJK"), "token"),
        (VerifyRequest(email="someone@example.com"), "code"),
        (VerifyRequest(email="not an address", code="BCDF-GHJK"), "email"),
        (VerifyRequest(email="someone@example.com", code="BCD"), "code"),
        (VerifyRequest(email="someone@example.com", code="AEIO-UAEI"), "code"),
    ],
)
def test_malformed_requests_name_the_field(
    auth: Stub, request_: auth_service_pb2.VerifyEmailRequest, field: str
) -> None:
    error = _error(lambda: auth.VerifyEmail(request_))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.field_violations
