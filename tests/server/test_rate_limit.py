"""Rate limits through the real server and real channels, on SQLite and PostgreSQL.

The server's monotonic clock is derived from the test's FakeClock, so moving the clock moves
the windows: no sleeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import ConfigError, Settings
from luman.server.db.session import Sessions
from tests.support import PASSWORD, FakeClock, RichError, bearer, register, rich_error, unique_email

WINDOW_MS = 15 * 60 * 1000
Metadata = tuple[tuple[str, str], ...]


@dataclasses.dataclass
class Running:
    app: App
    auth: auth_service_pb2_grpc.AuthServiceStub
    channel: grpc.Channel


MakeApp = Callable[..., Running]


@pytest.fixture
def make_app(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[MakeApp]:
    """Start a server with the issue's real limits unless `changes` say otherwise."""
    with contextlib.ExitStack() as stack:

        def make(**changes: object) -> Running:
            limits: dict[str, object] = {
                "auth_rate_limit_max_requests": 5,
                "auth_rate_limit_window_ms": WINDOW_MS,
                "rate_limit_max_requests": 100,
                "rate_limit_window_ms": WINDOW_MS,
            }
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
            return Running(app, auth_service_pb2_grpc.AuthServiceStub(channel), channel)

        yield make


def _trailers(call: object) -> dict[str, str]:
    assert isinstance(call, grpc.Call)
    return {k: v for k, v in call.trailing_metadata() or () if isinstance(v, str)}


def _register(
    auth: auth_service_pb2_grpc.AuthServiceStub, metadata: Metadata = ()
) -> tuple[auth_service_pb2.RegisterResponse, dict[str, str]]:
    request = auth_service_pb2.RegisterRequest(
        email=unique_email(), password=PASSWORD, name="Rate Limited"
    )
    response, call = auth.Register.with_call(request, metadata=metadata)
    return response, _trailers(call)


def _rejected(
    call: Callable[..., object], *args: object, **kwargs: object
) -> tuple[RichError, dict[str, str]]:
    """Make the call, expect it to fail, return the error and its trailers."""
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return rich_error(caught.value), _trailers(caught.value)


def _login(
    auth: auth_service_pb2_grpc.AuthServiceStub, email: str, password: str, ip: str
) -> object:
    return auth.Login(
        auth_service_pb2.LoginRequest(email=email, password=password),
        metadata=(("x-forwarded-for", ip),),
    )


def test_auth_policy_admits_five_then_rejects_with_retry_info(make_app: MakeApp) -> None:
    auth = make_app().auth
    for remaining in range(4, -1, -1):
        _, trailers = _register(auth)
        assert trailers["x-ratelimit-limit"] == "5"
        assert trailers["x-ratelimit-remaining"] == str(remaining)
        assert trailers["x-ratelimit-reset"] == "900"
        assert "retry-after" not in trailers
    error, trailers = _rejected(_register, auth)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "RATE_LIMITED"
    assert error.domain == "luman.auth.v1"
    assert error.retry_delay_seconds == 900
    assert trailers["retry-after"] == "900"
    assert trailers["x-ratelimit-remaining"] == "0"
    assert trailers["x-ratelimit-limit"] == "5"


def test_auth_window_edge_is_exact(make_app: MakeApp, clock: FakeClock) -> None:
    auth = make_app().auth
    for _ in range(5):
        _register(auth)
    clock.advance(seconds=899, milliseconds=999)
    error, trailers = _rejected(_register, auth)
    assert error.retry_delay_seconds == pytest.approx(0.001)
    assert trailers["retry-after"] == "1"
    clock.advance(milliseconds=1)  # exactly one window after the first five
    for remaining in range(4, -1, -1):
        assert _register(auth)[1]["x-ratelimit-remaining"] == str(remaining)
    assert _rejected(_register, auth)[0].code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_default_policy_counts_per_user(make_app: MakeApp) -> None:
    auth = make_app(rate_limit_max_requests=3).auth
    first, second = register(auth), register(auth)
    for user in (first, second):
        token = bearer(user.tokens.access_token)
        for remaining in ("2", "1", "0"):
            _, call = auth.GetMe.with_call(auth_service_pb2.GetMeRequest(), metadata=token)
            assert _trailers(call)["x-ratelimit-remaining"] == remaining
        error, _ = _rejected(auth.GetMe, auth_service_pb2.GetMeRequest(), metadata=token)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_calls_without_a_valid_token_count_per_client_ip(make_app: MakeApp) -> None:
    auth = make_app(rate_limit_max_requests=3).auth
    user = register(auth)
    bad = (None, bearer("not-a-token"), bearer(user.tokens.access_token + "x"))
    for remaining, metadata in zip(("2", "1", "0"), bad, strict=True):
        error, trailers = _rejected(auth.GetMe, auth_service_pb2.GetMeRequest(), metadata=metadata)
        # The rate-limit trailers survive the error raised further in.
        assert error.code == grpc.StatusCode.UNAUTHENTICATED
        assert trailers["x-ratelimit-remaining"] == remaining
    error, _ = _rejected(auth.GetMe, auth_service_pb2.GetMeRequest())
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The user's own budget is untouched by anonymous calls from the same address.
    me = auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(user.tokens.access_token))
    assert me.user.id == user.user.id


def test_health_and_reflection_are_never_limited(make_app: MakeApp) -> None:
    running = make_app(rate_limit_max_requests=1, auth_rate_limit_max_requests=1)
    health = health_pb2_grpc.HealthStub(running.channel)
    for _ in range(10):
        response, call = health.Check.with_call(health_pb2.HealthCheckRequest())
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        assert "x-ratelimit-limit" not in _trailers(call)


def test_zero_disables_a_policy(make_app: MakeApp) -> None:
    auth = make_app(auth_rate_limit_max_requests=0).auth
    for _ in range(8):
        _, trailers = _register(auth)
        assert "x-ratelimit-limit" not in trailers


def test_forwarded_for_is_ignored_from_untrusted_peers(make_app: MakeApp) -> None:
    auth = make_app().auth
    for i in range(5):
        _register(auth, (("x-forwarded-for", f"198.51.100.{i}"),))
    error, _ = _rejected(_register, auth, (("x-forwarded-for", "198.51.100.99"),))
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_forwarded_for_is_honoured_from_trusted_proxies(make_app: MakeApp) -> None:
    auth = make_app(trusted_proxies=("127.0.0.1/32",)).auth
    for i in range(8):  # eight clients behind the proxy: eight budgets
        assert (
            _register(auth, (("x-forwarded-for", f"198.51.100.{i}"),))[1]["x-ratelimit-remaining"]
            == "4"
        )
    # Spoofing: whatever the client puts left of the proxy's own entry does not count.
    for i in range(4):
        _register(auth, (("x-forwarded-for", f"10.9.9.{i}, 198.51.100.0"),))
    spoofed = (("x-forwarded-for", "10.9.9.99, 198.51.100.0"),)
    assert _rejected(_register, auth, spoofed)[0].code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_failed_logins_count_per_account_across_source_ips(make_app: MakeApp) -> None:
    auth = make_app(trusted_proxies=("127.0.0.1/32",)).auth
    victim = unique_email()
    register(auth, email=victim)
    for i in range(5):  # five guesses, each from a fresh address
        error, _ = _rejected(_login, auth, victim, "wrong password", f"198.51.100.{i}")
        assert error.reason == "INVALID_CREDENTIALS"
    account_limited, trailers = _rejected(_login, auth, victim, "wrong password", "198.51.100.77")
    assert trailers["x-ratelimit-remaining"] == "0"
    assert trailers["retry-after"] == "900"
    # Identical to the per-IP answer.
    for _ in range(5):
        with contextlib.suppress(grpc.RpcError):
            _login(auth, unique_email(), "wrong password", "203.0.113.1")
    ip_limited, _ = _rejected(_login, auth, unique_email(), "whatever1", "203.0.113.1")
    assert (account_limited.code, account_limited.reason, account_limited.message) == (
        ip_limited.code,
        ip_limited.reason,
        ip_limited.message,
    )
    assert account_limited.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_an_unknown_account_is_limited_exactly_like_a_real_one(make_app: MakeApp) -> None:
    auth = make_app(trusted_proxies=("127.0.0.1/32",)).auth
    real, unknown = unique_email(), unique_email()
    register(auth, email=real)
    outcomes = []
    for subnet, email in enumerate((real, unknown)):
        seen = []
        for i in range(6):
            ip = f"198.51.{subnet}.{i}"
            error, trailers = _rejected(_login, auth, email, "wrong password", ip)
            seen.append((error.code, error.reason, trailers["x-ratelimit-remaining"]))
        outcomes.append(seen)
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][-1][0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_successful_logins_do_not_count_against_the_account(make_app: MakeApp) -> None:
    auth = make_app(trusted_proxies=("127.0.0.1/32",)).auth
    email = unique_email()
    register(auth, email=email)
    for i in range(10):
        _login(auth, email, PASSWORD, f"198.51.100.{i}")
    # Bad input is not a failed guess either.
    for i in range(10):
        error, _ = _rejected(_login, auth, email, "short", f"203.0.113.{i}")
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    _login(auth, email, PASSWORD, "192.0.2.1")


def test_the_account_limit_lifts_after_the_window(make_app: MakeApp, clock: FakeClock) -> None:
    auth = make_app(trusted_proxies=("127.0.0.1/32",)).auth
    email = unique_email()
    register(auth, email=email)
    for i in range(5):
        with contextlib.suppress(grpc.RpcError):
            _login(auth, email, "wrong password", f"198.51.100.{i}")
    error, _ = _rejected(_login, auth, email, PASSWORD, "198.51.100.50")
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    clock.advance(minutes=15)
    _login(auth, email, PASSWORD, "198.51.100.51")


def test_trusted_proxies_must_be_addresses_or_cidrs(tmp_path: Path) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path), "TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7 ,::1"}
    assert Settings.from_env(env).trusted_proxies == ("10.0.0.0/8", "192.0.2.7/32", "::1/128")
    env["TRUSTED_PROXIES"] = "10.0.0.0/8,proxy.internal"
    with pytest.raises(ConfigError, match=r"^TRUSTED_PROXIES .*'proxy\.internal'"):
        Settings.from_env(env)


def test_a_zero_window_is_accepted_and_disables_the_policy(
    tmp_path: Path, make_app: MakeApp
) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path), "AUTH_RATE_LIMIT_WINDOW_MS": "0"}
    assert Settings.from_env(env).auth_rate_limit_window_ms == 0
    auth = make_app(auth_rate_limit_window_ms=0).auth
    for _ in range(7):
        assert "x-ratelimit-limit" not in _register(auth)[1]
