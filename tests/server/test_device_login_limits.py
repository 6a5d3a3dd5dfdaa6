"""Device login's limits through the real server, on SQLite and PostgreSQL: starts and polls per
client IP (their own rate-limit policies), and the budgets of wrong user codes per client IP and
for the whole server (DEVICE_CODE_ATTEMPTS_*).

The server's monotonic clock is derived from the test's FakeClock, as in test_rate_limit.py, so
moving the clock moves the windows: no sleeps. Client addresses are set with x-forwarded-for
from a trusted 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator

import grpc
import pytest

from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.server.device_login_support import (
    Metadata,
    Stub,
    approve,
    deny,
    failure,
    get,
    personal_token,
    poll,
    poll_failure,
    start,
)
from tests.support import FakeClock, register, rich_error

Code = grpc.StatusCode
WINDOW_MS = 15 * 60 * 1000


@dataclasses.dataclass(frozen=True)
class Served:
    auth: Stub
    port: int


MakeAuth = Callable[..., Served]


@pytest.fixture
def make_auth(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[MakeAuth]:
    """Start a server with `changes` to the settings."""
    with contextlib.ExitStack() as stack:

        def make(**changes: object) -> Served:
            limits: dict[str, object] = {"trusted_proxies": ("127.0.0.1/32",)}
            limits.update(changes)
            app = build_server(
                dataclasses.replace(settings, **limits),  # type: ignore[arg-type]
                sessions,
                clock=clock,
                hasher=hasher,
                monotonic=lambda: clock().timestamp(),
            )
            app.start()
            stack.callback(app.stop, None)
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{app.port}"))
            return Served(Stub(channel), app.port)

        yield make


def _from(ip: str) -> Metadata:
    return (("x-forwarded-for", ip),)


def test_starts_are_limited_per_client_ip(make_auth: MakeAuth, clock: FakeClock) -> None:
    auth = make_auth(device_start_rate_limit_max_requests=3).auth
    for _ in range(3):
        start(auth, metadata=_from("198.51.100.1"))
    refused = failure(lambda: start(auth, metadata=_from("198.51.100.1")))
    assert (refused.error.code, refused.error.reason) == (Code.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert refused.error.retry_delay_seconds == 900
    assert refused.trailers["retry-after"] == "900"
    assert refused.trailers["x-ratelimit-limit"] == "3"
    # Another address has a budget of its own; the first gets its back with the window.
    start(auth, metadata=_from("198.51.100.2"))
    clock.advance(minutes=15)
    start(auth, metadata=_from("198.51.100.1"))


def test_start_policy_is_its_own(make_auth: MakeAuth) -> None:
    # Starts spend neither the default policy's budget nor the sign-in (auth) policy's.
    auth = make_auth(
        device_start_rate_limit_max_requests=5,
        rate_limit_max_requests=2,
        auth_rate_limit_max_requests=2,
    ).auth
    for _ in range(5):
        start(auth)
    register(auth)
    register(auth)


def test_polls_are_limited_per_client_ip(make_auth: MakeAuth, clock: FakeClock) -> None:
    auth = make_auth(device_poll_rate_limit_max_requests=3).auth
    code = start(auth).device_code
    for _ in range(3):
        assert poll_failure(auth, code).error.reason == "AUTHORIZATION_PENDING"
        clock.advance(seconds=5)
    refused = failure(lambda: poll(auth, code, metadata=_from("127.0.0.1")))
    assert (refused.error.code, refused.error.reason) == (Code.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert refused.trailers["x-ratelimit-limit"] == "3"
    # A terminal behind another address still polls.
    other = failure(lambda: poll(auth, code, metadata=_from("198.51.100.7")))
    assert other.error.reason == "AUTHORIZATION_PENDING"


def test_wrong_codes_are_limited_per_client_ip(make_auth: MakeAuth, clock: FakeClock) -> None:
    auth = make_auth(device_code_attempts_per_ip=3, device_code_lifetime=3600.0).auth
    _, access = personal_token(auth, register(auth).tokens.access_token)
    guesser, neighbour = _from("203.0.113.5"), _from("203.0.113.6")
    login = start(auth)
    right = login.user_code
    # A right code does not count, however often.
    for _ in range(5):
        assert get(auth, access, right, guesser).device_login.user_code == right
    for wrong in ("BBBB-BBBB", "CCCC-CCCC", "DDDD-DDDD"):
        got = failure(lambda w=wrong: get(auth, access, w, guesser))  # type: ignore[misc]
        assert got.error.reason == "DEVICE_CODE_NOT_FOUND"
    # The fourth entry, even of the right code, is refused; approving too.
    for call in (
        lambda: get(auth, access, right, guesser),
        lambda: approve(auth, access, right, metadata=guesser),
    ):
        refused = failure(call)
        assert (refused.error.code, refused.error.reason) == (
            Code.RESOURCE_EXHAUSTED,
            "TOO_MANY_CODE_ATTEMPTS",
        )
        assert refused.error.retry_delay_seconds == pytest.approx(900)
    # Another address is not held up.
    assert get(auth, access, right, neighbour).device_login.user_code == right
    # The window moves on: code entry comes back.
    clock.advance(minutes=15)
    approve(auth, access, right, metadata=guesser)
    assert poll(auth, login.device_code).scope == "read write"


def test_only_wrong_codes_count(make_auth: MakeAuth) -> None:
    auth = make_auth(device_code_attempts_per_ip=1).auth
    access = register(auth).tokens.access_token
    login = start(auth, scope="read")
    for _ in range(3):
        malformed = failure(lambda: get(auth, access, "AEIO-UAEI"))
        assert malformed.error.code == Code.INVALID_ARGUMENT
        # A right code refused for another reason is no wrong code either.
        widened = failure(lambda: approve(auth, access, login.user_code, ("read", "write")))
        assert widened.error.code == Code.INVALID_ARGUMENT
    assert failure(lambda: get(auth, access, "BBBB-BBBB")).error.reason == "DEVICE_CODE_NOT_FOUND"
    got = failure(lambda: get(auth, access, login.user_code))
    assert got.error.reason == "TOO_MANY_CODE_ATTEMPTS"


def test_wrong_codes_spend_the_global_budget(make_auth: MakeAuth, clock: FakeClock) -> None:
    auth = make_auth(
        device_code_attempts_per_ip=100, device_code_attempts_global=3, device_code_lifetime=3600.0
    ).auth
    _, access = personal_token(auth, register(auth).tokens.access_token)
    login = start(auth)
    wrong = "BBBB-BBBB"
    for call in (
        lambda: get(auth, access, wrong, _from("198.51.100.1")),
        lambda: approve(auth, access, wrong, metadata=_from("198.51.100.2")),
        lambda: deny(auth, access, wrong, _from("198.51.100.3")),
    ):
        assert failure(call).error.reason == "DEVICE_CODE_NOT_FOUND"
    # The guessing account is refused from any address now, the right code too.
    refused = failure(lambda: get(auth, access, login.user_code, _from("192.0.2.77")))
    assert (refused.error.code, refused.error.reason) == (
        Code.RESOURCE_EXHAUSTED,
        "TOO_MANY_CODE_ATTEMPTS",
    )
    assert refused.error.retry_delay_seconds == pytest.approx(900)
    # So is another account on an address that guessed.
    _, other = personal_token(auth, register(auth).tokens.access_token)
    refused = failure(lambda: get(auth, access, login.user_code, _from("198.51.100.1")))
    assert refused.error.reason == "TOO_MANY_CODE_ATTEMPTS"
    # A person with no wrong code in the window still gets in: spending the server's budget
    # does not lock everybody out. Their first wrong code, though, is their last.
    assert get(auth, other, login.user_code, _from("192.0.2.88")).device_login.user_code
    newcomer = _from("192.0.2.99")
    _, third = personal_token(auth, register(auth).tokens.access_token)
    assert failure(lambda: get(auth, third, wrong, newcomer)).error.reason == (
        "DEVICE_CODE_NOT_FOUND"
    )
    assert failure(lambda: get(auth, third, login.user_code, newcomer)).error.reason == (
        "TOO_MANY_CODE_ATTEMPTS"
    )
    clock.advance(minutes=14, seconds=59)
    refused = failure(lambda: get(auth, access, login.user_code, _from("192.0.2.77")))
    assert refused.error.retry_delay_seconds == pytest.approx(1)
    clock.advance(seconds=1)
    assert get(auth, access, login.user_code, _from("192.0.2.77")).device_login.user_code


def test_wrong_codes_are_limited_per_account(make_auth: MakeAuth) -> None:
    auth = make_auth(device_code_attempts_per_account=2, device_code_lifetime=3600.0).auth
    _, access = personal_token(auth, register(auth).tokens.access_token)
    login = start(auth)
    for address in ("198.51.100.1", "198.51.100.2"):
        got = failure(lambda a=address: get(auth, access, "BBBB-BBBB", _from(a)))  # type: ignore[misc]
        assert got.error.reason == "DEVICE_CODE_NOT_FOUND"
    # A third address does not help the same account.
    refused = failure(lambda: get(auth, access, login.user_code, _from("198.51.100.3")))
    assert refused.error.reason == "TOO_MANY_CODE_ATTEMPTS"
    # Another account on that address is not held up.
    _, other = personal_token(auth, register(auth).tokens.access_token)
    assert get(auth, other, login.user_code, _from("198.51.100.3")).device_login.user_code


def test_zero_disables_a_budget(make_auth: MakeAuth) -> None:
    auth = make_auth(
        device_code_attempts_per_ip=0,
        device_code_attempts_per_account=0,
        device_code_attempts_global=0,
    ).auth
    access = register(auth).tokens.access_token
    for _ in range(12):
        got = failure(lambda: get(auth, access, "BBBB-BBBB"))
        assert got.error.reason == "DEVICE_CODE_NOT_FOUND"


def test_concurrent_wrong_codes_cannot_overdraw_the_budget(make_auth: MakeAuth) -> None:
    served = make_auth(device_code_attempts_per_ip=3)
    auth = served.auth
    _, access = personal_token(auth, register(auth).tokens.access_token)
    racers = 12
    barrier = threading.Barrier(racers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stub = Stub(channel)
            grpc.channel_ready_future(channel).result(timeout=10)
            barrier.wait(timeout=10)
            try:
                get(stub, access, "BBBB-BBB" + "BCDFGHJKLMNP"[n])
                outcome = "found"
            except grpc.RpcError as exc:
                outcome = rich_error(exc).reason
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # However the guesses interleave, the budget admits exactly three.
    assert sorted(outcomes) == ["DEVICE_CODE_NOT_FOUND"] * 3 + ["TOO_MANY_CODE_ATTEMPTS"] * 9
