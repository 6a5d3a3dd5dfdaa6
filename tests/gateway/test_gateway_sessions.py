"""Sessions over HTTP: GET /auth/sessions, DELETE /auth/sessions/{session_id}, POST
/auth/logout-all, through the gateway and the real gRPC chain on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.gateway.helpers import bearer, error_of, register
from tests.support import FakeClock


def test_list_revoke_and_logout_all_over_http(http: httpx.Client, clock: FakeClock) -> None:
    email = f"sessions-{uuid.uuid4().hex[:8]}@example.com"
    first = register(http, email=email, **{"user-agent": "Browser/1.0"})["tokens"]
    clock.advance(seconds=1)  # oldest first: the register session, then the login one
    second = http.post("/auth/login", json={"email": email, "password": "correct horse battery"})
    assert second.status_code == 200
    other = second.json()["tokens"]

    listed = http.get("/auth/sessions", headers=bearer(first["accessToken"]))
    assert listed.status_code == 200
    sessions = listed.json()["sessions"]
    assert [s["current"] for s in sessions] == [True, False]
    assert sessions[0]["clientIp"] == "127.0.0.1"
    assert sessions[0]["userAgent"] == "Browser/1.0"
    assert "lastRefreshTime" not in sessions[0]

    # A revoked session's tokens fail on their next call.
    revoked = http.delete(
        f"/auth/sessions/{sessions[1]['id']}", headers=bearer(first["accessToken"])
    )
    assert (revoked.status_code, revoked.json()) == (200, {})
    assert http.get("/auth/me", headers=bearer(other["accessToken"])).status_code == 401
    again = error_of(
        http.delete(f"/auth/sessions/{sessions[1]['id']}", headers=bearer(first["accessToken"]))
    )
    assert (again.http_status, again.reason) == (400, "SESSION_ALREADY_REVOKED")
    unknown = error_of(
        http.delete(f"/auth/sessions/{uuid.uuid4()}", headers=bearer(first["accessToken"]))
    )
    assert (unknown.http_status, unknown.reason) == (404, "SESSION_NOT_FOUND")

    everywhere = http.post(
        "/auth/logout-all", json={"includeCliTokens": False}, headers=bearer(first["accessToken"])
    )
    assert everywhere.status_code == 200
    assert everywhere.json() == {"revokedSessionCount": 1, "revokedCliTokenCount": 0}
    assert http.get("/auth/me", headers=bearer(first["accessToken"])).status_code == 401
    refreshed = http.post("/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert error_of(refreshed).reason == "TOKEN_REVOKED"


@pytest.mark.parametrize("session_id", ["not-a-uuid", "123"])
def test_malformed_session_id_is_400_naming_the_field(http: httpx.Client, session_id: str) -> None:
    token = register(http)["tokens"]["accessToken"]
    error = error_of(http.delete(f"/auth/sessions/{session_id}", headers=bearer(token)))
    assert (error.http_status, error.code) == (400, 3)
    assert set(error.field_violations) == {"session_id"}


def test_session_routes_need_a_token(http: httpx.Client) -> None:
    assert http.get("/auth/sessions").status_code == 401
    assert http.post("/auth/logout-all", json={}).status_code == 401
    assert http.delete(f"/auth/sessions/{uuid.uuid4()}").status_code == 401
