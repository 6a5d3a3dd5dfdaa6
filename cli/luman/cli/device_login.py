"""`luman login`'s device flow (RFC 8628): start, show the code, poll until a decision.

The waiting goes through the module-level `sleep` and `monotonic`, so tests replace them
(monkeypatch) instead of waiting for real.
"""

from __future__ import annotations

import math
import os
import platform
import signal
import socket
import sys
import time
import webbrowser
from collections.abc import Callable
from importlib import metadata
from urllib.parse import urlsplit

from luman.cli import output
from luman.cli.context import State
from luman.cli.failures import CliFailure, ExitCode, exit_code_for
from luman.client import (
    CLI_CLIENT_ID,
    AccessDenied,
    AuthData,
    AuthorizationPending,
    Client,
    DeviceAuthorization,
    DeviceToken,
    ExpiredToken,
    InvalidGrant,
    RateLimited,
    SlowDown,
    Unavailable,
    save_device_login,
)

sleep: Callable[[float], None] = time.sleep
monotonic: Callable[[], float] = time.monotonic

# RFC 8628 section 3.5: each slow_down adds 5 seconds, when the server does not say how many.
_SLOW_DOWN_STEP = 5


def _version() -> str:
    try:
        return metadata.version("luman")
    except metadata.PackageNotFoundError:
        return "0"


def _os_name() -> str:
    return f"{platform.system()} {platform.release()}".strip()


def _host_name() -> str:
    try:
        return socket.gethostname().strip()[:100]
    except OSError:
        return ""


def has_display() -> bool:
    """Whether a browser could show up: always on macOS and Windows, with X11 or Wayland
    elsewhere."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _should_open_browser(no_browser: bool) -> bool:
    if no_browser:
        return False
    return sys.stdout.isatty() and sys.stderr.isatty() and has_display()


def login(state: State, *, no_browser: bool) -> AuthData:
    """Run the whole device login and save its token; returns what was saved.

    Raises:
        CliFailure: denied, expired, or the device code was refused.
        KeyboardInterrupt: Ctrl-C while waiting (the caller says "Login cancelled.").
        ClientError: the start failed, or a poll failed in a way waiting cannot fix.
    """
    client = state.client(authenticated=False)
    started = client.auth.start_device_login(
        CLI_CLIENT_ID,
        host_name=_host_name(),
        client_version=_version(),
        os=_os_name(),
    )
    output.device_code(started, as_json=state.as_json)
    if _should_open_browser(no_browser) and _same_site(started):
        # Best effort: the printed address is the way in when no browser opens.
        try:
            opened = webbrowser.open(started.verification_uri_complete)
        except webbrowser.Error:
            opened = False
        if opened and not state.as_json:
            output.progress("Opened the page in your browser.")
    with output.spinner("Waiting for approval in the browser…", as_json=state.as_json):
        token = wait_for_token(client, started, as_json=state.as_json)
    # The token exists on the server from here on: a Ctrl-C now would leave it unsaved and
    # unheld, so the save runs with Ctrl-C ignored (it takes a moment, and revokes only the
    # previous login's token).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return save_device_login(
            token,
            api_url=str(state.address),
            timeout=state.timeout,
            root_certificates=state.root_certificates(),
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def _same_site(started: DeviceAuthorization) -> bool:
    """Open only an http(s) page on the verification address's own site: a server answering
    with a file: or custom-scheme link opens nothing."""
    page, complete = urlsplit(started.verification_uri), urlsplit(started.verification_uri_complete)
    return complete.scheme in ("http", "https") and (complete.scheme, complete.netloc) == (
        page.scheme,
        page.netloc,
    )


def wait_for_token(client: Client, started: DeviceAuthorization, *, as_json: bool) -> DeviceToken:
    """Poll every interval (longer after a slow_down) until the login is decided or expires.

    An unreachable backend is retried until the code expires: a login often outlives a
    blip in the network.
    """
    interval = max(1, started.interval)
    deadline = monotonic() + started.expires_in
    wait = interval
    # A poll whose answer was lost (a timeout, a dropped connection) may have claimed the
    # token: an INVALID_GRANT after one says so rather than "unknown".
    lost_answer = False
    while True:
        sleep(wait)
        wait = interval
        try:
            return client.auth.poll_device_login(started.device_code, CLI_CLIENT_ID)
        except AuthorizationPending:
            pass
        except SlowDown as exc:
            interval = exc.interval or interval + _SLOW_DOWN_STEP
            wait = interval
        except RateLimited as exc:
            # The per-address poll limit: wait as long as the server asks, then go on.
            if exc.retry_after is not None:
                wait = max(interval, math.ceil(exc.retry_after))
            if monotonic() + wait >= deadline:
                raise CliFailure(
                    "the server is refusing polls from this address (rate limited) until "
                    "after the code expires: try `luman login` again later",
                    exit_code_for(exc),
                    as_json=as_json,
                    details={"code": "RESOURCE_EXHAUSTED", "reason": exc.reason},
                ) from exc
        except Unavailable:
            lost_answer = True
        except AccessDenied as exc:
            raise CliFailure(
                "the login was denied in the browser (or its approval was withdrawn)",
                exit_code_for(exc),
                as_json=as_json,
                details={"code": "PERMISSION_DENIED", "reason": exc.reason},
            ) from exc
        except ExpiredToken as exc:
            raise _expired(as_json) from exc
        except InvalidGrant as exc:
            message = (
                "a poll's answer was lost, and the server has handed this login's token out "
                "already: it may be on the server unsaved here. Find it with `luman token list` "
                "(from another login) and revoke it, then run `luman login` again"
                if lost_answer
                else "the server does not know this login any more (claimed elsewhere?): "
                "run `luman login` again"
            )
            raise CliFailure(
                message,
                ExitCode.UNAUTHENTICATED,
                as_json=as_json,
                details={"code": "UNAUTHENTICATED", "reason": exc.reason},
            ) from exc
        # Still waiting. The server decides expiry (an approval in the last seconds can still be
        # claimed once past it), so only a code well past its lifetime stops here.
        if monotonic() >= deadline + interval:
            raise _expired(as_json)


def _expired(as_json: bool) -> CliFailure:
    return CliFailure(
        "the code expired before the login was approved: run `luman login` to start again",
        ExitCode.ERROR,
        as_json=as_json,
        details={"code": "FAILED_PRECONDITION", "reason": "EXPIRED_TOKEN"},
    )
