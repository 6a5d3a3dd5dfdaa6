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
import dataclasses
import datetime as dt
import json
import os
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Where browser tests leave their screenshots (ignored by git; docs/screenshots holds the
# ones the README shows).
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
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


def screenshot(page: Page, name: str) -> None:
    """The whole page, as SCREENSHOTS/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


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


# -- the real CLI beside the browser ----------------------------------------------------------

CLI_TIMEOUT = 60.0  # seconds the CLI may take to claim its token once the browser approved


@dataclasses.dataclass
class CliLogin:
    """A running `luman login --no-browser --json`: `started` is its first JSON line (the
    verification URI and code), `output` what it printed once it finished."""

    started: dict[str, Any]
    output: str = ""


def cli_environment(config_dir: Path) -> dict[str, str]:
    """The environment of a real `luman` subprocess: its own config folder, no proxy (the
    server is on loopback) and none of the test's LUMAN_* settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.startswith("LUMAN_")
    }
    env["LUMAN_CONFIG_DIR"] = str(config_dir)
    env["NO_COLOR"] = "1"
    return env


@contextlib.contextmanager
def cli_login(command: Sequence[str], env: Mapping[str, str], log: Path) -> Iterator[CliLogin]:
    """Runs `<command> login --no-browser --json` while the block approves the code it printed
    (in a browser), then waits for it to claim its token: it must exit 0. Its stderr goes to
    `log`, shown if it fails; it is killed if the block fails."""
    with log.open("w") as stderr:
        cli = subprocess.Popen(
            [*command, "login", "--no-browser", "--json"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        try:
            assert cli.stdout is not None
            login = CliLogin(json.loads(cli.stdout.readline()))
            yield login
            login.output, _ = cli.communicate(timeout=CLI_TIMEOUT)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
    assert cli.returncode == 0, log.read_text() + login.output


def cli_whoami(command: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
    """`<command> --json whoami`, which must succeed: the saved login as the server sees it."""
    result = subprocess.run(
        [*command, "--json", "whoami"],
        capture_output=True,
        env=env,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer
