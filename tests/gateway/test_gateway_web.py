"""The seed's web-security promises: Helmet's headers and CORS from CORS_ORIGIN."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import httpx
import pytest

from luman.server.app import App
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.gateway import build_gateway
from tests.gateway.conftest import ALLOWED_ORIGIN
from tests.gateway.helpers import access_token, bearer

HELMET = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "x-dns-prefetch-control": "off",
    "x-permitted-cross-domain-policies": "none",
    "cache-control": "no-store",
}


def _assert_helmet(response: httpx.Response) -> None:
    for name, value in HELMET.items():
        assert response.headers.get(name) == value, (name, response.request.url)
    assert "Origin" in response.headers.get("vary", "")
    assert "server" not in response.headers  # no product banner


def test_security_headers_on_success_error_and_builtin_responses(http: httpx.Client) -> None:
    token = access_token(http)
    for response in (
        http.get("/auth/me", headers=bearer(token)),
        http.get("/auth/me"),
        http.post("/auth/login", content=b"{", headers={"content-type": "application/json"}),
        http.get("/nope"),
        http.get("/healthz"),
        http.get("/openapi.json"),
        http.options("/auth/me"),
    ):
        _assert_helmet(response)
        # Plain HTTP straight from the client: HSTS would be wrong here.
        assert "strict-transport-security" not in response.headers


def test_preflight_from_an_allowed_origin(http: httpx.Client) -> None:
    response = http.options(
        "/organizations/acme/members/u1",
        headers={
            "origin": ALLOWED_ORIGIN,
            "access-control-request-method": "PATCH",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert response.headers["access-control-allow-methods"] == "DELETE, PATCH, OPTIONS"
    allowed_headers = response.headers["access-control-allow-headers"]
    assert {h.strip() for h in allowed_headers.split(",")} >= {"authorization", "content-type"}
    assert int(response.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in response.headers
    _assert_helmet(response)


def test_preflight_from_another_origin_gets_no_cors_headers(http: httpx.Client) -> None:
    response = http.options(
        "/auth/login",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert response.status_code == 204
    assert not [h for h in response.headers if h.startswith("access-control-")]
    assert "Origin" in response.headers["vary"]


def test_preflight_for_an_unknown_path_is_404(http: httpx.Client) -> None:
    response = http.options(
        "/nope", headers={"origin": ALLOWED_ORIGIN, "access-control-request-method": "GET"}
    )
    assert response.status_code == 404


def test_actual_request_from_an_allowed_origin_may_read_rate_limit_headers(
    http: httpx.Client,
) -> None:
    token = access_token(http)
    response = http.get("/auth/me", headers={**bearer(token), "origin": ALLOWED_ORIGIN})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"x-ratelimit-remaining", "retry-after"} <= exposed
    # Errors are readable cross-origin too, so the web client can show them.
    denied = http.get("/auth/me", headers={"origin": "https://admin.example.com"})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "https://admin.example.com"


def test_actual_request_from_another_origin_gets_no_cors_headers(http: httpx.Client) -> None:
    response = http.get("/healthz", headers={"origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.fixture
def any_origin_http(settings: Settings, sessions: Sessions, app: App) -> Iterator[httpx.Client]:
    config = dataclasses.replace(settings, http_port=0, cors_origin="*")
    gateway = build_gateway(config, sessions, app)
    gateway.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", trust_env=False) as client:
        yield client
    gateway.stop(None)


def test_cors_origin_star_allows_any_origin(any_origin_http: httpx.Client) -> None:
    preflight = any_origin_http.options(
        "/auth/me",
        headers={"origin": "https://anywhere.example", "access-control-request-method": "GET"},
    )
    assert preflight.headers["access-control-allow-origin"] == "*"
    actual = any_origin_http.get("/healthz", headers={"origin": "https://anywhere.example"})
    assert actual.headers["access-control-allow-origin"] == "*"
