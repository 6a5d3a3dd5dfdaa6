"""HTML of the device approval page (device_page.py): plain strings, every value escaped.

No template engine: the page is a handful of small views (two of them provider_pages.py's),
and `html.escape` on each interpolated value (the `_e` helper, quotes included, so values are
safe in attributes too) keeps them readable without a dependency. Nothing here runs script
or carries a style attribute: the CSP allows neither, and the stylesheet is /device/style.css.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence
from urllib.parse import quote

STYLESHEET_PATH = "/device/style.css"
PROVIDERS_PATH = "/device/providers"
LINK_PATH = PROVIDERS_PATH + "/link"
PROVIDERS_ONLY_NOTE = "This server does not use passwords: sign in with one of the accounts above."
NO_SIGN_IN_METHOD = (
    "This server has no way to sign in set up: it accepts no passwords and no other accounts. "
    "Ask its administrator."
)
ALWAYS_WARNING = "Only approve if you just ran <code>luman login</code> yourself."


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclasses.dataclass(frozen=True)
class Requester:
    """What the page says about the device login asking for access (all plain text)."""

    user_code: str  # "XXXX-XXXX"
    client: str  # client id and version: "luman-cli 1.4.0"
    host_name: str
    os: str
    client_ip: str
    age: str  # "2 minutes ago"
    scopes: tuple[str, ...]
    warnings: tuple[str, ...]  # plain sentences


_SCOPE_TEXT = {
    "read": "read your account, organizations and tokens",
    "write": "make changes: organizations, members and tokens",
}


def _layout(title: str, body: str, *, email: str = "", csrf: str = "") -> str:
    account = ""
    if email:
        account = (
            '<form class="account" method="post" action="/device/sign-out">'
            f'<input type="hidden" name="csrf_token" value="{_e(csrf)}">'
            f'<span class="who">Signed in as <strong>{_e(email)}</strong></span> '
            '<button type="submit" class="link">Sign out</button></form>'
        )
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="same-origin">\n'
        f"<title>{_e(title)} · Luman</title>\n"
        f'<link rel="stylesheet" href="{STYLESHEET_PATH}">\n'
        "</head>\n<body>\n"
        '<header class="top"><span class="brand" aria-label="Luman">'
        '<span class="mark" aria-hidden="true"></span>Luman</span>'
        f"{account}</header>\n"
        f'<main class="card">\n{body}\n</main>\n'
        '<footer class="foot">Device login · <span>RFC 8628</span></footer>\n'
        "</body>\n</html>\n"
    )


def _error(message: str) -> str:
    if not message:
        return ""
    return f'<p class="alert alert-error" role="alert">{_e(message)}</p>'


def _notice(message: str) -> str:
    if not message:
        return ""
    return f'<p class="alert alert-info" role="status">{_e(message)}</p>'


def _csrf_field(csrf: str) -> str:
    return f'<input type="hidden" name="csrf_token" value="{_e(csrf)}">'


@dataclasses.dataclass(frozen=True)
class ProviderButton:
    """An identity provider people can sign in with (ListIdentityProviders)."""

    id: str  # the URL segment: ^[a-z][a-z0-9-]{0,31}$
    display_name: str  # "GitHub"


def provider_start_url(provider_id: str, user_code: str) -> str:
    path = f"{PROVIDERS_PATH}/{quote(provider_id, safe='')}/start"
    return f"{path}?user_code={quote(user_code)}" if user_code else path


def _provider_buttons(providers: Sequence[ProviderButton], user_code: str) -> str:
    # Links, not forms: the CSP's form-action 'self' also covers the redirect a form post
    # gets (Chromium), which would block the hop to the provider. The GET only starts a
    # pending sign-in bound to this browser.
    if not providers:
        return ""
    links = "".join(
        f'<a class="button-link provider" href="{_e(provider_start_url(p.id, user_code))}">'
        f"Continue with {_e(p.display_name)}</a>\n"
        for p in providers
    )
    return f'<div class="providers">\n{links}</div>\n'


def sign_in(
    *,
    csrf: str,
    user_code: str,
    email: str = "",
    error: str = "",
    notice: str = "",
    providers: Sequence[ProviderButton] = (),
    password_login: bool = True,
) -> str:
    """The sign-in view: one "Continue with …" link per provider, then the email and password
    form (left out, with a sentence saying so, when the server has password sign-in off)."""
    code_line = ""
    if user_code:
        code_line = (
            '<p class="lead">Sign in to review the device login with code '
            f'<span class="code-inline">{_e(user_code)}</span>.</p>'
        )
    else:
        code_line = '<p class="lead">Sign in to connect a terminal to your account.</p>'
    buttons = _provider_buttons(providers, user_code)
    if password_login:
        divider = '<p class="divider"><span>or</span></p>\n' if buttons else ""
        form = (
            f"{divider}"
            '<form method="post" action="/device/sign-in" class="stack">\n'
            f"{_csrf_field(csrf)}\n"
            f'<input type="hidden" name="user_code" value="{_e(user_code)}">\n'
            '<label for="email">Email</label>\n'
            f'<input id="email" name="email" type="email" value="{_e(email)}" '
            'autocomplete="username" required autofocus>\n'
            '<label for="password">Password</label>\n'
            '<input id="password" name="password" type="password" '
            'autocomplete="current-password" required>\n'
            '<button type="submit" class="primary">Sign in</button>\n'
            "</form>"
        )
    elif buttons:
        form = f'<p class="help">{_e(PROVIDERS_ONLY_NOTE)}</p>'
    else:
        form = f'<p class="help">{_e(NO_SIGN_IN_METHOD)}</p>'
    body = f"<h1>Sign in</h1>\n{code_line}\n{_error(error)}{_notice(notice)}\n{buttons}{form}"
    return _layout("Sign in", body)


def enter_code(*, csrf: str, email: str, user_code: str = "", error: str = "") -> str:
    body = (
        "<h1>Connect a terminal</h1>\n"
        '<p class="lead">Enter the code your terminal shows after <code>luman login</code>.</p>\n'
        f"{_error(error)}\n"
        '<form method="post" action="/device/code" class="stack">\n'
        f"{_csrf_field(csrf)}\n"
        '<label for="user_code">Code</label>\n'
        f'<input id="user_code" name="user_code" type="text" value="{_e(user_code)}" '
        'class="code-input" placeholder="XXXX-XXXX" autocomplete="off" autocapitalize="characters" '
        'spellcheck="false" maxlength="20" required autofocus aria-describedby="code-help">\n'
        '<p id="code-help" class="help">Eight letters, with or without the dash.</p>\n'
        '<button type="submit" class="primary">Continue</button>\n'
        "</form>"
    )
    return _layout("Enter code", body, email=email, csrf=csrf)


def confirm(*, csrf: str, email: str, requester: Requester) -> str:
    warnings = "".join(
        f'<p class="alert alert-warning" role="alert">{_e(w)}</p>\n' for w in requester.warnings
    )
    scopes = "".join(
        f"<li><strong>{_e(s)}</strong>: {_e(_SCOPE_TEXT.get(s, s))}</li>" for s in requester.scopes
    )
    rows = (
        ("Application", requester.client),
        ("Host name", requester.host_name or "not given"),
        ("Operating system", requester.os or "not given"),
        ("Requested from", requester.client_ip or "unknown address"),
        ("Requested", requester.age),
    )
    details = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    code = _e(requester.user_code)
    hidden = f'{_csrf_field(csrf)}<input type="hidden" name="user_code" value="{code}">'
    body = (
        "<h1>Approve this device?</h1>\n"
        '<p class="lead">A terminal is asking to sign in to your account, '
        f"<strong>{_e(email)}</strong>.</p>\n"
        f'<p class="code-big" aria-label="Code">{code}</p>\n'
        '<p class="help center">Check that this matches the code in your terminal.</p>\n'
        f"{warnings}"
        f'<p class="alert alert-caution">{ALWAYS_WARNING}</p>\n'
        f'<dl class="details">{details}</dl>\n'
        f'<h2>It will be able to</h2>\n<ul class="scopes">{scopes}</ul>\n'
        '<div class="actions">\n'
        f'<form method="post" action="/device/deny">{hidden}'
        '<button type="submit" class="secondary">Deny</button></form>\n'
        f'<form method="post" action="/device/approve">{hidden}'
        '<button type="submit" class="primary">Approve</button></form>\n'
        "</div>"
    )
    return _layout("Approve device", body, email=email, csrf=csrf)


def approved(*, csrf: str, email: str) -> str:
    body = (
        '<div class="result result-ok" aria-hidden="true"></div>\n'
        "<h1>Device approved</h1>\n"
        '<p class="lead">You can use the terminal now: <code>luman</code> is signed in as '
        f"<strong>{_e(email)}</strong>.</p>\n"
        '<p class="help">You can close this page. The terminal has its own token, listed by '
        "<code>luman token list</code> and revocable at any time.</p>"
    )
    return _layout("Device approved", body, email=email, csrf=csrf)


def denied(*, csrf: str, email: str) -> str:
    body = (
        '<div class="result result-denied" aria-hidden="true"></div>\n'
        "<h1>Request denied</h1>\n"
        '<p class="lead">The terminal was not signed in. Nothing was granted to it.</p>\n'
        '<p class="help">If you did not start this login, your account is safe; consider '
        "changing your password if you did not expect it.</p>"
    )
    return _layout("Request denied", body, email=email, csrf=csrf)


def message(title: str, text: str, *, csrf: str = "", email: str = "", back: bool = True) -> str:
    """A page with a title and one plain sentence: errors (403, 404, 500) and notices."""
    link = '<p><a class="button-link" href="/device">Back to the start</a></p>' if back else ""
    body = f'<h1>{_e(title)}</h1>\n<p class="lead">{_e(text)}</p>\n{link}'
    return _layout(title, body, email=email, csrf=csrf)


def page_url(user_code: str) -> str:
    """/device, with the code filled in when there is one."""
    return f"/device?user_code={quote(user_code)}" if user_code else "/device"


def provider_failure(title: str, text: str, *, user_code: str) -> str:
    """A sign-in through a provider that did not happen: one plain sentence, and the way back
    to the sign-in view (with the device code, if there was one)."""
    body = (
        f'<h1>{_e(title)}</h1>\n<p class="lead">{_e(text)}</p>\n'
        f'<p><a class="button-link" href="{_e(page_url(user_code))}">Back to sign-in</a></p>'
    )
    return _layout(title, body)


def link_account(
    *, csrf: str, provider: str, provider_name: str, email: str, user_code: str, error: str = ""
) -> str:
    """The password form that links a provider's account to the existing account with its
    email (LinkProviderIdentity). `provider` and `email` are shown only: the link token in
    its cookie decides."""
    body = (
        "<h1>Link your account</h1>\n"
        f'<p class="lead">An account with the email <strong>{_e(email)}</strong> already exists. '
        f"Enter its password to link it to your {_e(provider_name)} account: after that, "
        f"Continue with {_e(provider_name)} signs you in to it.</p>\n"
        f"{_error(error)}\n"
        f'<form method="post" action="{LINK_PATH}" class="stack">\n'
        f"{_csrf_field(csrf)}\n"
        f'<input type="hidden" name="user_code" value="{_e(user_code)}">\n'
        f'<input type="hidden" name="provider" value="{_e(provider)}">\n'
        f'<input type="hidden" name="email" value="{_e(email)}">\n'
        # A hidden username lets password managers offer the right entry.
        f'<input type="hidden" name="username" value="{_e(email)}" autocomplete="username">\n'
        '<label for="password">Password</label>\n'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required autofocus>\n'
        '<button type="submit" class="primary">Link and sign in</button>\n'
        "</form>\n"
        f'<p class="help"><a href="{_e(page_url(user_code))}">Back to sign-in</a>: '
        "nothing is linked unless you enter the password.</p>"
    )
    return _layout("Link your account", body)
