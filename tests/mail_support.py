"""A real SMTP server for the tests (aiosmtpd on a free loopback port), and helpers that read
the links and codes out of the messages it received.

A test module sends real mail by pointing the server at it:

    @pytest.fixture
    def settings(settings: Settings, mailbox: Mailbox) -> Settings:
        return dataclasses.replace(settings, smtp_url=mailbox.url)
"""

from __future__ import annotations

import dataclasses
import email
import email.message
import email.policy
import re
import socket
import threading
import time
import urllib.parse
from typing import Any

from aiosmtpd.controller import Controller

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

# The code in a verification or reset message: two groups of four letters.
CODE = re.compile(r"\b([A-Z]{4}-[A-Z]{4})\b")
LINK = re.compile(r"https?://\S+")


@dataclasses.dataclass(frozen=True)
class ReceivedMail:
    to: tuple[str, ...]
    sender: str
    subject: str
    text: str
    html: str
    message: email.message.EmailMessage


class _Handler:
    def __init__(self, mailbox: Mailbox) -> None:
        self._mailbox = mailbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        return self._mailbox._received(envelope)


class Mailbox:
    """Every message the server accepted, in order. `refuse_next(n, code)` answers the next n
    messages with an SMTP error instead (4xx: the sender should retry; 5xx: give up)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.messages: list[ReceivedMail] = []
        self._changed = threading.Condition()
        self._refusals: list[str] = []
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def refuse_next(self, count: int, reply: str = "451 4.3.0 try again later") -> None:
        with self._changed:
            self._refusals.extend([reply] * count)

    def _received(self, envelope: Any) -> str:
        with self._changed:
            if self._refusals:
                return self._refusals.pop(0)
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(message, email.message.EmailMessage)
            text = message.get_body(preferencelist=("plain",))
            page = message.get_body(preferencelist=("html",))
            self.messages.append(
                ReceivedMail(
                    to=tuple(envelope.rcpt_tos),
                    sender=envelope.mail_from,
                    subject=str(message["Subject"]),
                    text=text.get_content() if text is not None else "",
                    html=page.get_content() if page is not None else "",
                    message=message,
                )
            )
            self._changed.notify_all()
        return "250 OK"

    def to(self, address: str, subject_contains: str = "") -> list[ReceivedMail]:
        """The messages received so far for `address` whose subject contains the words."""
        with self._changed:
            return [
                mail
                for mail in self.messages
                if address in mail.to and subject_contains.lower() in mail.subject.lower()
            ]

    def wait_for(
        self, to: str, subject_contains: str = "", timeout: float = 10.0, count: int = 1
    ) -> ReceivedMail:
        """The `count`-th message for `to` (with the subject words), waiting for it; the
        newest one once there are more."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self.to(to, subject_contains)
                if len(found) >= count:
                    return found[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no message to {to} about {subject_contains!r} within {timeout} s; "
                        f"received: {[(m.to, m.subject) for m in self.messages]}"
                    )
                self._changed.wait(left)


def link_of(mail: ReceivedMail) -> str:
    """The first link in the message's text."""
    match = LINK.search(mail.text)
    assert match, f"no link in: {mail.text}"
    return match.group(0)


def link_token(mail: ReceivedMail) -> str:
    """The `token` parameter of the message's link."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link_of(mail)).query)
    assert "token" in query, f"no token in {link_of(mail)}"
    return query["token"][0]


def code_of(mail: ReceivedMail) -> str:
    """The XXXX-XXXX code in the message's text."""
    match = CODE.search(mail.text)
    assert match, f"no code in: {mail.text}"
    return match.group(1)


def verify(
    auth: auth_service_pb2_grpc.AuthServiceStub, mailbox: Mailbox, email_address: str
) -> None:
    """Verify the address the way its owner does: the code of the newest verification message
    sent to it (Register sends one)."""
    mail = mailbox.wait_for(email_address, "verify")
    auth.VerifyEmail(auth_service_pb2.VerifyEmailRequest(email=email_address, code=code_of(mail)))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
