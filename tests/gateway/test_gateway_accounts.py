"""The account RPCs over HTTP: PATCH /auth/me, POST /auth/me:changePassword and POST
/auth/me:delete, through the gateway and the real gRPC chain on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx

from tests.gateway.helpers import ERROR_INFO, bearer, error_of, register
from tests.support import PASSWORD, unique_email

NEW_PASSWORD = "a brand new passphrase"
PRECONDITION_FAILURE = "type.googleapis.com/google.rpc.PreconditionFailure"


def test_account_rpcs_over_http(http: httpx.Client) -> None:
    email = unique_email()
    tokens = register(http, email=email)["tokens"]
    me = bearer(tokens["accessToken"])

    updated = http.patch(
        "/auth/me", params={"updateMask": "name"}, json={"name": "Ada"}, headers=me
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["user"]["name"] == "Ada"
    assert http.get("/auth/me", headers=me).json()["user"]["name"] == "Ada"
    unknown = error_of(
        http.patch("/auth/me", params={"updateMask": "email"}, json={"name": "Ada"}, headers=me)
    )
    assert (unknown.http_status, set(unknown.field_violations)) == (400, {"update_mask"})

    wrong = error_of(
        http.post(
            "/auth/me:changePassword",
            json={"currentPassword": "not the password", "newPassword": NEW_PASSWORD},
            headers=me,
        )
    )
    assert (wrong.http_status, wrong.reason) == (401, "INVALID_CREDENTIALS")
    changed = http.post(
        "/auth/me:changePassword",
        json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD, "revokeCliTokens": True},
        headers=me,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"revokedSessionCount": 0, "revokedCliTokenCount": 0}

    created = http.post("/organizations", json={"name": "Acme", "slug": "acme-http"}, headers=me)
    assert created.status_code == 200, created.text
    refused = http.post("/auth/me:delete", json={"password": NEW_PASSWORD}, headers=me)
    error = error_of(refused)
    assert (error.http_status, error.reason) == (400, "LAST_OWNER")
    details = refused.json()["details"]
    (info,) = [d for d in details if d["@type"] == ERROR_INFO]
    assert info["metadata"] == {"organizations": "acme-http"}
    (failure,) = [d for d in details if d["@type"] == PRECONDITION_FAILURE]
    assert failure["violations"][0]["subject"] == "organizations/acme-http"

    other = bearer(register(http)["tokens"]["accessToken"])
    deleted = http.post("/auth/me:delete", json={"password": PASSWORD}, headers=other)
    assert (deleted.status_code, deleted.json()) == (200, {})
    assert http.get("/auth/me", headers=other).status_code == 401
