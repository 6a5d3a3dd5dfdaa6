"""UpdateOrganization, DeleteOrganization and the ownership transfer over HTTP/JSON, and their
OpenAPI operations."""

from __future__ import annotations

from typing import Any

import httpx

from tests.gateway.helpers import bearer, error_of, register


def _create(http: httpx.Client, token: str, slug: str) -> dict[str, Any]:
    response = http.post(
        "/organizations", json={"name": "Acme", "slug": slug}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    organization: dict[str, Any] = response.json()["organization"]
    return organization


def test_patch_renames_and_changes_the_slug(http: httpx.Client) -> None:
    token = register(http)["tokens"]["accessToken"]
    _create(http, token, "acme-http")
    response = http.patch(
        "/organizations/acme-http",
        params={"update_mask": "name,slug"},
        json={"name": "Acme Corp", "slug": "acme-corp"},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    assert response.json()["organization"]["slug"] == "acme-corp"
    # The old slug redirects: GET answers with the current slug.
    fetched = http.get("/organizations/acme-http", headers=bearer(token))
    assert fetched.status_code == 200
    assert (fetched.json()["organization"]["name"], fetched.json()["organization"]["slug"]) == (
        "Acme Corp",
        "acme-corp",
    )
    # camelCase mask in the query works too; an unknown path is a 400 naming update_mask.
    error = error_of(
        http.patch(
            "/organizations/acme-corp",
            params={"updateMask": "createTime"},
            json={"name": "X"},
            headers=bearer(token),
        )
    )
    assert (error.http_status, error.reason) == (400, "INVALID_ARGUMENT")
    assert set(error.field_violations) == {"update_mask"}
    # Another organization may not take the old slug.
    other = register(http)["tokens"]["accessToken"]
    error = error_of(
        http.post(
            "/organizations", json={"name": "Copy", "slug": "acme-http"}, headers=bearer(other)
        )
    )
    assert (error.http_status, error.reason) == (409, "SLUG_RESERVED")


def test_delete_with_confirm_slug_in_the_query(http: httpx.Client) -> None:
    token = register(http)["tokens"]["accessToken"]
    _create(http, token, "acme-gone")
    error = error_of(http.delete("/organizations/acme-gone", headers=bearer(token)))
    assert error.http_status == 400
    assert set(error.field_violations) == {"confirm_slug"}
    error = error_of(
        http.delete(
            "/organizations/acme-gone", params={"confirmSlug": "acme"}, headers=bearer(token)
        )
    )
    assert set(error.field_violations) == {"confirm_slug"}
    response = http.delete(
        "/organizations/acme-gone", params={"confirm_slug": "acme-gone"}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert http.get("/organizations/acme-gone", headers=bearer(token)).status_code == 404


def test_ownership_transfer_over_http(http: httpx.Client) -> None:
    owner = register(http)["tokens"]["accessToken"]
    target = register(http)
    target_token = target["tokens"]["accessToken"]
    _create(http, owner, "acme-own")
    added = http.post(
        "/organizations/acme-own/members",
        json={"userId": target["user"]["id"], "role": "ORGANIZATION_ROLE_MEMBER"},
        headers=bearer(owner),
    )
    assert added.status_code == 200, added.text

    offered = http.post(
        "/organizations/acme-own/ownership-transfer",
        json={"email": target["user"]["email"]},
        headers=bearer(owner),
    )
    assert offered.status_code == 200, offered.text
    transfer = offered.json()["ownershipTransfer"]
    assert transfer["toUserId"] == target["user"]["id"]
    seen = http.get("/organizations/acme-own/ownership-transfer", headers=bearer(target_token))
    assert seen.json() == {"ownershipTransfer": transfer}

    # Only the target accepts.
    error = error_of(
        http.post("/organizations/acme-own/ownership-transfer:accept", headers=bearer(owner))
    )
    assert (error.http_status, error.reason) == (403, "PERMISSION_DENIED")
    accepted = http.post(
        "/organizations/acme-own/ownership-transfer:accept", headers=bearer(target_token)
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["member"]["role"] == "ORGANIZATION_ROLE_OWNER"

    # Decline and cancel: a new offer (from the new owner to the old one), then withdrawn.
    old_owner_id = http.get("/auth/me", headers=bearer(owner)).json()["user"]["id"]
    assert (
        http.post(
            "/organizations/acme-own/ownership-transfer",
            json={"userId": old_owner_id},
            headers=bearer(target_token),
        ).status_code
        == 200
    )
    declined = http.post(
        "/organizations/acme-own/ownership-transfer:decline", headers=bearer(owner)
    )
    assert declined.status_code == 200, declined.text
    error = error_of(
        http.delete("/organizations/acme-own/ownership-transfer", headers=bearer(target_token))
    )
    assert (error.http_status, error.reason) == (404, "OWNERSHIP_TRANSFER_NOT_FOUND")


def test_openapi_describes_each_new_operation(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    paths = document["paths"]
    expected = {
        ("/organizations/{slug}", "patch"): "OrganizationService_UpdateOrganization",
        ("/organizations/{slug}", "delete"): "OrganizationService_DeleteOrganization",
        ("/organizations/{slug}/ownership-transfer", "post"): (
            "OrganizationService_OfferOwnershipTransfer"
        ),
        ("/organizations/{slug}/ownership-transfer", "get"): (
            "OrganizationService_GetOwnershipTransfer"
        ),
        ("/organizations/{slug}/ownership-transfer", "delete"): (
            "OrganizationService_CancelOwnershipTransfer"
        ),
        ("/organizations/{slug}/ownership-transfer:accept", "post"): (
            "OrganizationService_AcceptOwnershipTransfer"
        ),
        ("/organizations/{slug}/ownership-transfer:decline", "post"): (
            "OrganizationService_DeclineOwnershipTransfer"
        ),
    }
    for (path, verb), operation_id in expected.items():
        operation = paths[path][verb]
        assert operation["operationId"] == operation_id
        assert operation["description"]
    delete_parameters = {p["name"] for p in paths["/organizations/{slug}"]["delete"]["parameters"]}
    assert "confirmSlug" in delete_parameters or "confirm_slug" in delete_parameters
    patch_parameters = {p["name"] for p in paths["/organizations/{slug}"]["patch"]["parameters"]}
    assert "updateMask" in patch_parameters or "update_mask" in patch_parameters
