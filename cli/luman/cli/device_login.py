"""`luman login`'s device flow (RFC 8628): start, show the code, poll until a decision.

The waiting goes through the module-level `sleep` and `monotonic`, so tests replace them
(monkeypatch) instead of waiting for real.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import sys
import time
import webbrowser
from collections.abc import Callable
from importlib import metadata

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
    if _should_open_browser(no_browser) and started.verification_uri_complete:
        # Best effort: the printed address is the way in when no browser opens.
        try:
            opened = webbrowser.open(started.verification_uri_complete)
        except webbrowser.Error:
            opened = False
        if opened and not state.as_json:
            output.progress("Opened the page in your browser.")
    with output.spinner("Waiting for approval in the browser…", as_json=state.as_json):
        token = wait_for_token(client, started, as_json=state.as_json)
    return save_device_login(
        token,
        api_url=str(state.address),
        timeout=state.timeout,
        root_certificates=state.root_certificates(),
    )


def wait_for_token(client: Client, started: DeviceAuthorization, *, as_json: bool) -> DeviceToken:
    """Poll every interval (longer after a slow_down) until the login is decided or expires.

    An unreachable backend is retried until the code expires: a login often outlives a
    blip in the network.
    """
    interval = max(1, started.interval)
    deadline = monotonic() + started.expires_in
    wait = interval
    while True:
        sleep(wait)
        wait = interval
        if monotonic() >= deadline:
            raise _expired(as_json)
        try:
            return client.auth.poll_device_login(started.device_code, CLI_CLIENT_ID)
        except AuthorizationPending:
            continue
        except SlowDown as exc:
            interval = exc.interval or interval + _SLOW_DOWN_STEP
            wait = interval
        except RateLimited as exc:
            # The per-address poll limit: wait as long as the server asks, then go on.
            if exc.retry_after is not None:
                wait = max(interval, math.ceil(exc.retry_after))
        except Unavailable:
            continue
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
            raise CliFailure(
                "the server does not know this login any more (claimed elsewhere?): "
                "run `luman login` again",
                ExitCode.UNAUTHENTICATED,
                as_json=as_json,
                details={"code": "UNAUTHENTICATED", "reason": exc.reason},
            ) from exc


def _expired(as_json: bool) -> CliFailure:
    return CliFailure(
        "the code expired before the login was approved: run `luman login` to start again",
        ExitCode.ERROR,
        as_json=as_json,
        details={"code": "FAILED_PRECONDITION", "reason": "EXPIRED_TOKEN"},
    )
