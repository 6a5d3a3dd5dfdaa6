"""Requests that used to break the request path, through the real server: undecodable bytes, a
validly signed token with an absurd expiry, IPv6 clients rotating through their /64, and
sign-ins that the server shed or that are still in flight when a limit is reached."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import grpc
import jwt
import pytest
import sqlalchemy as sa

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.support import (
    PASSWORD,
    FakeClock,
    GatedHasher,
    bearer,
    register,
    rich_error,
    unique_email,
)

WAIT = 10.0  # seconds: only a broken test waits this long
LOGIN = "/luman.auth.v1.AuthService/Login"
GET_ME = "/luman.auth.v1.AuthService/GetMe"


@dataclasses.dataclass
class Running:
    app: App
    channel: grpc.Channel
    engine: sa.Engine

    @property
    def auth(self) -> auth_service_pb2_grpc.AuthServiceStub:
        return auth_service_pb2_grpc.AuthServiceStub(self.channel)

    def raw(self, method: str) -> Callable[..., tuple[bytes, grpc.Call]]:
        """A unary call that sends the bytes it is given, as they are."""
        multi = self.channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        return multi.with_call

    def log_rows(self, method: str) -> list[tuple[str, str]]:
        """(status, client_ip) of the request-log rows of `method`, oldest first."""
        assert self.app.request_log is not None
        assert self.app.request_log.flush(WAIT)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT status, client_ip FROM request_logs WHERE method = :m ORDER BY id"),
                {"m": method},
            ).all()
        return [(row[0], row[1]) for row in rows]


MakeServer = Callable[..., Running]


@pytest.fixture
def make_server(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[MakeServer]:
    with contextlib.ExitStack() as stack:

        def make(server_hasher: PasswordHasher | None = None, **changes: object) -> Running:
            app = build_server(
                dataclasses.replace(settings, **changes),  # type: ignore[arg-type]
                sessions,
                clock=clock,
                hasher=server_hasher or hasher,
                monotonic=lambda: clock().timestamp(),
            )
            app.start()
            stack.callback(app.stop, None)
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{app.port}"))
            return Running(app, channel, sessions.engine)

        yield make


def _trailers(call: grpc.Call) -> dict[str, str]:
    return {k: v for k, v in call.trailing_metadata() or () if isinstance(v, str)}


# Field 1 (email) of LoginRequest with bytes that are not UTF-8, and bytes that are no message.
INVALID_UTF8 = b"\x0a\x02\xff\xfe"
GARBAGE = b"\xff\xff\xff\xff"


@pytest.mark.parametrize("body", [GARBAGE, INVALID_UTF8], ids=["garbage", "invalid-utf8"])
def test_an_undecodable_request_is_invalid_argument_logged_and_counted(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    server = make_server(auth_rate_limit_max_requests=2)
    login = server.raw(LOGIN)
    caplog.set_level(logging.WARNING)
    for remaining in ("1", "0"):
        with pytest.raises(grpc.RpcError) as caught:
            login(body, timeout=WAIT)
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == "MALFORMED_REQUEST"
        assert "request" in error.field_violations
        assert _trailers(caught.value)["x-ratelimit-remaining"] == remaining  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as caught:
        login(body, timeout=WAIT)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    rows = server.log_rows(LOGIN)
    assert [status for status, _ in rows] == [
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "RESOURCE_EXHAUSTED",
    ]
    assert all(ip == "127.0.0.1" for _, ip in rows)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # At most one rate-limited warning, however many arrive (the throttle is per process).
    assert len([r for r in caplog.records if "undecodable" in r.getMessage()]) <= 1


def test_an_undecodable_request_to_an_authenticated_rpc_is_refused_before_its_token(
    make_server: MakeServer,
) -> None:
    server = make_server()
    token = register(server.auth).tokens.access_token
    for metadata in ((), bearer(token), bearer("not-a-token")):
        with pytest.raises(grpc.RpcError) as caught:
            server.raw(GET_ME)(GARBAGE, metadata=metadata, timeout=WAIT)
        assert rich_error(caught.value).reason == "MALFORMED_REQUEST"
    # A well-formed call right after still works.
    assert server.auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(token)).user.email


@pytest.mark.parametrize("exp", [1e20, 2**70], ids=["float", "int"])
def test_a_validly_signed_token_with_an_absurd_expiry_is_unauthenticated(
    make_server: MakeServer, settings: Settings, clock: FakeClock, exp: float
) -> None:
    server = make_server()
    signed_up = register(server.auth)
    assert server.app.keys is not None
    key = server.app.keys.signing_key()  # signed as the server signs: only exp is absurd
    real = jwt.decode(
        signed_up.tokens.access_token,
        key.public_key,
        algorithms=[key.algorithm],
        audience=settings.jwt_audience,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert key.private_key is not None
    forged = jwt.encode(
        {**real, "exp": exp}, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid}
    )
    with pytest.raises(grpc.RpcError) as caught:
        server.auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(forged))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "TOKEN_INVALID"


def _register_from(
    auth: auth_service_pb2_grpc.AuthServiceStub, address: str
) -> tuple[grpc.StatusCode, dict[str, str]]:
    request = auth_service_pb2.RegisterRequest(email=unique_email(), password=PASSWORD, name="V6")
    try:
        _, call = auth.Register.with_call(
            request, metadata=(("x-forwarded-for", address),), timeout=WAIT
        )
    except grpc.RpcError as exc:
        return exc.code(), _trailers(exc)  # type: ignore[arg-type]
    return grpc.StatusCode.OK, _trailers(call)


def test_ipv6_clients_are_counted_per_64_and_ipv4_per_address(make_server: MakeServer) -> None:
    server = make_server(auth_rate_limit_max_requests=2, trusted_proxies=("127.0.0.1",))
    same_64 = ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2:a::b")
    outcomes = [_register_from(server.auth, address) for address in same_64]
    assert [code for code, _ in outcomes] == [
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ]
    assert _register_from(server.auth, "2001:db8:1:3::1")[0] == grpc.StatusCode.OK
    # IPv4: neighbouring addresses have budgets of their own.
    for address in ("192.0.2.1", "192.0.2.2"):
        assert _register_from(server.auth, address)[1]["x-ratelimit-remaining"] == "1"
    # The request log keeps the full address; only the limiter groups them.
    ips = [ip for _, ip in server.log_rows("/luman.auth.v1.AuthService/Register")]
    assert ips[:3] == ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2:a::b"]


def test_the_ipv6_prefix_is_configurable(make_server: MakeServer) -> None:
    server = make_server(
        auth_rate_limit_max_requests=1,
        trusted_proxies=("127.0.0.1",),
        rate_limit_ipv6_prefix=128,
    )
    for address in ("2001:db8::1", "2001:db8::2"):
        assert _register_from(server.auth, address)[0] == grpc.StatusCode.OK


@pytest.fixture
def gated() -> Iterator[GatedHasher]:
    hasher = GatedHasher(4, max_concurrency=1, max_waiting=1)
    yield hasher
    hasher.gate.set()
    hasher.close()


def _login(
    auth: auth_service_pb2_grpc.AuthServiceStub, email: str
) -> Future[auth_service_pb2.LoginResponse]:
    request = auth_service_pb2.LoginRequest(email=email, password=PASSWORD)
    return auth.Login.future(request, timeout=WAIT)  # type: ignore[return-value]


def _fill_the_hasher(
    server: Running, gated: GatedHasher, email: str
) -> tuple[Future[auth_service_pb2.LoginResponse], Future[auth_service_pb2.LoginResponse]]:
    """Register `email` (one sign-in call), then start two Logins: one holds the only hash
    slot, the other is the one caller allowed to wait (two more). Both stay in flight until
    the test opens the gate."""
    register(server.auth, email=email)
    assert gated.inside.acquire(timeout=WAIT)
    gated.gate.clear()
    holding = _login(server.auth, email)
    assert gated.inside.acquire(timeout=WAIT)
    waiting = _login(server.auth, email)
    assert gated.wait_for_waiting(1, WAIT)
    return holding, waiting


def test_sign_ins_turned_away_as_server_busy_do_not_use_up_the_budget(
    make_server: MakeServer, gated: GatedHasher
) -> None:
    server = make_server(gated, auth_rate_limit_max_requests=5)
    email = unique_email()
    holding, waiting = _fill_the_hasher(server, gated, email)  # 3 of 5 counted

    for _ in range(6):  # more than the whole budget, all shed
        with pytest.raises(grpc.RpcError) as caught:
            _login(server.auth, email).result()
        assert rich_error(caught.value).reason == "SERVER_BUSY"

    gated.gate.set()
    holding.result()
    waiting.result()
    _, call = server.auth.Login.with_call(
        auth_service_pb2.LoginRequest(email=email, password=PASSWORD), timeout=WAIT
    )
    assert _trailers(call)["x-ratelimit-remaining"] == "1"  # 4 of 5: the shed ones gave back


def test_a_refusal_caused_by_attempts_in_flight_says_retry_in_a_second(
    make_server: MakeServer, gated: GatedHasher
) -> None:
    server = make_server(gated, auth_rate_limit_max_requests=3)
    email = unique_email()
    holding, waiting = _fill_the_hasher(server, gated, email)  # 3 of 3 counted, 2 in flight

    with pytest.raises(grpc.RpcError) as caught:
        _login(server.auth, email).result()
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "RATE_LIMITED"
    assert error.retry_delay_seconds == 1
    assert _trailers(caught.value)["retry-after"] == "1"  # type: ignore[arg-type]

    gated.gate.set()
    holding.result()
    waiting.result()
    # Both attempts completed and stay counted: now the answer is the whole window.
    with pytest.raises(grpc.RpcError) as caught:
        _login(server.auth, email).result()
    assert rich_error(caught.value).retry_delay_seconds == 900
