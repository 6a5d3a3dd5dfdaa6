"""The /device page in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright, against the gateway on a free loopback port. The approval runs end to end from the
real CLI: `luman login --no-browser --json` in a subprocess prints the code, the browser
approves it, and the CLI saves its token (`luman whoami` then works).

Screenshots of the sign-in, approval and done pages go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from luman.auth.v1 import auth_service_pb2_grpc
from luman.server.app import App
from luman.server.config import Settings
from luman.server.gateway import GatewayServer
from luman.server.gateway.device_page import WRONG_CODE
from tests.browser_support import (
    MovingClock,
    cli_environment,
    cli_login,
    cli_whoami,
    launched_chromium,
    screenshot,
)
from tests.gateway.helpers import register
from tests.server.device_login_support import poll_failure, start
from tests.support import PASSWORD, unique_email

Stub = auth_service_pb2_grpc.AuthServiceStub


@pytest.fixture
def clock() -> MovingClock:
    return MovingClock()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Poll every second: the CLI below waits in real time.
    return dataclasses.replace(settings, device_poll_interval=1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh context (no cookies) per test, failing on any Content Security Policy
    violation the page causes."""
    context = browser.new_context(viewport={"width": 760, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on(
        "console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None
    )
    yield tab
    context.close()
    assert errors == []


@pytest.fixture
def email(gateway: GatewayServer) -> str:
    address = unique_email()
    with httpx.Client(base_url=_base(gateway), trust_env=False) as http:
        register(http, address)
    return address


def _base(gateway: GatewayServer) -> str:
    return f"http://127.0.0.1:{gateway.port}"


def _shot(page: Page, name: str) -> None:
    screenshot(page, f"device-{name}")


def _sign_in(page: Page, email: str, *, shot: bool = False) -> None:
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # The stylesheet loaded under the CSP: the page has its background, not the default.
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(244, 245, 248)"
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    if shot:
        _shot(page, "sign-in")
    page.get_by_role("button", name="Sign in").click()


def test_device_browser_approve_with_the_real_cli(
    page: Page, app: App, email: str, tmp_path: Path
) -> None:
    env = cli_environment(tmp_path / "config")
    command = [sys.executable, "-m", "luman.cli", "--api-url", f"127.0.0.1:{app.port}"]
    with cli_login(command, env, tmp_path / "login.err") as login:
        started = login.started
        page.goto(started["verification_uri_complete"])
        _sign_in(page, email, shot=True)
        expect(page.get_by_role("heading", name="Approve this device?")).to_be_visible()
        expect(page.locator(".code-big")).to_have_text(started["user_code"])
        expect(page.locator(".details")).to_contain_text("luman-cli")
        expect(page.locator(".details")).to_contain_text("127.0.0.1")
        expect(page.locator(".details")).to_contain_text("less than a minute ago")
        expect(page.get_by_text("Only approve if you just ran")).to_be_visible()
        _shot(page, "approve")
        page.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("heading", name="Device approved")).to_be_visible()
        expect(page.get_by_text("You can use the terminal now")).to_be_visible()
        _shot(page, "done")
    assert email in login.output
    assert cli_whoami(command, env)["email"] == email


def test_device_browser_deny(page: Page, auth: Stub, email: str) -> None:
    started = start(auth)
    page.goto(started.verification_uri_complete)
    _sign_in(page, email)
    page.get_by_role("button", name="Deny").click()
    expect(page.get_by_role("heading", name="Request denied")).to_be_visible()
    failed = poll_failure(auth, started.device_code)
    assert failed.error.code == grpc.StatusCode.PERMISSION_DENIED
    assert failed.error.reason == "ACCESS_DENIED"


def test_device_browser_expired_code(
    page: Page, auth: Stub, email: str, clock: MovingClock
) -> None:
    started = start(auth)
    clock.advance(seconds=601)  # DEVICE_CODE_LIFETIME is 10 minutes
    page.goto(started.verification_uri_complete)
    _sign_in(page, email)
    expect(page.get_by_role("alert")).to_have_text(WRONG_CODE)
    expect(page.get_by_label("Code")).to_be_visible()


def test_device_browser_form_without_csrf_token_is_refused(
    page: Page, auth: Stub, email: str
) -> None:
    started = start(auth)
    page.goto(started.verification_uri_complete)
    _sign_in(page, email)
    expect(page.get_by_role("heading", name="Approve this device?")).to_be_visible()
    page.evaluate(
        "document.querySelector('form[action=\"/device/approve\"] input[name=csrf_token]').remove()"
    )
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("heading", name="Request refused")).to_be_visible()
    failed = poll_failure(auth, started.device_code)
    assert failed.error.reason == "AUTHORIZATION_PENDING"
