"""The mail worker: one thread that renders queued messages (outbox.py) and sends them.

Each message is taken with a lease (lease_until, lease_owner), one at a time, so that replicas
sharing the database never send one twice at once; every later write is conditional on still
holding it; rendered in a write transaction that commits (with any code the
renderer made) before the message leaves; then sent outside any transaction. Accepted: the
row is deleted. A transient failure (mail server down, 4xx) retries after 30 s, 1 min, 2 min,
... at most an hour apart, up to MAX_ATTEMPTS (about a day), then the message is given up and
logged; a permanent refusal (5xx) is given up at once.

Nothing is lost when the server stops: a row leaves the table only once sent or given up.
`close()` lets the message being sent finish (within the shutdown grace); a message whose
send was cut short (the grace ran out, the process was killed) keeps its lease and is taken
again once the lease runs out, by this server after a restart or by another replica.

The thread wakes when a transaction that queued a message commits (outbox.enqueue registers
for that), and every POLL_INTERVAL seconds for retries and other replicas' messages.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import threading
import uuid
from collections.abc import Mapping

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from luman.server.clock import Clock
from luman.server.db.models import MailMessage
from luman.server.db.session import Sessions
from luman.server.mail import outbox
from luman.server.mail.message import Mail, Queued, Renderer
from luman.server.mail.transport import (
    PermanentMailError,
    TransientMailError,
    Transport,
    build_message,
)

logger = logging.getLogger(__name__)

POLL_INTERVAL = 5.0
BATCH = 20
# A taken message is someone else's to retry only after this long: far more than one message's
# rendering and SMTP conversation take (transport.SMTP_TIMEOUT bounds each of its steps).
LEASE = dt.timedelta(minutes=5)
FIRST_RETRY = dt.timedelta(seconds=30)
LONGEST_RETRY = dt.timedelta(hours=1)
# 30 s doubling to an hour, then hourly: the 30th attempt is about a day after the first.
MAX_ATTEMPTS = 30
# A kind this server cannot render (a newer replica's, during an upgrade) waits this long.
UNKNOWN_KIND_DELAY = dt.timedelta(hours=1)


def retry_delay(attempts: int) -> dt.timedelta:
    """The wait after the `attempts`-th failed attempt (1-based)."""
    return min(FIRST_RETRY * (1 << min(attempts - 1, 16)), LONGEST_RETRY)


class MailWorker:
    """Args:
    renderers: kind -> Renderer (renderers.py).
    sender: the From header (MAIL_FROM).
    poll_interval: seconds between looks at the table when nothing wakes the thread.
    """

    def __init__(
        self,
        sessions: Sessions,
        transport: Transport,
        renderers: Mapping[str, Renderer],
        sender: str,
        clock: Clock,
        *,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._sessions = sessions
        self._transport = transport
        self._renderers = dict(renderers)
        self._sender = sender
        self._domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "localhost"
        self._clock = clock
        self._poll_interval = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._database_down = False
        # Whose lease a message is under (mail_outbox.lease_owner): this worker's, or not.
        self._id = uuid.uuid4()

    def start(self) -> None:
        outbox.register_waker(self.wake)
        self._thread = threading.Thread(target=self._run, name="mail", daemon=True)
        self._thread.start()

    def use_renderers(self, renderers: Mapping[str, Renderer]) -> None:
        """Render with these from the next message on (the gateway's address, once bound)."""
        self._renderers = dict(renderers)

    def wake(self) -> None:
        """Look at the queue now (a message was queued, or a test moved the clock)."""
        self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the message being sent, waiting at most `timeout` seconds for it."""
        outbox.unregister_waker(self.wake)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning(
                    "mail: still sending after %.0f s at shutdown; the message stays queued "
                    "and is sent again once its lease ends",
                    timeout,
                )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once() == BATCH
                if self._database_down:
                    logger.info("mail: the database is back; sending queued messages")
                    self._database_down = False
            except SQLAlchemyError as exc:
                busy = False
                if not self._database_down:
                    logger.warning(
                        "mail: cannot read the queue (%s); messages wait until the database "
                        "is back",
                        type(exc).__name__,
                    )
                    self._database_down = True
            except Exception:
                # A bug: the thread must outlive it, or no mail would leave until a restart.
                busy = False
                logger.exception("mail: the worker failed; trying again shortly")
            if not busy:
                self._wake.wait(self._poll_interval)
                self._wake.clear()

    def run_once(self) -> int:
        """Send due messages, one at a time, up to BATCH; returns how many were taken."""
        taken = 0
        while taken < BATCH and not self._stop.is_set():
            message_id = self._take_one()
            if message_id is None:
                break
            taken += 1
            self._deliver(message_id)
        return taken

    def _take_one(self) -> uuid.UUID | None:
        """Lease the most overdue free message to this worker. One at a time: a lease covers
        one message's rendering and sending, never a batch waiting its turn."""
        now = self._clock()
        free = or_(MailMessage.lease_until.is_(None), MailMessage.lease_until < now)
        while True:
            with self._sessions.write.begin() as session:
                message_id = session.scalar(
                    select(MailMessage.id)
                    .where(MailMessage.next_attempt_time <= now, free)
                    .order_by(MailMessage.next_attempt_time, MailMessage.id)
                    .limit(1)
                )
                if message_id is None:
                    return None
                # Taken only if nobody (another replica) took it since the select.
                result = session.execute(
                    update(MailMessage)
                    .where(MailMessage.id == message_id, free)
                    .values(lease_until=now + LEASE, lease_owner=self._id)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    return message_id

    def _mine(self, message_id: uuid.UUID) -> ColumnElement[bool]:
        """The message, while this worker still holds its lease: every write after the take is
        conditional on it, so a worker whose lease ran out (and was taken by another replica)
        changes nothing."""
        return and_(MailMessage.id == message_id, MailMessage.lease_owner == self._id)

    def _deliver(self, message_id: uuid.UUID) -> None:
        now = self._clock()
        try:
            rendered = self._render(message_id, now)
        except SQLAlchemyError as exc:
            # A deadlock or a constraint in a renderer counts as a failed attempt, so that it
            # backs off and is given up in the end; a database that is down fails this write
            # too, and _run waits for it.
            self._failed(message_id, f"rendering failed ({type(exc).__name__})", permanent=False)
            return
        except Exception:
            # A bug in a renderer, not the mail server: keep the message, and say so loudly.
            logger.exception("mail: rendering message %s failed", message_id)
            self._failed(message_id, "rendering failed", permanent=False)
            return
        if rendered is None:
            return
        queued, mail = rendered
        # Committed: the codes in `mail` hold before the message is out.
        attempt = queued.attempts + 1
        try:
            message = build_message(mail, self._sender, f"<{message_id}.{attempt}@{self._domain}>")
            self._transport.send(message)
        except TransientMailError as exc:
            self._failed(message_id, str(exc), permanent=False)
            return
        except (PermanentMailError, ValueError) as exc:
            # ValueError: a header the email package refuses (a malformed address).
            self._failed(message_id, str(exc) or type(exc).__name__, permanent=True)
            return
        with self._sessions.write.begin() as session:
            result = session.execute(
                delete(MailMessage)
                .where(self._mine(message_id))
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                logger.warning(
                    "mail: %s message %s was sent after its lease ran out; another worker may "
                    "send it again",
                    queued.kind,
                    message_id,
                )
        logger.info("mail: sent %s message %s", queued.kind, message_id)

    def _render(self, message_id: uuid.UUID, now: dt.datetime) -> tuple[Queued, Mail] | None:
        """The message to send, committed with whatever its renderer wrote; None when there is
        nothing to send now (gone, no longer this worker's, dropped by its renderer, or of a
        kind unknown here).

        The row is read without a lock (the lease is what makes it this worker's): a renderer
        locks the account's row first (auth/email_codes.py), and DeleteMe, holding that row,
        deletes the account's queued messages by cascade; a lock on the message taken before
        the account's would be the opposite order, a deadlock. Writes to the message here come
        after the renderer's locks and are conditional on the lease, so a message deleted
        meanwhile is simply not there."""
        with self._sessions.write.begin() as session:
            row = session.scalars(select(MailMessage).where(self._mine(message_id))).one_or_none()
            if row is None:  # its account was deleted, or the lease ran out
                return None
            queued = Queued(
                id=row.id,
                kind=row.kind,
                recipient=row.recipient,
                user_id=row.user_id,
                subject_id=row.subject_id,
                params=json.loads(row.params),
                create_time=row.create_time,
                attempts=row.attempts,
            )
            session.expunge(row)
            renderer = self._renderers.get(queued.kind)
            if renderer is None:
                logger.error(
                    "mail: no renderer for kind %r; message %s waits", queued.kind, message_id
                )
                session.execute(
                    update(MailMessage)
                    .where(self._mine(message_id))
                    .values(
                        next_attempt_time=now + UNKNOWN_KIND_DELAY,
                        lease_until=None,
                        lease_owner=None,
                    )
                    .execution_options(synchronize_session=False)
                )
                return None
            mail = renderer(session, queued, now)
            if mail is None:
                logger.info(
                    "mail: %s message %s dropped: nothing to send any more", queued.kind, message_id
                )
                session.execute(
                    delete(MailMessage)
                    .where(self._mine(message_id))
                    .execution_options(synchronize_session=False)
                )
                return None
            return queued, mail

    def _failed(self, message_id: uuid.UUID, error: str, *, permanent: bool) -> None:
        now = self._clock()
        with self._sessions.write.begin() as session:
            row = session.scalars(
                select(MailMessage).where(self._mine(message_id)).with_for_update()
            ).one_or_none()
            if row is None:
                return
            row.attempts += 1
            if permanent or row.attempts >= MAX_ATTEMPTS:
                logger.error(
                    "mail: gave up on %s message %s after %d attempt(s): %s",
                    row.kind,
                    row.id,
                    row.attempts,
                    error,
                )
                session.delete(row)
                return
            delay = retry_delay(row.attempts)
            logger.warning(
                "mail: %s message %s not sent (%s); attempt %d, next in %.0f s",
                row.kind,
                row.id,
                error,
                row.attempts,
                delay.total_seconds(),
            )
            row.last_error = error[:200]
            row.next_attempt_time = now + delay
            row.lease_until = row.lease_owner = None
