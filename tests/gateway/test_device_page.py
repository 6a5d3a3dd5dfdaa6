"""The device login's approval page, /device, over plain HTTP (no browser): headers, cookies,
CSRF, messages, and that approving or denying there is what the CLI's poll then sees."""

from __future__ import annotations

import dataclasses

import grpc
import httpx
import pytest

from luman.auth.v1 import auth_service_pb2_grpc
from luman.server.config import Settings
from luman.server.gateway.device_page import BAD_CREDENTIALS, SESSION_EXPIRED, WRONG_CODE
from luman.server.gateway.policy import PAGE_CSP
from tests.gateway.device_page_support import alerts, csrf_of, sign_in
from tests.gateway.helpers import register
from tests.server.device_login_support import poll, poll_failure, start
from tests.support import FakeClock, unique_email

Stub = auth_service_pb2_grpc.AuthServiceStub
OTHER_NETWORK = "198.51.100.7"  # what a trusted proxy says the browser's address is
ALWAYS = "Only approve if you just ran luman login yourself."


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test client (127.0.0.1) is a trusted proxy: X-Forwarded-For/-Proto are believed.
    Wrong codes are limited as by default (the shared fixture lifts every limit)."""
    return dataclasses.replace(
        settings,
        trusted_proxies=("127.0.0.1/32",),
        device_code_attempts_per_ip=Settings.device_code_attempts_per_ip,
    )


@pytest.fixture
def email(http: httpx.Client) -> str:
    address = unique_email()
    register(http, address)
    return address


def _cookie(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(name + "="):
            return header
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


def _signed_in(http: httpx.Client, email: str, user_code: str = "") -> httpx.Response:
    """Sign in and follow the redirect back to the page."""
    response = sign_in(http, email, user_code)
    assert response.status_code == 303, response.text
    page = http.get(response.headers["location"])
    assert page.status_code == 200, page.text
    return page


def _decide(
    http: httpx.Client, page: httpx.Response, user_code: str, action: str
) -> httpx.Response:
    """Post the decision and follow its redirect to the outcome page."""
    decided = http.post(
        f"/device/{action}", data={"csrf_token": csrf_of(page.text), "user_code": user_code}
    )
    # Post/redirect/get: a reload of the outcome repeats nothing.
    assert decided.status_code == 303, decided.text
    outcome = "approved" if action == "approve" else "denied"
    assert decided.headers["location"] == f"/device/done?outcome={outcome}"
    return http.get(decided.headers["location"])


@pytest.mark.shape_check
def test_device_page_headers_and_csrf_cookie(http: httpx.Client) -> None:
    response = http.get("/device")
    assert response.status_code == 200
    headers = response.headers
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"] == PAGE_CSP.decode()
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "script-src" not in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in headers
    csrf = _cookie(response, "luman_device_csrf")
    assert "; HttpOnly" in csrf
    assert "; SameSite=Strict" in csrf
    assert "; Path=/device" in csrf
    assert "Secure" not in csrf
    assert 'name="csrf_token"' in response.text
    assert "<script" not in response.text
    assert " style=" not in response.text
    css = http.get("/device/style.css")
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert css.headers["x-content-type-options"] == "nosniff"
    assert b".card" in css.content


@pytest.mark.shape_check
def test_device_page_unknown_path_and_method(http: httpx.Client) -> None:
    missing = http.get("/device/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "text/html; charset=utf-8"
    assert http.put("/device").status_code == 405
    assert http.get("/device/approve").headers["allow"] == "POST"


def test_device_page_cookies_secure_behind_tls_proxy(http: httpx.Client, email: str) -> None:
    tls = {"x-forwarded-proto": "https"}
    page = http.get("/device", headers=tls)
    assert "; Secure" in _cookie(page, "luman_device_csrf")
    assert page.headers["strict-transport-security"].startswith("max-age=")
    # httpx keeps Secure cookies for https only: post the token and cookie by hand.
    token = csrf_of(page.text)
    response = http.post(
        "/device/sign-in",
        data={"csrf_token": token, "email": email, "password": "correct horse battery"},
        headers={**tls, "cookie": f"luman_device_csrf={token}"},
    )
    assert response.status_code == 303, response.text
    session = _cookie(response, "luman_device_session")
    for flag in ("; HttpOnly", "; SameSite=Lax", "; Path=/device", "; Secure"):
        assert flag in session
    max_age = int(session.split("Max-Age=")[1].split(";")[0])
    assert 0 < max_age <= 15 * 60


def test_device_page_session_cookie_without_tls(http: httpx.Client, email: str) -> None:
    response = sign_in(http, email)
    assert response.status_code == 303
    assert response.headers["location"] == "/device"
    session = _cookie(response, "luman_device_session")
    assert "Secure" not in session
    assert "; HttpOnly" in session
    assert "; SameSite=Lax" in session


@pytest.mark.shape_check
def test_device_page_post_without_csrf_token_is_refused(http: httpx.Client) -> None:
    http.get("/device")  # the CSRF cookie
    response = http.post("/device/sign-in", data={"email": "a@example.com", "password": "x"})
    assert response.status_code == 403
    assert "could not be verified" in response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"


@pytest.mark.shape_check
def test_device_page_post_with_mismatched_csrf_token_is_refused(http: httpx.Client) -> None:
    http.get("/device")
    response = http.post(
        "/device/approve", data={"csrf_token": "not-the-cookie", "user_code": "BCDF-GHJK"}
    )
    assert response.status_code == 403
    # No cookie at all (a cross-site post carries none: SameSite=Strict) is refused too.
    http.cookies.clear()
    response = http.post("/device/approve", data={"csrf_token": "x", "user_code": "BCDF-GHJK"})
    assert response.status_code == 403


@pytest.mark.shape_check
def test_device_page_post_from_foreign_origin_is_refused(http: httpx.Client) -> None:
    page = http.get("/device")
    form = {"csrf_token": csrf_of(page.text), "user_code": "BCDF-GHJK"}
    response = http.post("/device/code", data=form, headers={"origin": "https://evil.example"})
    assert response.status_code == 403
    # A sandboxed frame or a data: URL posts with `Origin: null`: no better than a foreign one.
    response = http.post("/device/code", data=form, headers={"origin": "null"})
    assert response.status_code == 403
    own = f"http://{http.base_url.host}:{http.base_url.port}"
    response = http.post("/device/code", data=form, headers={"origin": own})
    assert response.status_code == 303
    assert response.headers["location"] == "/device?user_code=BCDF-GHJK"


def test_device_page_sign_in_failure_message(http: httpx.Client, email: str) -> None:
    response = sign_in(http, email, password="wrong password!")
    assert response.status_code == 401
    assert alerts(response.text, "error") == [BAD_CREDENTIALS]
    assert "luman_device_session" not in response.headers.get("set-cookie", "")
    assert f'value="{email}"' in response.text  # the email is kept, the password is not


def test_device_page_wrong_code_message_is_the_same_for_unknown_and_expired(
    http: httpx.Client, email: str, auth: Stub, clock: FakeClock
) -> None:
    started = start(auth)
    _signed_in(http, email)
    unknown = http.get("/device?user_code=BCDF-GHJK")
    clock.advance(seconds=601)
    expired = http.get(f"/device?user_code={started.user_code}")
    assert unknown.status_code == expired.status_code == 404
    assert alerts(unknown.text, "error") == alerts(expired.text, "error") == [WRONG_CODE]
    malformed = http.get("/device?user_code=AEIOU")
    assert alerts(malformed.text, "error") == [WRONG_CODE]


def test_device_page_approve_then_poll_returns_the_token(
    http: httpx.Client, email: str, auth: Stub
) -> None:
    started = start(auth, host_name="ada-laptop")
    page = _signed_in(http, email, started.user_code)
    assert started.user_code in page.text
    assert "ada-laptop" in page.text
    assert "luman-cli 1.4.0" in page.text
    assert "127.0.0.1" in page.text
    assert "less than a minute ago" in page.text
    assert alerts(page.text, "caution") == [ALWAYS]
    assert alerts(page.text, "warning") == []  # fresh, and from this network
    done = _decide(http, page, started.user_code, "approve")
    assert done.status_code == 200
    assert "Device approved" in done.text
    assert "use the terminal now" in done.text
    token = poll(auth, started.device_code)
    assert token.access_token
    assert token.user.email == email
    assert token.cli_token.name == "ada-laptop (luman CLI)"


def test_device_page_deny_then_poll_is_access_denied(
    http: httpx.Client, email: str, auth: Stub
) -> None:
    started = start(auth)
    page = _signed_in(http, email, started.user_code)
    done = _decide(http, page, started.user_code, "deny")
    assert done.status_code == 200
    assert "Request denied" in done.text
    failed = poll_failure(auth, started.device_code)
    assert failed.error.code == grpc.StatusCode.PERMISSION_DENIED
    assert failed.error.reason == "ACCESS_DENIED"


def test_device_page_code_form_leads_to_the_confirmation(
    http: httpx.Client, email: str, auth: Stub
) -> None:
    started = start(auth)
    page = _signed_in(http, email)
    assert 'id="user_code"' in page.text
    lower = started.user_code.replace("-", "").lower()
    response = http.post(
        "/device/code", data={"csrf_token": csrf_of(page.text), "user_code": lower}
    )
    assert response.status_code == 303
    confirm = http.get(response.headers["location"])
    assert "Approve this device?" in confirm.text
    assert started.user_code in confirm.text


def test_device_page_flags_an_old_code(
    http: httpx.Client, email: str, auth: Stub, clock: FakeClock
) -> None:
    started = start(auth)
    clock.advance(seconds=4 * 60)
    page = _signed_in(http, email, started.user_code)
    warnings = alerts(page.text, "warning")
    assert len(warnings) == 1
    assert "requested 4 minutes ago" in warnings[0]
    assert alerts(page.text, "caution") == [ALWAYS]


def test_device_page_flags_a_requester_on_another_network(
    http: httpx.Client, email: str, auth: Stub
) -> None:
    started = start(auth)  # from 127.0.0.1
    away = {"x-forwarded-for": OTHER_NETWORK}
    response = sign_in(http, email, started.user_code, **away)
    page = http.get(response.headers["location"], headers=away)
    warnings = alerts(page.text, "warning")
    assert len(warnings) == 1
    assert "different network" in warnings[0]
    assert OTHER_NETWORK in warnings[0]
    assert "127.0.0.1" in warnings[0]
    # The same /24 is the same network.
    near = http.get(response.headers["location"], headers={"x-forwarded-for": "127.0.0.77"})
    assert alerts(near.text, "warning") == []


def test_device_page_escapes_a_hostile_host_name(
    http: httpx.Client, email: str, auth: Stub
) -> None:
    started = start(auth, host_name="<script>alert(1)</script>")
    page = _signed_in(http, email, started.user_code)
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    done = _decide(http, page, started.user_code, "approve")
    assert "<script>" not in done.text


def test_device_page_expired_session_goes_back_to_sign_in(
    http: httpx.Client, email: str, clock: FakeClock
) -> None:
    _signed_in(http, email)
    clock.advance(seconds=16 * 60)  # past JWT_EXPIRES_IN
    page = http.get("/device?user_code=BCDF-GHJK")
    assert page.status_code == 200
    assert alerts(page.text, "info") == [SESSION_EXPIRED]
    assert 'action="/device/sign-in"' in page.text
    assert 'name="user_code" value="BCDF-GHJK"' in page.text
    assert "Max-Age=0" in _cookie(page, "luman_device_session")


def test_device_page_sign_out_clears_the_cookie(http: httpx.Client, email: str) -> None:
    page = _signed_in(http, email)
    response = http.post("/device/sign-out", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 303
    assert "Max-Age=0" in _cookie(response, "luman_device_session")
    assert 'action="/device/sign-in"' in http.get("/device").text


def test_device_page_too_many_wrong_codes(http: httpx.Client, email: str) -> None:
    _signed_in(http, email)
    page = None
    for _ in range(11):  # DEVICE_CODE_ATTEMPTS_PER_IP is 10
        page = http.get("/device?user_code=BCDF-GHJK")
    assert page is not None
    assert page.status_code == 429
    [error] = alerts(page.text, "error")
    assert error.startswith("Too many attempts, try again in ")
    assert error.endswith("minutes.")
