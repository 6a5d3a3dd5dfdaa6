"""Both doors share one interceptor chain: rate limiting and request logging see HTTP calls
as they see gRPC calls, with the HTTP client's own address and user agent."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
import sqlalchemy as sa

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App
from luman.server.config import Settings
from luman.server.db.models import RequestLog
from luman.server.db.session import Sessions
from luman.server.gateway import build_gateway
from tests.gateway.helpers import bearer, error_of, register
from tests.support import PASSWORD, rich_error, unique_email

AUTH_LIMIT = 3
PROXY_CLIENT = "203.0.113.5"
OTHER_CLIENT = "198.51.100.7"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A real auth limit, and the test client (127.0.0.1) as a trusted proxy."""
    return dataclasses.replace(
        settings, auth_rate_limit_max_requests=AUTH_LIMIT, trusted_proxies=("127.0.0.1/32",)
    )


def _login(http: httpx.Client, **headers: str) -> httpx.Response:
    return http.post(
        "/auth/login", json={"email": unique_email(), "password": PASSWORD}, headers=headers
    )


def _grpc_login(auth: auth_service_pb2_grpc.AuthServiceStub) -> grpc.StatusCode:
    try:
        auth.Login(auth_service_pb2.LoginRequest(email=unique_email(), password=PASSWORD))
    except grpc.RpcError as exc:
        return rich_error(exc).code
    return grpc.StatusCode.OK


def test_both_doors_count_in_one_bucket_per_client(
    http: httpx.Client, auth: auth_service_pb2_grpc.AuthServiceStub
) -> None:
    first = _login(http)
    assert first.status_code == 401
    assert first.headers["x-ratelimit-limit"] == str(AUTH_LIMIT)
    assert first.headers["x-ratelimit-remaining"] == str(AUTH_LIMIT - 1)
    assert int(first.headers["x-ratelimit-reset"]) > 0
    assert _grpc_login(auth) == grpc.StatusCode.UNAUTHENTICATED
    assert _login(http).headers["x-ratelimit-remaining"] == "0"

    limited = _login(http)
    error = error_of(limited)
    assert (error.http_status, error.code, error.reason) == (429, 8, "RATE_LIMITED")
    assert error.retry_delay is not None
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-remaining"] == "0"
    # ...and the gRPC door is closed for this client too.
    assert _grpc_login(auth) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_trusted_proxy_clients_get_their_own_buckets(http: httpx.Client) -> None:
    for _ in range(AUTH_LIMIT):
        assert _login(http, **{"x-forwarded-for": PROXY_CLIENT}).status_code == 401
    assert _login(http, **{"x-forwarded-for": PROXY_CLIENT}).status_code == 429
    # A left-most entry is whatever the client claimed; the proxy vouches only for the last.
    assert _login(http, **{"x-forwarded-for": f"{OTHER_CLIENT}, {PROXY_CLIENT}"}).status_code == 429
    # Two X-Forwarded-For headers are one list, in order.
    two_headers = http.post(
        "/auth/login",
        json={"email": unique_email(), "password": PASSWORD},
        headers=[("x-forwarded-for", OTHER_CLIENT), ("x-forwarded-for", PROXY_CLIENT)],
    )
    assert two_headers.status_code == 429
    assert _login(http, **{"x-forwarded-for": OTHER_CLIENT}).status_code == 401
    assert _login(http).status_code == 401  # 127.0.0.1 itself


@pytest.fixture
def untrusting_http(settings: Settings, sessions: Sessions, app: App) -> Iterator[httpx.Client]:
    """A gateway with no trusted proxies in front of the same server."""
    config = dataclasses.replace(settings, http_port=0, trusted_proxies=())
    gateway = build_gateway(config, sessions, app)
    gateway.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", trust_env=False) as client:
        yield client
    gateway.stop(None)


def test_forwarded_for_from_an_untrusted_peer_is_ignored(untrusting_http: httpx.Client) -> None:
    for index in range(AUTH_LIMIT):
        response = _login(untrusting_http, **{"x-forwarded-for": f"192.0.2.{index + 1}"})
        assert response.status_code == 401
    spoofed = _login(untrusting_http, **{"x-forwarded-for": "192.0.2.99"})
    assert spoofed.status_code == 429


def _log_rows(app: App, sessions: Sessions) -> list[RequestLog]:
    assert app.request_log is not None
    assert app.request_log.flush(timeout=30)
    with sessions.read() as session:
        return list(session.scalars(sa.select(RequestLog).order_by(RequestLog.id)))


def test_http_calls_are_in_the_request_log_with_the_http_client(
    http: httpx.Client, app: App, sessions: Sessions
) -> None:
    token = register(http)["tokens"]["accessToken"]
    user = http.get("/auth/me", headers={**bearer(token), "user-agent": "curl/8.5.0"}).json()
    http.get("/auth/me", headers={"user-agent": "curl/8.5.0", "x-forwarded-for": PROXY_CLIENT})
    for _ in range(AUTH_LIMIT):
        _login(http)

    rows = _log_rows(app, sessions)
    me_ok, me_denied = [r for r in rows if r.method.endswith("/GetMe")]
    assert me_ok.status == "OK"
    assert me_ok.user_id == uuid.UUID(user["user"]["id"])
    assert (me_ok.client_ip, me_ok.user_agent) == ("127.0.0.1", "curl/8.5.0")
    assert me_denied.status == "UNAUTHENTICATED"
    assert (me_denied.client_ip, me_denied.user_id) == (PROXY_CLIENT, None)
    statuses = [r.status for r in rows if r.method.endswith("/Login")]
    # Register counted in the same bucket: two failed logins, then the limit.
    assert statuses == ["UNAUTHENTICATED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED"]
    assert all(token not in (r.user_agent or "") for r in rows)


def test_hsts_only_behind_a_trusted_tls_proxy(
    http: httpx.Client, untrusting_http: httpx.Client
) -> None:
    behind_tls = http.get("/healthz", headers={"x-forwarded-proto": "https"})
    assert behind_tls.headers["strict-transport-security"].startswith("max-age=")
    assert "strict-transport-security" not in http.get("/healthz").headers
    spoofed = untrusting_http.get("/healthz", headers={"x-forwarded-proto": "https"})
    assert "strict-transport-security" not in spoofed.headers
