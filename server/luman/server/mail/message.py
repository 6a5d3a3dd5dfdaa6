"""What the outbox holds (Queued) and what a renderer makes of it (Mail)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.orm import Session


@dataclasses.dataclass(frozen=True)
class Mail:
    """One rendered message: plain text and HTML alternatives of the same content."""

    to: str
    subject: str
    text: str
    html: str


@dataclasses.dataclass(frozen=True)
class Queued:
    """A queued message as a renderer sees it (a mail_outbox row)."""

    id: uuid.UUID
    kind: str
    recipient: str
    user_id: uuid.UUID | None
    subject_id: uuid.UUID | None
    params: Mapping[str, Any]
    create_time: dt.datetime
    attempts: int


# Makes the message to send for one queued row, or None to drop it (its account or subject is
# gone, or sending it no longer makes sense). It runs in a write transaction that commits
# before the message is sent, and may write: a verification message makes and stores its
# code there. Called again on each retry, so each attempt carries fresh codes.
Renderer = Callable[[Session, Queued, dt.datetime], Mail | None]
