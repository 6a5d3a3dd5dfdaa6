"""Mail through the whole server: Register answers at once whatever the mail server does, and
its verification message reaches the person even across a mail-server outage and a restart of
the Luman server in between."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import uuid

import grpc
import pytest
from sqlalchemy import delete, select, text

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.models import MailMessage, User
from luman.server.db.session import Sessions
from luman.server.mail import outbox
from luman.server.mail.renderers import build_renderers
from luman.server.mail.transport import SmtpTransport
from luman.server.mail.worker import MailWorker
from tests.mail_support import Mailbox, code_of
from tests.support import FakeClock, bearer, register, unique_email


def test_a_message_queued_while_mail_is_down_arrives_after_a_restart(
    settings: Settings,
    sessions: Sessions,
    clock: FakeClock,
    hasher: PasswordHasher,
    mailbox: Mailbox,
) -> None:
    # A mail server that accepts connections and never answers: the worst kind of down.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    hanging = dataclasses.replace(settings, smtp_url=f"smtp://127.0.0.1:{silent.getsockname()[1]}")
    first = build_server(hanging, sessions, clock=clock, hasher=hasher)
    first.start()
    email = unique_email("outage")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            started = time.monotonic()
            register(auth_service_pb2_grpc.AuthServiceStub(channel), email=email)
            # The RPC did not wait for the mail server, which would have taken the SMTP
            # timeout (20 s).
            assert time.monotonic() - started < 5
    finally:
        silent.close()  # resets the worker's connection: its attempt fails at once
        first.stop(None)

    clock.advance(minutes=1)  # past the first retry's delay
    second = build_server(
        dataclasses.replace(settings, smtp_url=mailbox.url), sessions, clock=clock, hasher=hasher
    )
    second.start()
    try:
        mail = mailbox.wait_for(email, "verify")
        with grpc.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            auth = auth_service_pb2_grpc.AuthServiceStub(channel)
            verified = auth.VerifyEmail(
                auth_service_pb2.VerifyEmailRequest(email=email, code=code_of(mail))
            )
            assert verified.user.email_verified
            signed_in = auth.Login(
                auth_service_pb2.LoginRequest(email=email, password="correct horse battery")
            )
            me = auth.GetMe(
                auth_service_pb2.GetMeRequest(), metadata=bearer(signed_in.tokens.access_token)
            )
            assert me.user.email_verified
    finally:
        second.stop(None)
    assert len(mailbox.to(email)) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_deleting_an_account_while_its_message_is_rendered_is_no_deadlock(
    settings: Settings, sessions: Sessions, clock: FakeClock, mailbox: Mailbox
) -> None:
    """DeleteMe holds the user's row and then deletes the account's queued messages (the
    cascade); the worker must not hold a message's row while it waits for the user's, which
    its renderer locks first (auth/email_codes.py). Row locks only exist on PostgreSQL."""
    user_id = uuid.uuid4()
    with sessions.write.begin() as session:
        session.add(
            User(
                id=user_id,
                email=unique_email("deleted"),
                name="Gone",
                password_hash="x" * 60,
                create_time=clock(),
            )
        )
        session.flush()
        outbox.enqueue(session, "verify_email", "gone@example.com", clock(), user_id=user_id)
    worker = MailWorker(
        sessions,
        SmtpTransport(mailbox.url, timeout=5),
        build_renderers(settings),
        settings.mail_from,
        clock,
    )
    failures: list[BaseException] = []

    def run() -> None:
        try:
            worker.run_once()
        except BaseException as exc:  # reported below
            failures.append(exc)

    with sessions.write.begin() as holder:
        # As DeleteMe: the user's row first.
        holder.execute(select(User.id).where(User.id == user_id).with_for_update())
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 10
        while not _someone_waits_for_a_lock(sessions):
            assert time.monotonic() < deadline, "the renderer never waited for the user's row"
            time.sleep(0.02)
        # Then the account's messages, as the cascade does: free, not held by the worker.
        held = holder.scalars(
            select(MailMessage.id)
            .where(MailMessage.user_id == user_id)
            .with_for_update(nowait=True)
        ).all()
        assert len(held) == 1
        holder.execute(delete(User).where(User.id == user_id))
    thread.join(10)
    assert not thread.is_alive()
    assert failures == []
    with sessions.read.begin() as session:
        assert session.scalars(select(MailMessage)).all() == []
    assert mailbox.messages == []


def _someone_waits_for_a_lock(sessions: Sessions) -> bool:
    with sessions.read.begin() as session:
        return bool(
            session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        )
