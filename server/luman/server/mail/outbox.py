"""Queue a message in the transaction of the change that sends it (the transactional outbox).

The row commits or rolls back with the change: a message is sent exactly when its change
happened, and the RPC never waits for the mail server. The mail worker (worker.py) renders
and sends it later, retrying until the mail server accepts it; the row holds no secret (a
link or code is made when the message is rendered).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable, Mapping

from sqlalchemy import event
from sqlalchemy.orm import Session

from luman.server.db.models import MailMessage


def enqueue(
    session: Session,
    kind: str,
    recipient: str,
    now: dt.datetime,
    *,
    user_id: uuid.UUID | None = None,
    subject_id: uuid.UUID | None = None,
    params: Mapping[str, str | int | bool] | None = None,
) -> uuid.UUID:
    """Queue a message of `kind` (a renderer's name, worker.py) to `recipient`, due at once.

    `user_id` ties it to an account (deleted with it); `subject_id` names what it is about
    (an invitation). `params` are facts for the template; never a secret. Returns its id.
    """
    message = MailMessage(
        id=uuid.uuid4(),
        kind=kind,
        recipient=recipient,
        user_id=user_id,
        subject_id=subject_id,
        params=json.dumps(dict(params or {}), sort_keys=True, separators=(",", ":")),
        create_time=now,
        next_attempt_time=now,
        attempts=0,
        last_error="",
    )
    session.add(message)
    if not session.info.get(_HOOKED):
        session.info[_HOOKED] = True
        event.listen(session, "after_commit", _wake_workers, once=True)
    return message.id


# The mail workers of this process (one per server; tests run several), woken when a
# transaction that queued a message commits, so that it leaves at once instead of at the
# worker's next look.
_workers: set[Callable[[], None]] = set()
_workers_lock = threading.Lock()
_HOOKED = "luman.mail_queued"


def register_waker(wake: Callable[[], None]) -> None:
    with _workers_lock:
        _workers.add(wake)


def unregister_waker(wake: Callable[[], None]) -> None:
    with _workers_lock:
        _workers.discard(wake)


def _wake_workers(session: Session) -> None:
    session.info.pop(_HOOKED, None)
    with _workers_lock:
        wakers = list(_workers)
    for wake in wakers:
        wake()
