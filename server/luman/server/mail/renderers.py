"""Which renderer makes each kind of queued message (worker.py)."""

from __future__ import annotations

from luman.server.auth.email_codes import make_reset_renderer, make_verification_renderer
from luman.server.config import Settings
from luman.server.mail.message import Renderer
from luman.server.organization.invitations import make_invitation_renderer


def build_renderers(settings: Settings, public_url: str = "") -> dict[str, Renderer]:
    """kind -> renderer. Links in messages point at PUBLIC_URL; in development, at
    `public_url`, the gateway's address once it is bound (gateway/server.py)."""
    public_url = settings.public_url or public_url or f"http://localhost:{settings.http_port}"
    return {
        "verify_email": make_verification_renderer(public_url, settings.email_verification_ttl),
        "password_reset": make_reset_renderer(public_url, settings.password_reset_ttl),
        "invitation": make_invitation_renderer(public_url),
    }
