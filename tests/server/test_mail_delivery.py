"""The mail pipeline on a real database and a real SMTP server: a message queued in a
transaction leaves when (and only if) it commits, survives a mail server that is down or
refusing, a stop and a restart, and is sent once even by two workers sharing the database.

These tests drive a MailWorker with a renderer of their own ("note"); the verification,
reset and invitation messages are covered with their RPCs.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from luman.server.config import ConfigError, Settings
from luman.server.db.models import MailMessage
from luman.server.db.session import Sessions
from luman.server.mail import outbox
from luman.server.mail.message import Mail, Queued
from luman.server.mail.transport import (
    DirectoryTransport,
    LogTransport,
    SmtpTransport,
    TransientMailError,
    Transport,
)
from luman.server.mail.worker import FIRST_RETRY, MailWorker, retry_delay
from tests.mail_support import Mailbox
from tests.support import FakeClock

SENDER = "Luman <no-reply@luman.test>"


def note(session: Session, queued: Queued, now: dt.datetime) -> Mail | None:
    """Renders the test's messages; params["drop"] drops one, params["boom"] is a bug."""
    if queued.params.get("drop"):
        return None
    if queued.params.get("boom"):
        raise RuntimeError("a renderer bug")
    text = f"{queued.params.get('body', 'hello')} (attempt {queued.attempts + 1})"
    return Mail(
        to=queued.recipient,
        subject=f"Note {queued.params.get('n', '')}".strip(),
        text=text,
        html=f"<p>{html.escape(text)}</p>",
    )


class WorkerFactory(Protocol):
    def __call__(self, transport: Transport | None = None, start: bool = True) -> MailWorker: ...


@pytest.fixture
def worker_for(sessions: Sessions, clock: FakeClock, mailbox: Mailbox) -> Iterator[WorkerFactory]:
    """Makes workers on the test's database (started unless told not to), closed after it."""
    made: list[MailWorker] = []

    def make(transport: Transport | None = None, start: bool = True) -> MailWorker:
        worker = MailWorker(
            sessions,
            transport or SmtpTransport(mailbox.url, timeout=5),
            {"note": note},
            SENDER,
            clock,
            poll_interval=0.2,
        )
        made.append(worker)
        if start:
            worker.start()
        return worker

    yield make
    for worker in made:
        worker.close()


def queue(sessions: Sessions, clock: FakeClock, to: str, **params: str | int | bool) -> uuid.UUID:
    with sessions.write.begin() as session:
        return outbox.enqueue(session, "note", to, clock(), params=params)


def queued_rows(sessions: Sessions) -> list[MailMessage]:
    with sessions.write.begin() as session:
        rows = list(session.scalars(select(MailMessage)))
        session.expunge_all()
        return rows


def test_a_committed_message_is_sent_with_text_and_html(
    sessions: Sessions, clock: FakeClock, mailbox: Mailbox, worker_for: WorkerFactory
) -> None:
    worker_for()
    queue(sessions, clock, "ada@example.com", n=1, body="Hello Ada")
    mail = mailbox.wait_for("ada@example.com", "Note 1")
    assert mail.sender == "no-reply@luman.test"
    assert mail.text.strip() == "Hello Ada (attempt 1)"
    assert mail.html.strip() == "<p>Hello Ada (attempt 1)</p>"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert mail.message["Message-ID"].endswith("@luman.test>")
    assert mail.message.get_content_type() == "multipart/alternative"
    _wait_until(lambda: not queued_rows(sessions))


def test_a_rolled_back_message_is_never_sent(
    sessions: Sessions, clock: FakeClock, mailbox: Mailbox, worker_for: WorkerFactory
) -> None:
    worker_for()

    def failing_change() -> None:
        with sessions.write.begin() as session:
            outbox.enqueue(session, "note", "gone@example.com", clock(), params={"n": 1})
            raise RuntimeError("the change fails")

    with pytest.raises(RuntimeError):
        failing_change()
    queue(sessions, clock, "kept@example.com", n=2)
    mailbox.wait_for("kept@example.com")
    assert mailbox.to("gone@example.com") == []
    _wait_until(lambda: not queued_rows(sessions))


def test_mail_server_down_retries_with_backoff_and_nothing_is_lost(
    sessions: Sessions, clock: FakeClock, mailbox: Mailbox, worker_for: WorkerFactory
) -> None:
    mailbox.stop()
    worker = worker_for()
    message_id = queue(sessions, clock, "bob@example.com", n=1)
    _wait_until(lambda: [r.attempts for r in queued_rows(sessions)] == [1])
    (row,) = queued_rows(sessions)
    assert row.id == message_id
    assert row.last_error == "connection refused"
    assert row.next_attempt_time == clock() + FIRST_RETRY
    assert row.lease_until is None
    # Not due yet: waking changes nothing.
    worker.wake()
    mailbox.start()
    clock.advance(seconds=29)
    worker.wake()
    assert [r.attempts for r in queued_rows(sessions)] == [1]
    clock.advance(seconds=1)
    worker.wake()
    mail = mailbox.wait_for("bob@example.com", "Note 1")
    assert "attempt 2" in mail.text
    _wait_until(lambda: not queued_rows(sessions))


def test_a_temporary_refusal_is_retried_and_a_permanent_one_given_up(
    sessions: Sessions,
    clock: FakeClock,
    mailbox: Mailbox,
    worker_for: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = worker_for()
    mailbox.refuse_next(1)  # 451
    queue(sessions, clock, "carol@example.com", n=1)
    _wait_until(lambda: [r.attempts for r in queued_rows(sessions)] == [1])
    assert "SMTPDataError (451)" in queued_rows(sessions)[0].last_error
    clock.advance(seconds=30)
    worker.wake()
    mailbox.wait_for("carol@example.com", "Note 1")

    mailbox.refuse_next(1, "550 5.1.1 no such mailbox")
    with caplog.at_level(logging.ERROR, logger="luman.server.mail.worker"):
        queue(sessions, clock, "nobody@example.com", n=2)
        _wait_until(lambda: not queued_rows(sessions))
    assert "gave up on note message" in caplog.text
    assert "refused (550)" in caplog.text
    assert mailbox.to("nobody@example.com") == []


def test_retry_delays_double_up_to_an_hour() -> None:
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 8, 30)] == [
        30,
        60,
        120,
        3600,
        3600,
    ]


def test_stopping_keeps_queued_messages_for_the_next_start(
    sessions: Sessions, clock: FakeClock, mailbox: Mailbox, worker_for: WorkerFactory
) -> None:
    mailbox.stop()
    first = worker_for()
    for n in range(3):
        queue(sessions, clock, f"r{n}@example.com", n=n)
    _wait_until(lambda: sorted(r.attempts for r in queued_rows(sessions)) == [1, 1, 1])
    first.close()
    # The next server (a restart) sends them all once the mail server is back.
    mailbox.start()
    clock.advance(minutes=1)
    worker_for()
    for n in range(3):
        mailbox.wait_for(f"r{n}@example.com", f"Note {n}")
    _wait_until(lambda: not queued_rows(sessions))


class BlockingTransport:
    """Holds the first message until released; counts what it sent."""

    address = "blocking"

    def __init__(self) -> None:
        self.sending = threading.Event()
        self.release = threading.Event()
        self.sent: list[str] = []

    def send(self, message: EmailMessage) -> None:
        self.sending.set()
        self.release.wait(10)
        self.sent.append(str(message["To"]))


def test_stopping_waits_for_the_message_being_sent_and_leaves_the_rest_free(
    sessions: Sessions, clock: FakeClock, worker_for: WorkerFactory
) -> None:
    transport = BlockingTransport()
    worker = worker_for(transport, start=False)
    for n in range(3):
        queue(sessions, clock, f"b{n}@example.com", n=n)
    running = threading.Thread(target=worker.run_once)
    running.start()
    assert transport.sending.wait(10)
    closing = threading.Thread(target=worker.close)
    closing.start()  # asks the worker to stop while the first message is being sent
    _wait_until(lambda: worker._stop.is_set())
    transport.release.set()
    running.join(10)
    closing.join(10)
    assert len(transport.sent) == 1
    rows = queued_rows(sessions)
    assert len(rows) == 2
    # Free at once: the next start (or another replica) sends them without waiting for the
    # lease to run out.
    assert [row.lease_until for row in rows] == [None, None]


def test_a_worker_whose_lease_ran_out_changes_nothing(
    sessions: Sessions,
    clock: FakeClock,
    mailbox: Mailbox,
    worker_for: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = BlockingTransport()
    stalled = worker_for(slow, start=False)
    queue(sessions, clock, "lease@example.com", n=1)
    running = threading.Thread(target=stalled.run_once)
    running.start()
    assert slow.sending.wait(10)
    # The first worker hangs past its lease; another replica takes the message and sends it.
    clock.advance(minutes=6)
    other = worker_for(start=False)
    assert other.run_once() == 1
    mailbox.wait_for("lease@example.com", "Note 1")
    assert queued_rows(sessions) == []
    with caplog.at_level(logging.WARNING, logger="luman.server.mail.worker"):
        slow.release.set()
        running.join(10)
    assert "sent after its lease ran out" in caplog.text
    assert queued_rows(sessions) == []


def test_a_failure_after_the_lease_ran_out_is_not_recorded(
    sessions: Sessions, clock: FakeClock, worker_for: WorkerFactory
) -> None:
    class Failing(BlockingTransport):
        def send(self, message: EmailMessage) -> None:
            super().send(message)
            raise TransientMailError("connection refused")

    slow = Failing()
    stalled = worker_for(slow, start=False)
    queue(sessions, clock, "late@example.com", n=1)
    running = threading.Thread(target=stalled.run_once)
    running.start()
    assert slow.sending.wait(10)
    clock.advance(minutes=6)
    # Another replica holds it now (its own attempt in progress).
    thief = worker_for(BlockingTransport(), start=False)
    assert thief._take_one() is not None
    slow.release.set()
    running.join(10)
    (row,) = queued_rows(sessions)
    assert (row.attempts, row.last_error) == (0, "")  # the stale worker's failure: not recorded
    assert row.lease_until is not None


def test_two_workers_on_one_database_send_each_message_once(
    sessions: Sessions, clock: FakeClock, mailbox: Mailbox, worker_for: WorkerFactory
) -> None:
    workers = [worker_for(start=False), worker_for(start=False)]
    for n in range(30):
        queue(sessions, clock, "many@example.com", n=n)
    # Both take and send at once, as two replicas would.
    barrier = threading.Barrier(2)

    def drain(worker: MailWorker) -> None:
        barrier.wait()
        while worker.run_once():
            pass

    threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    subjects = sorted(mail.subject for mail in mailbox.to("many@example.com"))
    assert subjects == sorted(f"Note {n}" for n in range(30))
    assert queued_rows(sessions) == []


def test_a_dropped_message_goes_and_a_renderer_bug_keeps_it(
    sessions: Sessions,
    clock: FakeClock,
    mailbox: Mailbox,
    worker_for: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = worker_for(start=False)
    queue(sessions, clock, "drop@example.com", drop=True)
    with caplog.at_level(logging.ERROR, logger="luman.server.mail.worker"):
        queue(sessions, clock, "boom@example.com", boom=True)
        worker.run_once()
    assert "rendering message" in caplog.text
    (row,) = queued_rows(sessions)
    assert (row.recipient, row.attempts, row.last_error) == (
        "boom@example.com",
        1,
        "rendering failed",
    )
    assert mailbox.messages == []


def test_unknown_kinds_wait_for_a_server_that_knows_them(
    sessions: Sessions, clock: FakeClock, worker_for: WorkerFactory
) -> None:
    worker = worker_for(start=False)
    with sessions.write.begin() as session:
        outbox.enqueue(session, "from_a_newer_release", "x@example.com", clock())
    worker.run_once()
    (row,) = queued_rows(sessions)
    assert row.attempts == 0
    assert row.next_attempt_time == clock() + dt.timedelta(hours=1)


def test_development_transports_write_a_folder_or_the_log(
    sessions: Sessions,
    clock: FakeClock,
    tmp_path: Path,
    worker_for: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "mail"
    worker = worker_for(DirectoryTransport(folder), start=False)
    queue(sessions, clock, "dev@example.com", n=7, body="see the link")
    worker.run_once()
    (eml,) = folder.glob("*.eml")
    # Owner only: the messages hold live links and codes.
    assert (folder.stat().st_mode & 0o777, eml.stat().st_mode & 0o777) == (0o700, 0o600)
    content = eml.read_text()
    assert "Subject: Note 7" in content
    assert "see the link" in content

    worker = worker_for(LogTransport(), start=False)
    with caplog.at_level(logging.INFO, logger="luman.server.mail.transport"):
        queue(sessions, clock, "dev@example.com", n=8, body="the code is ABCD-EFGH")
        worker.run_once()
    assert "to dev@example.com: Note 8" in caplog.text
    assert "the code is ABCD-EFGH" in caplog.text
    with sessions.write.begin() as session:
        assert session.scalar(select(func.count()).select_from(MailMessage)) == 0


@pytest.mark.parametrize(
    "url",
    [
        "smtp://mail.example.com",
        "smtp+starttls://user:p%40ss@mail.example.com:587",
        "smtps://mail.example.com:465",
    ],
)
def test_smtp_urls_accepted(url: str, tmp_path: Path) -> None:
    settings = Settings.from_env({"SMTP_URL": url, "LUMAN_DATA_DIR": str(tmp_path)})
    assert settings.smtp_url == url


@pytest.mark.parametrize(
    "url", ["http://mail.example.com", "smtp://", "smtp://mail.example.com:99999", "smtp://h/x"]
)
def test_bad_smtp_urls_refused_without_repeating_a_password(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SMTP_URL must be"):
        Settings.from_env({"SMTP_URL": url, "LUMAN_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"SMTP_URL": "smtpx://me:hunter2@mail", "LUMAN_DATA_DIR": str(tmp_path)})
    assert "hunter2" not in str(refused.value)


def test_credentials_never_cross_the_network_in_clear_text(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="clear text"):
        Settings.from_env(
            {"SMTP_URL": "smtp://me:secret@mail.example.com", "LUMAN_DATA_DIR": str(tmp_path)}
        )
    for url in ("smtp://me:secret@127.0.0.1:25", "smtp+starttls://me:secret@mail.example.com"):
        assert Settings.from_env({"SMTP_URL": url, "LUMAN_DATA_DIR": str(tmp_path)}).smtp_url


def test_production_requires_smtp(tmp_path: Path) -> None:
    production = {
        "LUMAN_DATA_DIR": str(tmp_path),
        "LUMAN_ENV": "production",
        "JWT_REFRESH_SECRET": "b" * 32,
        "SIGNING_KEY_SECRET": "c" * 32,
        "PUBLIC_URL": "https://id.example.com",
    }
    with pytest.raises(ConfigError, match="SMTP_URL is required"):
        Settings.from_env(production)
    assert Settings.from_env(production | {"SMTP_URL": "smtps://mail.example.com"}).smtp_url


def test_production_requires_the_public_url_links_point_at(tmp_path: Path) -> None:
    production = {
        "LUMAN_DATA_DIR": str(tmp_path),
        "LUMAN_ENV": "production",
        "JWT_REFRESH_SECRET": "b" * 32,
        "SIGNING_KEY_SECRET": "c" * 32,
        "SMTP_URL": "smtps://mail.example.com",
    }
    with pytest.raises(ConfigError, match="PUBLIC_URL is required"):
        Settings.from_env(production)


def _wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Polls `condition` until true: the worker runs on its own thread."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
