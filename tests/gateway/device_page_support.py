"""Helpers for the /device page tests: reading the forms' CSRF token and the page's messages."""

from __future__ import annotations

import html
import re

import httpx

from tests.support import PASSWORD

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')
_ALERTS = re.compile(r'<p class="alert alert-(\w+)"[^>]*>(.*?)</p>', re.S)


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found is not None, page
    return html.unescape(found.group(1))


def alerts(page: str, kind: str) -> list[str]:
    """The texts (tags removed) of the page's alerts of one kind: error, warning, info, caution."""
    return [
        html.unescape(re.sub(r"<[^>]+>", "", text))
        for k, text in _ALERTS.findall(page)
        if k == kind
    ]


def sign_in(
    http: httpx.Client, email: str, user_code: str = "", password: str = PASSWORD, **headers: str
) -> httpx.Response:
    """Open the page (for its CSRF cookie and token), then post the sign-in form."""
    query = f"?user_code={user_code}" if user_code else ""
    page = http.get(f"/device{query}", headers=headers)
    assert page.status_code == 200, page.text
    return http.post(
        "/device/sign-in",
        data={
            "csrf_token": csrf_of(page.text),
            "email": email,
            "password": password,
            "user_code": user_code,
        },
        headers=headers,
    )
