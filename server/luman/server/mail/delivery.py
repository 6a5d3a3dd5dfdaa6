"""The transport the settings ask for, said once in the log."""

from __future__ import annotations

import logging
from pathlib import Path

from luman.server.config import Settings
from luman.server.mail.transport import (
    DirectoryTransport,
    LogTransport,
    SmtpTransport,
    Transport,
)

logger = logging.getLogger(__name__)


def build_transport(settings: Settings) -> Transport:
    """SMTP_URL; else (never in production: config.py refuses it) MAIL_DIR, else the log."""
    if settings.smtp_url:
        return SmtpTransport(settings.smtp_url)
    if settings.mail_dir:
        transport: Transport = DirectoryTransport(Path(settings.mail_dir))
    else:
        transport = LogTransport()
    if settings.env != "test":
        logger.warning(
            "SMTP_URL is unset: emails (verification, password reset, invitations) are not "
            "sent but written to %s; set SMTP_URL for a real deployment",
            transport.address,
        )
    return transport
