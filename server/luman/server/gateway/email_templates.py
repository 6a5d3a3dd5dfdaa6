"""HTML of the email pages (email_pages.py): verify an address, choose a new password.

Plain strings with every value escaped (`_e`, quotes included), as device_templates.py does;
no script, no style attribute (the CSP allows neither). They share the device page's
stylesheet. The pages carry a link's token in their URL, so they tell browsers to send no
referrer at all.
"""

from __future__ import annotations

import html

from luman.server.gateway.device_templates import STYLESHEET_PATH

VERIFY_PATH = "/email/verify"
RESET_PATH = "/password/reset"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _layout(title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{_e(title)} · Luman</title>\n"
        f'<link rel="stylesheet" href="{STYLESHEET_PATH}">\n'
        "</head>\n<body>\n"
        '<header class="top"><span class="brand" aria-label="Luman">'
        '<span class="mark" aria-hidden="true"></span>Luman</span></header>\n'
        f'<main class="card">\n{body}\n</main>\n'
        '<footer class="foot">Your account</footer>\n'
        "</body>\n</html>\n"
    )


def _error(message: str) -> str:
    if not message:
        return ""
    return f'<p class="alert alert-error" role="alert">{_e(message)}</p>'


def _hidden(csrf: str, token: str) -> str:
    return (
        f'<input type="hidden" name="csrf_token" value="{_e(csrf)}">'
        f'<input type="hidden" name="token" value="{_e(token)}">'
    )


def verify_form(*, csrf: str, token: str, email: str) -> str:
    """The link's landing page: nothing happens until the button is pressed (mail scanners
    open links)."""
    who = f"<strong>{_e(email)}</strong>" if email else "your email address"
    body = (
        "<h1>Verify your email address</h1>\n"
        f'<p class="lead">Confirm that {who} belongs to your Luman account.</p>\n'
        f'<form method="post" action="{VERIFY_PATH}" class="stack">\n'
        f"{_hidden(csrf, token)}\n"
        '<button type="submit" class="primary">Verify</button>\n'
        "</form>"
    )
    return _layout("Verify your email address", body)


def verified(*, email: str) -> str:
    body = (
        '<div class="result result-ok" aria-hidden="true"></div>\n'
        "<h1>Email address verified</h1>\n"
        f'<p class="lead"><strong>{_e(email)}</strong> is verified. You can close this page.</p>'
    )
    return _layout("Email address verified", body)


def reset_form(
    *, csrf: str, token: str, email: str, error: str = "", revoke_cli_tokens: bool = False
) -> str:
    who = f" for <strong>{_e(email)}</strong>" if email else ""
    username = (
        f'<input type="hidden" name="email" value="{_e(email)}" autocomplete="username">\n'
        if email
        else ""
    )
    checked = " checked" if revoke_cli_tokens else ""
    body = (
        "<h1>Choose a new password</h1>\n"
        f'<p class="lead">Set a new password{who}. Every session of the account is signed '
        "out.</p>\n"
        f"{_error(error)}\n"
        f'<form method="post" action="{RESET_PATH}" class="stack">\n'
        f"{_hidden(csrf, token)}\n{username}"
        '<label for="new_password">New password</label>\n'
        '<input id="new_password" name="new_password" type="password" '
        'autocomplete="new-password" minlength="8" required autofocus '
        'aria-describedby="password-help">\n'
        '<p id="password-help" class="help">8 to 72 bytes.</p>\n'
        '<label for="confirm_password">Repeat the new password</label>\n'
        '<input id="confirm_password" name="confirm_password" type="password" '
        'autocomplete="new-password" minlength="8" required>\n'
        '<label for="revoke_cli_tokens">'
        '<input id="revoke_cli_tokens" name="revoke_cli_tokens" type="checkbox" '
        f'value="on"{checked}>'
        " Also sign out every CLI token (luman on other machines, CI)</label>\n"
        '<button type="submit" class="primary">Set the new password</button>\n'
        "</form>"
    )
    return _layout("Choose a new password", body)


def reset_done(*, revoked_sessions: int, revoked_cli_tokens: int, cli_tokens: bool) -> str:
    signed_out = f"{revoked_sessions} session{'' if revoked_sessions == 1 else 's'}"
    if cli_tokens:
        signed_out += f" and {revoked_cli_tokens} CLI token{'' if revoked_cli_tokens == 1 else 's'}"
    body = (
        '<div class="result result-ok" aria-hidden="true"></div>\n'
        "<h1>Password changed</h1>\n"
        f'<p class="lead">Your new password is set, and {_e(signed_out)} signed out. '
        "Sign in again with the new password.</p>"
    )
    return _layout("Password changed", body)


def message(title: str, text: str) -> str:
    """A page with a title and one plain sentence: errors and refusals."""
    return _layout(title, f'<h1>{_e(title)}</h1>\n<p class="lead">{_e(text)}</p>')
