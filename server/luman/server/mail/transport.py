"""Where rendered messages go: an SMTP server (SMTP_URL), or in development a folder of .eml
files (MAIL_DIR) or the log.

A transport raises TransientMailError when trying again later may succeed (the server is
down, busy, or answered 4xx) and PermanentMailError when it cannot (5xx for this recipient):
the worker retries the first and gives up on the second (worker.py).
"""

from __future__ import annotations

import email.message
import email.utils
import logging
import os
import smtplib
import socket
import ssl
import urllib.parse
from pathlib import Path
from typing import Protocol

from luman.server.mail.message import Mail

logger = logging.getLogger(__name__)

# Seconds one SMTP conversation may take before it counts as a failed attempt.
SMTP_TIMEOUT = 20.0


class TransientMailError(Exception):
    """Sending failed in a way that may pass: retry later."""


class PermanentMailError(Exception):
    """The mail server refused the message for good (5xx): do not retry."""


class Transport(Protocol):
    @property
    def address(self) -> str:
        """Where messages go, for the log: never a credential."""
        ...

    def send(self, message: email.message.EmailMessage) -> None: ...


def build_message(mail: Mail, sender: str, message_id: str) -> email.message.EmailMessage:
    """A MIME message with the text and HTML alternatives. Each attempt has its own
    `message_id`: it carries fresh codes, so a server must not drop it as a duplicate."""
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = message_id
    # Automated: no out-of-office answers back (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


class SmtpTransport:
    """smtp:// (no TLS: a relay on the host or a private network), smtp+starttls:// (STARTTLS
    required, the certificate verified) or smtps:// (TLS from the first byte), with
    user:password@ for AUTH. One connection per message: messages are rare, and a connection
    kept open would only go stale between them."""

    def __init__(self, url: str, *, timeout: float = SMTP_TIMEOUT) -> None:
        parts = urllib.parse.urlsplit(url)
        self._scheme = parts.scheme
        self._host = parts.hostname or ""
        default_port = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}[parts.scheme]
        self._port = parts.port or default_port
        self._user = urllib.parse.unquote(parts.username or "")
        self._password = urllib.parse.unquote(parts.password or "")
        self._timeout = timeout

    @property
    def address(self) -> str:
        """Where it sends, for the log: never the credentials."""
        return f"{self._scheme}://{self._host}:{self._port}"

    def send(self, message: email.message.EmailMessage) -> None:
        try:
            if self._scheme == "smtps":
                context = ssl.create_default_context()
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self._host, self._port, timeout=self._timeout, context=context
                )
            else:
                client = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
            with client:
                if self._scheme == "smtp+starttls":
                    client.starttls(context=ssl.create_default_context())
                if self._user:
                    client.login(self._user, self._password)
                client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(500 <= code < 600 for code in codes):
                raise PermanentMailError(f"recipient refused ({codes[0]})") from None
            raise TransientMailError(f"recipient deferred ({codes[0]})") from None
        except smtplib.SMTPResponseException as exc:
            # 5xx on the message itself is final; 4xx (and anything else) may pass.
            if 500 <= exc.smtp_code < 600 and not isinstance(exc, smtplib.SMTPAuthenticationError):
                raise PermanentMailError(f"refused ({exc.smtp_code})") from None
            raise TransientMailError(f"{type(exc).__name__} ({exc.smtp_code})") from None
        except (OSError, smtplib.SMTPException) as exc:
            # Connection refused or reset, timeouts, TLS failures, a server that went away.
            raise TransientMailError(_describe(exc)) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return type(exc).__name__


class DirectoryTransport:
    """Development: each message becomes `<Message-ID>.eml` in `folder`, for a mail client or
    a test to open."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    @property
    def address(self) -> str:
        return str(self._folder)

    def send(self, message: email.message.EmailMessage) -> None:
        try:
            # Owner only: the messages hold live links and codes.
            self._folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            name = str(message["Message-ID"]).strip("<>").replace("/", "_")
            path = self._folder / f"{name}.eml"
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(message.as_bytes())
            tmp.replace(path)
        except OSError as exc:
            raise TransientMailError(f"cannot write to {self._folder}: {exc.strerror}") from None


class LogTransport:
    """Development without MAIL_DIR: the message's text goes to the log (links and codes
    included, so that a developer can follow them; never used in production, where
    SMTP_URL is required)."""

    address = "the log"

    def send(self, message: email.message.EmailMessage) -> None:
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        logger.info(
            "mail (not sent: no SMTP_URL) to %s: %s\n%s", message["To"], message["Subject"], text
        )
