"""Service accounts, the service-token exchange and introspection over HTTP: the routes the
contracts declare, end to end."""

from __future__ import annotations

import httpx

from luman.client import token_format
from tests.gateway.helpers import access_token, bearer, error_of


def test_manage_exchange_and_introspect_over_http(http: httpx.Client) -> None:
    owner = access_token(http)
    created = http.post(
        "/organizations", json={"name": "Acme", "slug": "acme-svc"}, headers=bearer(owner)
    )
    assert created.status_code == 200, created.text

    account = http.post(
        "/organizations/acme-svc/service-accounts",
        json={"name": "billing", "scopes": ["introspect"]},
        headers=bearer(owner),
    )
    assert account.status_code == 200, account.text
    secret = account.json()["secret"]
    account_id = account.json()["serviceAccount"]["id"]
    assert token_format.verify_checksum(secret, token_format.SERVICE_PREFIX)

    listed = http.get("/organizations/acme-svc/service-accounts", headers=bearer(owner))
    assert listed.status_code == 200
    assert [a["id"] for a in listed.json()["serviceAccounts"]] == [account_id]
    assert secret not in listed.text

    exchanged = http.post("/auth/service-token", json={"secret": secret})
    assert exchanged.status_code == 200, exchanged.text
    body = exchanged.json()
    assert (body["tokenType"], body["scopes"]) == ("Bearer", ["introspect"])
    service = body["accessToken"]

    introspected = http.post("/auth/introspect", json={"token": owner}, headers=bearer(service))
    assert introspected.status_code == 200, introspected.text
    assert introspected.json()["active"] is True
    assert introspected.json()["tokenKind"] == "TOKEN_KIND_ACCESS_TOKEN"
    # A user token is bound to no organization: the key is absent, not "".
    assert "organizationId" not in introspected.json()
    assert introspected.json()["scopes"] == ["read", "write"]
    # RFC 7662 and issue 15: an inactive token gets `active: false` and no other field, the
    # same body whatever made it inactive (unknown, malformed, too long).
    for token in ("lmn_nope", token_format.new_token(), "x" * 5000):
        inactive = http.post("/auth/introspect", json={"token": token}, headers=bearer(service))
        assert inactive.status_code == 200, inactive.text
        assert inactive.json() == {"active": False}
        assert inactive.content == b'{"active":false}'

    # A user cannot introspect; a service cannot act for a user.
    refused = error_of(http.post("/auth/introspect", json={"token": owner}, headers=bearer(owner)))
    assert (refused.http_status, refused.reason) == (403, "INSUFFICIENT_SCOPE")
    me = error_of(http.get("/auth/me", headers=bearer(service)))
    assert (me.http_status, me.reason) == (403, "USER_REQUIRED")

    deleted = http.delete(
        f"/organizations/acme-svc/service-accounts/{account_id}", headers=bearer(owner)
    )
    assert deleted.status_code == 200, deleted.text
    gone = error_of(http.post("/auth/introspect", json={"token": owner}, headers=bearer(service)))
    assert (gone.http_status, gone.reason) == (401, "TOKEN_REVOKED")
    bad_secret = error_of(http.post("/auth/service-token", json={"secret": secret}))
    assert (bad_secret.http_status, bad_secret.reason) == (401, "INVALID_CREDENTIALS")


def test_bad_input_over_http_names_the_field(http: httpx.Client) -> None:
    owner = access_token(http)
    http.post("/organizations", json={"name": "Acme", "slug": "acme-bad"}, headers=bearer(owner))
    error = error_of(
        http.post(
            "/organizations/acme-bad/service-accounts",
            json={"name": "x", "scopes": ["root"]},
            headers=bearer(owner),
        )
    )
    assert (error.http_status, list(error.field_violations)) == (400, ["scopes"])
    missing = error_of(http.post("/auth/service-token", json={}))
    assert (missing.http_status, list(missing.field_violations)) == (400, ["secret"])


def test_openapi_says_only_active_is_always_present(http: httpx.Client) -> None:
    schemas = http.get("/openapi.json").json()["components"]["schemas"]
    introspection = next(
        schema for name, schema in schemas.items() if name.endswith("IntrospectTokenResponse")
    )
    assert introspection["required"] == ["active"]
    assert "scopes" in introspection["properties"]
