"""Email verification and password reset over HTTP: the JSON routes, and the pages the links
in the messages open (/email/verify, /password/reset), with real mail from a real SMTP
server."""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse

import httpx
import pytest

from luman.server.config import Settings
from luman.server.gateway.email_pages import (
    EXPIRED,
    INVALID,
    MISMATCH,
    TOO_SHORT,
    USED,
    VERIFY_USED,
)
from luman.server.gateway.policy import PAGE_CSP
from tests.gateway.device_page_support import alerts, csrf_of
from tests.gateway.helpers import bearer, error_of, register
from tests.mail_support import Mailbox, ReceivedMail, code_of, link_of, link_token
from tests.support import PASSWORD, FakeClock, unique_email

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def settings(settings: Settings, mailbox: Mailbox) -> Settings:
    return dataclasses.replace(settings, smtp_url=mailbox.url)


def _page_of(mail: ReceivedMail) -> str:
    """The link's path and query, to open on the test's gateway."""
    parts = urllib.parse.urlsplit(link_of(mail))
    return f"{parts.path}?{parts.query}"


def _me(http: httpx.Client, token: str) -> dict[str, object]:
    response = http.get("/auth/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    user: dict[str, object] = response.json()["user"]
    return user


def _signed_up(http: httpx.Client) -> tuple[str, str]:
    email = unique_email()
    return email, register(http, email)["tokens"]["accessToken"]


def _verified(http: httpx.Client, mailbox: Mailbox) -> str:
    email, _ = _signed_up(http)
    code = code_of(mailbox.wait_for(email, "verify"))
    response = http.post("/auth/email:verify", json={"email": email, "code": code})
    assert response.status_code == 200, response.text
    return email


def test_json_routes_verify_and_reset(http: httpx.Client, mailbox: Mailbox) -> None:
    email, token = _signed_up(http)
    assert _me(http, token).get("emailVerified", False) is False
    first = mailbox.wait_for(email, "verify")

    verified = http.post("/auth/email:verify", json={"token": link_token(first)})

    assert verified.status_code == 200, verified.text
    assert verified.json()["user"]["emailVerified"] is True
    assert _me(http, token)["emailVerified"] is True
    resend = http.post("/auth/me:sendVerificationEmail", json={}, headers=bearer(token))
    assert error_of(resend).reason == "EMAIL_ALREADY_VERIFIED"

    asked = http.post("/auth/password:requestReset", json={"email": email})
    assert (asked.status_code, asked.json()) == (200, {})
    code = code_of(mailbox.wait_for(email, "reset"))
    reset = http.post(
        "/auth/password:reset",
        json={"email": email, "code": code, "newPassword": NEW_PASSWORD},
    )
    assert reset.status_code == 200, reset.text
    assert reset.json()["revokedSessions"] == 1
    assert http.get("/auth/me", headers=bearer(token)).status_code == 401
    login = http.post("/auth/login", json={"email": email, "password": NEW_PASSWORD})
    assert login.status_code == 200, login.text


def test_json_resend_cooldown_carries_retry_info(
    http: httpx.Client, mailbox: Mailbox, clock: FakeClock
) -> None:
    email, token = _signed_up(http)
    mailbox.wait_for(email, "verify")
    clock.advance(seconds=45)

    response = http.post("/auth/me:sendVerificationEmail", json={}, headers=bearer(token))

    error = error_of(response)
    assert (error.http_status, error.reason, error.retry_delay) == (
        429,
        "EMAIL_RECENTLY_SENT",
        "15s",
    )
    assert response.headers["retry-after"] == "15"


def test_a_replaced_link_says_to_use_the_newest_message(
    http: httpx.Client, mailbox: Mailbox, clock: FakeClock
) -> None:
    email, token = _signed_up(http)
    first = mailbox.wait_for(email, "verify")
    clock.advance(minutes=1)
    resend = http.post("/auth/me:sendVerificationEmail", json={}, headers=bearer(token))
    assert resend.status_code == 200, resend.text
    mailbox.wait_for(email, "verify", count=2)
    page = http.get(_page_of(first))

    posted = http.post(
        "/email/verify", data={"csrf_token": csrf_of(page.text), "token": link_token(first)}
    )

    assert posted.status_code == 409
    assert "<h1>This link was already used</h1>" in posted.text
    assert VERIFY_USED in posted.text
    assert "a newer message replaced it" in VERIFY_USED
    assert _me(http, token).get("emailVerified", False) is False


def test_verify_page_changes_nothing_until_posted(
    http: httpx.Client, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    email, token = _signed_up(http)
    mail = mailbox.wait_for(email, "verify")

    page = http.get(_page_of(mail))
    http.get(_page_of(mail))  # a mail scanner opening it again

    assert page.status_code == 200
    assert email in page.text
    headers = page.headers
    assert headers["content-security-policy"] == PAGE_CSP.decode()
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    cookie = next(c for c in headers.get_list("set-cookie") if c.startswith("luman_email_csrf="))
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/email/verify" in cookie
    assert _me(http, token).get("emailVerified", False) is False

    posted = http.post(
        "/email/verify", data={"csrf_token": csrf_of(page.text), "token": link_token(mail)}
    )

    assert posted.status_code == 200, posted.text
    assert "Email address verified" in posted.text
    assert _me(http, token)["emailVerified"] is True
    again = http.post(
        "/email/verify", data={"csrf_token": csrf_of(page.text), "token": link_token(mail)}
    )
    assert again.status_code == 409
    assert "<h1>This link was already used</h1>" in again.text
    assert "not verified" not in again.text
    assert "may already be verified" in VERIFY_USED
    assert "luman whoami" in VERIFY_USED
    # The token travels in the query string: no server log line may carry it. uvicorn's
    # access log (which would) is off: its logger has no handler of the server's and does not
    # propagate (pytest's caplog attaches one of its own, so its records are left out here).
    assert logging.getLogger("uvicorn.access").propagate is False
    server_logs = [
        r
        for r in caplog.records
        if r.name.startswith(("luman", "uvicorn", "grpc")) and r.name != "uvicorn.access"
    ]
    assert [r.getMessage() for r in server_logs if link_token(mail) in r.getMessage()] == []


def test_verify_page_needs_the_csrf_token(http: httpx.Client, mailbox: Mailbox) -> None:
    email, token = _signed_up(http)
    mail = mailbox.wait_for(email, "verify")
    page = http.get(_page_of(mail))

    missing = http.post("/email/verify", data={"token": link_token(mail)})
    wrong = http.post("/email/verify", data={"token": link_token(mail), "csrf_token": "x" * 43})
    foreign = http.post(
        "/email/verify",
        data={"csrf_token": csrf_of(page.text), "token": link_token(mail)},
        headers={"origin": "https://evil.example.com"},
    )

    assert [r.status_code for r in (missing, wrong, foreign)] == [403, 403, 403]
    assert _me(http, token).get("emailVerified", False) is False


def test_a_bogus_verify_link_says_it_is_not_valid(http: httpx.Client) -> None:
    page = http.get("/email/verify?token=bogus")

    posted = http.post("/email/verify", data={"csrf_token": csrf_of(page.text), "token": "bogus"})

    assert posted.status_code == 400
    assert "<h1>This link is not valid</h1>" in posted.text
    assert INVALID in posted.text
    assert "not verified" not in posted.text


def test_an_expired_verify_link_says_so(
    http: httpx.Client, mailbox: Mailbox, clock: FakeClock
) -> None:
    email, _ = _signed_up(http)
    mail = mailbox.wait_for(email, "verify")
    page = http.get(_page_of(mail))
    clock.advance(hours=49)

    posted = http.post(
        "/email/verify", data={"csrf_token": csrf_of(page.text), "token": link_token(mail)}
    )

    assert posted.status_code == 410
    assert "<h1>This link has expired</h1>" in posted.text
    assert EXPIRED in posted.text


def test_an_incomplete_link_gets_a_plain_page(http: httpx.Client) -> None:
    response = http.get("/password/reset")
    assert response.status_code == 400
    assert "Incomplete link" in response.text


def test_reset_page_sets_the_new_password(http: httpx.Client, mailbox: Mailbox) -> None:
    email = _verified(http, mailbox)
    http.post("/auth/password:requestReset", json={"email": email})
    mail = mailbox.wait_for(email, "reset")
    page = http.get(_page_of(mail))
    assert page.status_code == 200
    assert 'type="checkbox"' in page.text
    form = {"csrf_token": csrf_of(page.text), "token": link_token(mail), "email": email}

    mismatch = http.post(
        "/password/reset",
        data={**form, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD + "x"},
    )
    short = http.post(
        "/password/reset", data={**form, "new_password": "short", "confirm_password": "short"}
    )
    assert (mismatch.status_code, alerts(mismatch.text, "error")) == (400, [MISMATCH])
    assert (short.status_code, alerts(short.text, "error")) == (400, [TOO_SHORT])

    done = http.post(
        "/password/reset",
        data={
            **form,
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
            "revoke_cli_tokens": "on",
        },
    )

    assert done.status_code == 200, done.text
    assert "Password changed" in done.text
    assert "0 CLI tokens" in done.text
    old = http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    new = http.post("/auth/login", json={"email": email, "password": NEW_PASSWORD})
    assert new.status_code == 200
    again = http.post(
        "/password/reset",
        data={**form, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
    )
    assert again.status_code == 409
    assert USED in again.text
