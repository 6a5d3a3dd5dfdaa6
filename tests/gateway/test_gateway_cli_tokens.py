"""Personal (CLI) tokens over HTTP: the routes the contract declares, end to end."""

from __future__ import annotations

import httpx

from luman.api.v1 import annotations_pb2
from luman.client import token_format
from luman.server import methods
from tests.gateway.helpers import bearer, error_of, register


def test_create_list_revoke_and_revoke_all_over_http(http: httpx.Client) -> None:
    access = register(http)["tokens"]["accessToken"]
    created = http.post(
        "/auth/cli-tokens",
        json={"name": "ci", "scopes": ["read"], "ttl": "3600s"},
        headers=bearer(access),
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert token_format.verify_checksum(body["token"])
    token_id = body["cliToken"]["id"]
    assert body["cliToken"]["scopes"] == ["read"]
    assert body["cliToken"]["expireTime"] == "2026-01-01T13:00:00Z"
    assert body["cliToken"]["hint"] == "lmn_..." + body["token"][-4:]

    # The read-only token reads over HTTP, and is refused a write with 403.
    me = http.get("/auth/me", headers=bearer(body["token"]))
    assert me.status_code == 200
    refused = http.post(
        "/organizations", json={"name": "Acme", "slug": "acme-http"}, headers=bearer(body["token"])
    )
    error = error_of(refused)
    assert (error.http_status, error.reason) == (403, "INSUFFICIENT_SCOPE")

    listed = http.get("/auth/cli-tokens", params={"pageSize": 10}, headers=bearer(access))
    assert listed.status_code == 200
    tokens = listed.json()["cliTokens"]
    assert [t["id"] for t in tokens] == [token_id]
    assert body["token"] not in listed.text
    assert tokens[0]["lastUseIp"] == "127.0.0.1"

    revoked = http.post(f"/auth/cli-tokens/{token_id}:revoke", json={}, headers=bearer(access))
    assert revoked.status_code == 200, revoked.text
    again = error_of(
        http.post(f"/auth/cli-tokens/{token_id}:revoke", json={}, headers=bearer(access))
    )
    assert (again.http_status, again.reason) == (400, "TOKEN_ALREADY_REVOKED")
    assert error_of(http.get("/auth/me", headers=bearer(body["token"]))).http_status == 401

    for name in ("a", "b"):
        http.post("/auth/cli-tokens", json={"name": name}, headers=bearer(access))
    # As in the README's walk-through: no body at all is fine.
    all_revoked = http.post("/auth/cli-tokens:revokeAll", headers=bearer(access))
    assert all_revoked.status_code == 200
    assert all_revoked.json() == {"revokedCount": 2}


def test_bad_input_over_http_names_the_field(http: httpx.Client) -> None:
    access = register(http)["tokens"]["accessToken"]
    error = error_of(
        http.post(
            "/auth/cli-tokens", json={"name": "ci", "scopes": ["admin"]}, headers=bearer(access)
        )
    )
    assert (error.http_status, list(error.field_violations)) == (400, ["scopes"])
    missing = error_of(
        http.post(
            f"/auth/cli-tokens/{'0' * 8}-0000-0000-0000-{'0' * 12}:revoke",
            json={},
            headers=bearer(access),
        )
    )
    assert (missing.http_status, missing.reason) == (404, "TOKEN_NOT_FOUND")


def test_openapi_lists_the_scope_each_operation_needs(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    operations = {
        op["operationId"]: op for item in document["paths"].values() for op in item.values()
    }
    for service in methods.SERVICES:
        for method in service.methods:
            operation = operations.get(f"{service.name}_{method.name}")
            access = method.GetOptions().Extensions[annotations_pb2.access]
            if operation is None or access.public:
                continue
            scopes = [] if access.no_scope else [methods.scope_name(access.scope)]
            assert operation["security"] == [{"bearerAuth": scopes}], method.full_name
    assert operations["AuthService_CreateCliToken"]["security"] == [{"bearerAuth": ["write"]}]
    assert operations["OrganizationService_ListMembers"]["security"] == [{"bearerAuth": ["read"]}]
    # Any valid token signs itself out: a bearer requirement without scopes.
    assert operations["AuthService_CliLogout"]["security"] == [{"bearerAuth": []}]
