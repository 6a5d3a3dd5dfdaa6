"""`luman login` through the browser (RFC 8628 device login), end to end.

CliRunner tests replace the CLI's `sleep` (luman.cli.device_login.sleep) with a function that
records the interval it was asked for and plays the person's part (approve, deny, let the code
expire) by moving the server's FakeClock and calling the approver's RPCs. The server sees
exactly the time that `sleep` advances: a sleep that does not advance the clock makes the next
poll come "0 s" after the previous one, which the server answers with SLOW_DOWN.

The terminal tests run the real CLI in a pseudo-terminal (pexpect), against a server on the
system clock with a 1 s poll interval, and read the code off the screen as a person would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pexpect
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.cli import device_login, output
from luman.client import (
    AuthorizationPending,
    Client,
    DeviceAuthorization,
    SlowDown,
    Unavailable,
)
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.clock import system_clock
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.cli.conftest import Luman
from tests.support import PASSWORD, FakeClock, bearer, refused_reason, register, unique_email

OK, ERROR, USAGE, UNAUTHENTICATED, CANCELLED = 0, 1, 2, 3, 130
INTERVAL = 7  # not the default 5: the CLI must wait what the server says
CODE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}")
TERMINAL_TIMEOUT = 20  # seconds, for each expect in the terminal tests


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, device_poll_interval=INTERVAL)


@pytest.fixture
def auth(app: App) -> Iterator[auth_service_pb2_grpc.AuthServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


@dataclasses.dataclass
class Person:
    """The person at the browser: signed up, and acting when the CLI goes to sleep."""

    auth: auth_service_pb2_grpc.AuthServiceStub
    clock: FakeClock
    email: str
    access_token: str
    started: list[DeviceAuthorization] = dataclasses.field(default_factory=list)
    slept: list[float] = dataclasses.field(default_factory=list)

    @property
    def user_code(self) -> str:
        return self.started[-1].user_code

    def approve(self) -> None:
        self.auth.ApproveDeviceLogin(
            auth_service_pb2.ApproveDeviceLoginRequest(user_code=self.user_code),
            metadata=bearer(self.access_token),
        )

    def deny(self) -> None:
        self.auth.DenyDeviceLogin(
            auth_service_pb2.DenyDeviceLoginRequest(user_code=self.user_code),
            metadata=bearer(self.access_token),
        )


@pytest.fixture
def person(
    auth: auth_service_pb2_grpc.AuthServiceStub, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Person:
    email = unique_email("ada")
    signed_up = register(auth, email=email, name="Ada Lovelace")
    who = Person(auth, clock, email, signed_up.tokens.access_token)
    shown = output.device_code

    def capture(value: DeviceAuthorization, *, as_json: bool) -> None:
        who.started.append(value)
        shown(value, as_json=as_json)

    monkeypatch.setattr(output, "device_code", capture)
    return who


def _sleeps(
    monkeypatch: pytest.MonkeyPatch,
    person: Person,
    act: Callable[[int, float], None],
) -> None:
    """Replace the CLI's sleep: record the interval, then `act(n, seconds)` (n from 1)."""

    def fake_sleep(seconds: float) -> None:
        person.slept.append(seconds)
        act(len(person.slept), seconds)

    monkeypatch.setattr(device_login, "sleep", fake_sleep)


def _approve_at_first_sleep(monkeypatch: pytest.MonkeyPatch, person: Person) -> None:
    def act(n: int, seconds: float) -> None:
        person.clock.advance(seconds=seconds)
        if n == 1:
            person.approve()

    _sleeps(monkeypatch, person, act)


def test_login_approved_in_browser_saves_token_and_whoami_shows_it(
    luman: Luman, person: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    _approve_at_first_sleep(monkeypatch, person)

    result = luman("login")

    assert result.exit_code == OK, result.output
    assert person.slept == [INTERVAL]
    assert result.stdout == f"Logged in to {luman.api_url} as {person.email}.\n"
    started = person.started[0]
    for shown in (
        started.verification_uri,
        started.user_code,
        started.verification_uri_complete,
        "Only approve if you just ran `luman login` yourself.",
    ):
        assert shown in result.stderr
    assert stat.S_IMODE(luman.auth_file.stat().st_mode) == 0o600
    saved = json.loads(luman.auth_file.read_text())
    assert saved["token_name"].endswith(" (luman CLI)")
    assert saved["scopes"] == ["read", "write"]

    result = luman("whoami")
    assert result.exit_code == OK, result.output
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["Email"].strip() == person.email
    assert lines["Token"].strip() == saved["token_name"]
    assert lines["Scopes"].strip() == "read write"
    assert lines["Expires"].strip() == "never"

    me = json.loads(luman("--json", "whoami").stdout)
    assert me["cli_token"] == {
        "id": saved["token_id"],
        "name": saved["token_name"],
        "scopes": ["read", "write"],
        "expire_time": None,
    }


def test_login_polls_while_pending_then_gets_the_token(
    luman: Luman, person: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    def act(n: int, seconds: float) -> None:
        person.clock.advance(seconds=seconds)
        if n == 3:
            person.approve()

    _sleeps(monkeypatch, person, act)
    result = luman("login")
    assert result.exit_code == OK, result.output
    assert person.slept == [INTERVAL, INTERVAL, INTERVAL]


def test_login_honours_slow_down(
    luman: Luman, person: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first two sleeps move no time: the second poll comes 0 s after the first, and the
    # server answers SLOW_DOWN with a 5 s longer interval, which the CLI must wait from then on.
    def act(n: int, seconds: float) -> None:
        if n >= 3:
            person.clock.advance(seconds=seconds)
        if n == 3:
            person.approve()

    _sleeps(monkeypatch, person, act)
    result = luman("login")
    assert result.exit_code == OK, result.output
    assert person.slept == [INTERVAL, INTERVAL, INTERVAL + 5]


def test_login_denied_in_browser(
    luman: Luman, person: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    def act(n: int, seconds: float) -> None:
        person.clock.advance(seconds=seconds)
        person.deny()

    _sleeps(monkeypatch, person, act)
    result = luman("login")
    assert result.exit_code == ERROR  # the code of a refused request (PermissionDenied)
    assert "denied in the browser" in result.stderr
    assert not luman.auth_file.exists()

    result = luman("--json", "login")  # a new code; the JSON error names the reason
    assert result.exit_code == ERROR
    assert json.loads(result.stderr)["error"]["reason"] == "ACCESS_DENIED"


def test_login_code_expires(
    luman: Luman, person: Person, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    def act(n: int, seconds: float) -> None:
        person.clock.advance(seconds=settings.device_code_lifetime + 1)

    _sleeps(monkeypatch, person, act)
    result = luman("login")
    assert result.exit_code == ERROR
    assert "the code expired" in result.stderr
    assert "luman login" in result.stderr
    assert not luman.auth_file.exists()


def test_login_ctrl_c_while_waiting_is_cancelled(
    luman: Luman, person: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    def act(n: int, seconds: float) -> None:
        raise KeyboardInterrupt

    _sleeps(monkeypatch, person, act)
    result = luman("login")
    assert result.exit_code == CANCELLED
    assert result.stderr.endswith("Login cancelled.\n")
    assert result.stdout == ""
    assert not luman.auth_file.exists()


def test_login_json_prints_the_code_first_then_the_result(
    luman: Luman, person: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    _approve_at_first_sleep(monkeypatch, person)

    result = luman("--json", "login")

    assert result.exit_code == OK, result.output
    first, rest = result.stdout.split("\n", 1)
    started = person.started[0]
    assert json.loads(first) == {
        "verification_uri": started.verification_uri,
        "verification_uri_complete": started.verification_uri_complete,
        "user_code": started.user_code,
        "expires_in": started.expires_in,
        "interval": INTERVAL,
    }
    final = json.loads(rest)
    assert final["user"]["email"] == person.email
    assert final["token_name"].endswith(" (luman CLI)")
    assert final["scopes"] == ["read", "write"]
    assert "token" not in final  # the secret stays in the auth file


def test_device_login_replaces_and_revokes_a_password_login(
    luman: Luman, person: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = luman(
        "login", "--password", "--email", person.email, "--password-stdin", input=PASSWORD
    )
    assert result.exit_code == OK, result.output
    old_token = json.loads(luman.auth_file.read_text())["token"]
    _approve_at_first_sleep(monkeypatch, person)

    result = luman("login")

    assert result.exit_code == OK, result.output
    assert json.loads(luman.auth_file.read_text())["token"] != old_token
    assert refused_reason(person.auth, old_token) == "TOKEN_REVOKED"


def test_password_login_still_works(luman: Luman, person: Person) -> None:
    result = luman("login", "--password", input=f"{person.email}\n{PASSWORD}\n")
    assert result.exit_code == OK, result.output
    assert f"as {person.email}." in result.stdout
    assert person.started == []  # no device login was started

    # --email and --password-stdin imply --password (today's scripts keep working).
    result = luman("login", "--email", person.email, "--password-stdin", input=PASSWORD)
    assert result.exit_code == OK, result.output
    result = luman(
        "login", "--password", "--email", person.email, "--password-stdin", "--token-name", "ci",
        input=PASSWORD,
    )  # fmt: skip
    assert result.exit_code == OK, result.output
    assert luman("whoami").stdout.count("Token:   ci\n") == 1


def test_token_name_needs_password(luman: Luman) -> None:
    result = luman("login", "--token-name", "ci")
    assert result.exit_code == USAGE
    assert "--token-name works with --password" in result.stderr


class _FakeAuth:
    def __init__(self, answers: list[Exception | str]) -> None:
        self.answers = answers

    def poll_device_login(self, device_code: str, client_id: str) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_wait_for_token_keeps_polling_through_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(device_login, "sleep", slept.append)
    fake = type("FakeClient", (), {})()
    fake.auth = _FakeAuth(
        [
            Unavailable("down"),
            AuthorizationPending("pending"),
            SlowDown("slow", interval=9),
            Unavailable("down again"),
            "token",
        ]
    )
    started = DeviceAuthorization("lmd_x", "BCDF-GHJK", "u", "u?c", 600, 3)
    token = device_login.wait_for_token(cast(Client, fake), started, as_json=False)
    assert cast(object, token) == "token"
    assert slept == [3, 3, 3, 9, 9]


# The terminal, as a person sees it.


@pytest.fixture
def live_app(settings: Settings, sessions: Sessions, hasher: PasswordHasher) -> Iterator[App]:
    """The real server on the system clock, polled every second."""
    server = build_server(
        dataclasses.replace(settings, device_poll_interval=1),
        sessions,
        clock=system_clock,
        hasher=hasher,
    )
    server.start()
    yield server
    server.stop(None)


def _spawn(live_app: App, config_dir: Path, *args: str) -> pexpect.spawn[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMAN_")}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env["LUMAN_CONFIG_DIR"] = str(config_dir)
    return pexpect.spawn(
        sys.executable,
        ["-m", "luman.cli", "--api-url", f"127.0.0.1:{live_app.port}", *args],
        env=env,
        encoding="utf-8",
        timeout=TERMINAL_TIMEOUT,
        dimensions=(40, 120),
    )


def _read_code(child: pexpect.spawn[str]) -> str:
    child.expect("enter this code:")
    child.expect(CODE)
    match = child.match
    assert isinstance(match, re.Match)
    return str(match.group(0))


def test_terminal_login_as_a_person(live_app: App, tmp_path: Path) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{live_app.port}") as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        email = unique_email("ada")
        access_token = register(stub, email=email).tokens.access_token
        child = _spawn(live_app, tmp_path / ".luman", "login", "--no-browser")
        try:
            code = _read_code(child)
            child.expect("Only approve if you just ran `luman login` yourself.")
            stub.ApproveDeviceLogin(
                auth_service_pb2.ApproveDeviceLoginRequest(user_code=code),
                metadata=bearer(access_token),
            )
            child.expect(f"Logged in to 127.0.0.1:{live_app.port} as {re.escape(email)}")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == OK

        child = _spawn(live_app, tmp_path / ".luman", "whoami")
        try:
            child.expect(r"Token:\s+\S.* \(luman CLI\)")
            child.expect(r"Scopes:\s+read write")
            child.expect(r"Expires:\s+never")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == OK


def test_terminal_ctrl_c_cancels_the_login(live_app: App, tmp_path: Path) -> None:
    child = _spawn(live_app, tmp_path / ".luman", "login", "--no-browser")
    try:
        _read_code(child)
        child.expect("Waiting for approval")  # the spinner: stderr is a terminal
        child.sendintr()
        child.expect("Login cancelled.")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == CANCELLED
    assert not (tmp_path / ".luman" / "auth.json").exists()
