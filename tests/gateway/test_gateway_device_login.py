"""Device login (RFC 8628) over HTTP: the JSON the CLI and the /device page see, with the
RFC's snake_case names; the two OAuth endpoints (code, token) take form bodies as standard
OAuth clients send them and answer errors as RFC 6749 section 5.2 does."""

from __future__ import annotations

import base64
import dataclasses
import re
from typing import Any

import httpx

from luman.client import token_format
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.gateway import GatewayServer, build_gateway
from tests.gateway.helpers import bearer, error_of, register
from tests.support import FakeClock

RFC_8628_KEYS = {
    "device_code",
    "user_code",
    "verification_uri",
    "verification_uri_complete",
    "expires_in",
    "interval",
}
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


def _start(http: httpx.Client, **fields: str) -> dict[str, Any]:
    response = http.post("/auth/device/code", json={"client_id": "luman-cli", **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _oauth_error(response: httpx.Response) -> tuple[int, str]:
    """(HTTP status, RFC 6749 `error`) of an OAuth endpoint's error answer."""
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error_description"]
    return response.status_code, body["error"]


def _poll(http: httpx.Client, device_code: str) -> httpx.Response:
    return http.post(
        "/auth/device/token",
        json={
            "device_code": device_code,
            "client_id": "luman-cli",
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        },
    )


def test_start_answers_with_exactly_the_rfc_fields(
    http: httpx.Client, gateway: GatewayServer
) -> None:
    body = _start(http)
    assert set(body) == RFC_8628_KEYS, body
    assert token_format.verify_checksum(body["device_code"], "lmd_")
    assert USER_CODE.match(body["user_code"])
    # PUBLIC_URL unset: the gateway's own address.
    assert body["verification_uri"] == f"http://127.0.0.1:{gateway.port}/device"
    assert body["verification_uri_complete"] == (
        f"http://127.0.0.1:{gateway.port}/device?user_code={body['user_code']}"
    )
    assert (body["expires_in"], body["interval"]) == (600, 5)


def test_start_refuses_bad_fields_as_invalid_request(http: httpx.Client) -> None:
    # RFC 6749 5.2's codes where the field has one: a client that is not allowed, a scope
    # that does not exist.
    refused = http.post("/auth/device/code", json={"client_id": "curl"})
    assert _oauth_error(refused) == (401, "invalid_client")
    assert "client_id" in refused.json()["error_description"]
    unknown = http.post("/auth/device/code", json={"client_id": "luman-cli", "scope": "x"})
    assert _oauth_error(unknown) == (400, "invalid_scope")
    assert "scope" in unknown.json()["error_description"]
    malformed = http.post("/auth/device/code", json={"client_id": "luman-cli", "os": "\u0007"})
    assert _oauth_error(malformed) == (400, "invalid_request")


def test_oauth_clients_post_forms(http: httpx.Client, clock: FakeClock) -> None:
    """RFC 8628 3.1 and 3.4: application/x-www-form-urlencoded, as OAuth libraries send."""
    started = http.post("/auth/device/code", data={"client_id": "luman-cli", "scope": "read"})
    assert started.status_code == 200, started.text
    body = started.json()
    assert set(body) == RFC_8628_KEYS
    access = register(http)["tokens"]["accessToken"]
    approved = http.post(
        f"/auth/device/logins/{body['user_code']}:approve", json={}, headers=bearer(access)
    )
    assert approved.status_code == 200, approved.text
    token = http.post(
        "/auth/device/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": body["device_code"],
            # RFC 6749 3.1: parameters the server does not know are ignored, and so are
            # empty ones (a public client sends an empty secret).
            "client_secret": "",
            "audience": "https://api.example.com",
            "client_id": "luman-cli",
        },
    )
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "read"
    # RFC 6749 2.3.1: the client id as HTTP Basic credentials (form-encoded id, no secret).
    basic = {"authorization": "Basic " + base64.b64encode(b"luman-cli:").decode()}
    by_basic = http.post("/auth/device/code", data={"scope": "read"}, headers=basic)
    assert by_basic.status_code == 200, by_basic.text
    pending = http.post(
        "/auth/device/token",
        data={"device_code": by_basic.json()["device_code"]},
        headers=basic,
    )
    assert _oauth_error(pending) == (400, "authorization_pending")
    # A parameter given twice is refused (RFC 6749 3.2), before any call.
    twice = http.post(
        "/auth/device/code",
        content=b"client_id=luman-cli&client_id=other",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert _oauth_error(twice) == (400, "invalid_request")
    # Forms only where the contract marks an OAuth endpoint: the JSON API stays JSON.
    form_login = http.post("/auth/login", data={"email": "a@example.com", "password": "x" * 8})
    assert error_of(form_login).http_status == 415


def test_verification_uri_is_under_public_url_when_set(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    configured = dataclasses.replace(settings, http_port=0, public_url="https://login.example.com")
    app = build_server(configured, sessions, clock=clock, hasher=hasher)
    app.start()
    gateway = build_gateway(configured, sessions, app)
    gateway.start()
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{gateway.port}", timeout=10.0, trust_env=False
        ) as http:
            body = _start(http)
            # People reach the page over TLS (PUBLIC_URL says so), even though no trusted proxy
            # vouches for it here: the cookies that carry credentials are Secure all the same.
            page = http.get("/device")
            assert all("; Secure" in value for value in page.headers.get_list("set-cookie"))
    finally:
        gateway.stop(None)
        app.stop(None)
    assert body["verification_uri"] == "https://login.example.com/device"
    assert body["verification_uri_complete"] == (
        f"https://login.example.com/device?user_code={body['user_code']}"
    )


def test_poll_look_approve_and_claim_over_http(http: httpx.Client, clock: FakeClock) -> None:
    registered = register(http)
    access = registered["tokens"]["accessToken"]
    started = _start(http, scope="read write", host_name="ci-7", os="linux")
    code = started["device_code"]

    assert _oauth_error(_poll(http, code)) == (400, "authorization_pending")
    fast = _poll(http, code)
    assert _oauth_error(fast) == (400, "slow_down")
    assert fast.headers["retry-after"] == "10"

    looked = http.get(f"/auth/device/logins/{started['user_code']}", headers=bearer(access))
    assert looked.status_code == 200, looked.text
    login = looked.json()["deviceLogin"]
    assert (login["hostName"], login["os"], login["clientIp"]) == ("ci-7", "linux", "127.0.0.1")
    assert login["scopes"] == ["read", "write"]

    lower = started["user_code"].lower().replace("-", "")
    approved = http.post(f"/auth/device/logins/{lower}:approve", json={}, headers=bearer(access))
    assert approved.status_code == 200, approved.text
    assert approved.json() == {}

    clock.advance(seconds=10)
    claimed = _poll(http, code)
    assert claimed.status_code == 200, claimed.text
    body = claimed.json()
    # The OAuth 2.0 token response's names (json_name); cli_token and user keep the API's
    # lowerCamelCase. No expires_in: the token does not expire (RFC 6749 5.1: optional).
    assert set(body) == {"access_token", "token_type", "scope", "cliToken", "user"}, body
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "read write"
    assert body["cliToken"]["name"] == "ci-7 (luman CLI)"
    assert body["user"]["id"] == registered["user"]["id"]
    me = http.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["user"]["id"] == registered["user"]["id"]

    clock.advance(seconds=10)
    assert _oauth_error(_poll(http, code)) == (400, "invalid_grant")


def test_deny_and_not_found_over_http(http: httpx.Client, clock: FakeClock) -> None:
    access = register(http)["tokens"]["accessToken"]
    started = _start(http)
    user_code = started["user_code"]
    assert error_of(http.get(f"/auth/device/logins/{user_code}")).http_status == 401
    denied = http.post(f"/auth/device/logins/{user_code}:deny", json={}, headers=bearer(access))
    assert denied.status_code == 200, denied.text
    assert _oauth_error(_poll(http, started["device_code"])) == (400, "access_denied")
    gone = error_of(http.get(f"/auth/device/logins/{user_code}", headers=bearer(access)))
    assert (gone.http_status, gone.reason) == (404, "DEVICE_CODE_NOT_FOUND")
    waiting = _start(http)["device_code"]
    clock.advance(seconds=600)
    assert _oauth_error(_poll(http, waiting)) == (400, "expired_token")
    malformed = error_of(http.get("/auth/device/logins/AEIO-UAEI", headers=bearer(access)))
    assert (malformed.http_status, list(malformed.field_violations)) == (400, ["user_code"])
