"""An SMTP server that accepts every message and keeps only a count: where the product
server's mail goes during a benchmark (production mode requires SMTP_URL; registrations queue
a verification message each, which the server renders and sends off the request path)."""

from __future__ import annotations

import logging
import socket
import threading
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller


class MailSink:
    def __init__(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.received = 0
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        with self._lock:
            self.received += 1
        return "250 OK"

    def __enter__(self) -> MailSink:
        # aiosmtpd logs every SMTP command at INFO: noise in the harness's own log.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._controller.stop()
