"""The typed client's device-login methods: each RFC 8628 poll answer is its own exception."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from luman.client import (
    CLI_CLIENT_ID,
    AccessDenied,
    AuthorizationPending,
    Client,
    ExpiredToken,
    FailedPrecondition,
    InvalidArgument,
    InvalidGrant,
    NotFound,
    RateLimited,
    SlowDown,
)
from luman.server.app import App
from tests.support import PASSWORD, FakeClock, unique_email


@pytest.fixture
def approver(app: App) -> Iterator[Client]:
    with Client(f"127.0.0.1:{app.port}") as c:
        c.token = c.auth.register(unique_email(), PASSWORD, "Ada").tokens.access_token
        yield c


@pytest.fixture
def device(app: App) -> Iterator[Client]:
    with Client(f"127.0.0.1:{app.port}") as c:
        yield c


def test_approved_login_is_claimed_once(device: Client, approver: Client, clock: FakeClock) -> None:
    started = device.auth.start_device_login(
        CLI_CLIENT_ID, host_name="ada-laptop", client_version="1.0", os="Linux 6"
    )
    assert started.device_code not in repr(started)
    with pytest.raises(AuthorizationPending) as pending:
        device.auth.poll_device_login(started.device_code, CLI_CLIENT_ID)
    assert isinstance(pending.value, FailedPrecondition)  # still the status's class

    shown = approver.auth.get_device_login(started.user_code)
    assert (shown.user_code, shown.host_name, shown.os) == (
        started.user_code,
        "ada-laptop",
        "Linux 6",
    )
    assert shown.scopes == ("read", "write")
    approver.auth.approve_device_login(started.user_code, scopes=["read"])
    clock.advance(seconds=started.interval)

    token = device.auth.poll_device_login(started.device_code, CLI_CLIENT_ID)
    assert token.token not in repr(token)
    assert token.scopes == ("read",)
    assert token.cli_token.name == "ada-laptop (luman CLI)"
    device.token = token.token
    assert device.auth.get_me().id == token.user.id

    clock.advance(seconds=started.interval)
    with pytest.raises(InvalidGrant):
        device.auth.poll_device_login(started.device_code, CLI_CLIENT_ID)


def test_slow_down_carries_the_new_interval(device: Client) -> None:
    started = device.auth.start_device_login(CLI_CLIENT_ID)
    with pytest.raises(AuthorizationPending):
        device.auth.poll_device_login(started.device_code, CLI_CLIENT_ID)
    with pytest.raises(SlowDown) as slow:  # the FakeClock stood still: 0 s since the last poll
        device.auth.poll_device_login(started.device_code, CLI_CLIENT_ID)
    assert slow.value.interval == started.interval + 5
    assert isinstance(slow.value, RateLimited)


def test_denied_expired_and_unknown(device: Client, approver: Client, clock: FakeClock) -> None:
    denied = device.auth.start_device_login(CLI_CLIENT_ID)
    approver.auth.deny_device_login(denied.user_code)
    with pytest.raises(AccessDenied):
        device.auth.poll_device_login(denied.device_code, CLI_CLIENT_ID)
    with pytest.raises(NotFound):
        approver.auth.get_device_login(denied.user_code)

    expired = device.auth.start_device_login(CLI_CLIENT_ID)
    clock.advance(seconds=expired.expires_in)
    with pytest.raises(ExpiredToken):
        device.auth.poll_device_login(expired.device_code, CLI_CLIENT_ID)

    with pytest.raises(InvalidArgument):
        device.auth.start_device_login("not-a-client")
