"""Headless Chromium for browser tests: Debian's /usr/bin/chromium driven by Playwright.

Never `playwright install` (it downloads a browser build): Playwright launches the Debian
package through `executable_path`. .ci/run installs it; elsewhere a missing browser skips the
test, except under CI=true, where it fails.

    @pytest.fixture(scope="module")
    def browser() -> Iterator[Browser]:
        with launched_chromium() as chromium:
            yield chromium

    context = loopback_context(browser)   # refuses every request that leaves 127.0.0.1
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Route, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox (root in CI), and none of Chromium's own background traffic (updates, sync, QUIC
# probing).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_chromium() -> None:
    """Skip the test when Debian's chromium is missing; fail instead under CI=true."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is not installed (Debian package chromium)"
    if in_ci():
        pytest.fail(f"{message}: .ci/run installs it")
    pytest.skip(message)


@contextlib.contextmanager
def launched_chromium() -> Iterator[Browser]:
    """One headless Chromium, closed on exit. Meant for a module-scoped `browser` fixture."""
    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def _stay_on_loopback(route: Route) -> None:
    host = urllib.parse.urlsplit(route.request.url).hostname or ""
    if host in LOOPBACK_HOSTS:
        route.continue_()
    else:
        route.abort("blockedbyclient")


def loopback_context(browser: Browser, **options: Any) -> BrowserContext:
    """A fresh context (no cookies) whose pages can reach loopback addresses only: a request
    to any other host (a font, a stylesheet, a stray link) is aborted, never sent.

    `options` go to `browser.new_context` (viewport, locale, ...). Close it when done.
    """
    context = browser.new_context(**options)
    context.route("**/*", _stay_on_loopback)
    return context


class MovingClock:
    """The wall clock plus whatever the test advanced it by: a server clock for browser tests.

    A frozen clock does not do there: the real CLI polls in real time (a frozen clock answers
    every poll SLOW_DOWN), and a real OpenID provider's ID tokens carry real iat and exp, which
    the server judges against its injected clock.
    """

    def __init__(self) -> None:
        self._offset = dt.timedelta()
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return dt.datetime.now(dt.UTC) + self._offset

    def advance(self, **delta: float) -> None:
        with self._lock:
            self._offset += dt.timedelta(**delta)
