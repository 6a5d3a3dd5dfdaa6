"""The seed's /organizations REST surface end to end, members included."""

from __future__ import annotations

from typing import Any

import httpx

from tests.gateway.helpers import bearer, error_of, register
from tests.support import unique_email


def _create(http: httpx.Client, token: str, slug: str, name: str = "Acme") -> dict[str, Any]:
    response = http.post("/organizations", json={"name": name, "slug": slug}, headers=bearer(token))
    assert response.status_code == 200, response.text
    organization: dict[str, Any] = response.json()["organization"]
    return organization


def test_create_get_and_list_organizations(http: httpx.Client) -> None:
    token = register(http)["tokens"]["accessToken"]
    created = _create(http, token, "acme")
    assert created["slug"] == "acme"
    assert created["callerRole"] == "ORGANIZATION_ROLE_OWNER"

    fetched = http.get("/organizations/acme", headers=bearer(token))
    assert fetched.status_code == 200
    assert fetched.json() == {"organization": created}

    _create(http, token, "beta", name="Beta")
    page = http.get("/organizations", params={"pageSize": 1}, headers=bearer(token)).json()
    assert len(page["organizations"]) == 1
    assert page["nextPageToken"]
    rest = http.get(
        "/organizations",
        params={"page_size": 1, "page_token": page["nextPageToken"]},  # proto names work too
        headers=bearer(token),
    ).json()
    slugs = {o["slug"] for o in page["organizations"] + rest["organizations"]}
    assert slugs == {"acme", "beta"}
    assert rest["nextPageToken"] == ""  # fields without presence are always present


def test_duplicate_slug_is_409(http: httpx.Client) -> None:
    token = register(http)["tokens"]["accessToken"]
    _create(http, token, "taken")
    response = http.post(
        "/organizations", json={"name": "Other", "slug": "taken"}, headers=bearer(token)
    )
    error = error_of(response)
    assert (error.http_status, error.code, error.reason) == (409, 6, "SLUG_TAKEN")
    assert error.domain == "luman.organization.v1"


def test_non_member_gets_404_not_403(http: httpx.Client) -> None:
    owner = register(http)["tokens"]["accessToken"]
    outsider = register(http)["tokens"]["accessToken"]
    _create(http, owner, "private")
    for path in ("/organizations/private", "/organizations/private/members"):
        error = error_of(http.get(path, headers=bearer(outsider)))
        assert (error.http_status, error.code, error.reason) == (404, 5, "ORGANIZATION_NOT_FOUND")


def test_members_add_list_update_and_remove(http: httpx.Client) -> None:
    owner = register(http, name="Owner")
    token = owner["tokens"]["accessToken"]
    member_email = unique_email("member")
    member = register(http, email=member_email, name="Member")
    _create(http, token, "team")

    added = http.post(
        "/organizations/team/members",
        json={"email": member_email, "role": "ORGANIZATION_ROLE_MEMBER"},
        headers=bearer(token),
    )
    assert added.status_code == 200, added.text
    assert added.json()["member"]["userId"] == member["user"]["id"]
    assert added.json()["member"]["role"] == "ORGANIZATION_ROLE_MEMBER"

    listed = http.get("/organizations/team/members", headers=bearer(token)).json()
    assert {m["name"] for m in listed["members"]} == {"Owner", "Member"}

    path = f"/organizations/team/members/{member['user']['id']}"
    updated = http.patch(path, json={"role": "ORGANIZATION_ROLE_ADMIN"}, headers=bearer(token))
    assert updated.status_code == 200
    assert updated.json()["member"]["role"] == "ORGANIZATION_ROLE_ADMIN"

    removed = http.delete(path, headers=bearer(token))
    assert removed.status_code == 200
    assert removed.json() == {}
    listed = http.get("/organizations/team/members", headers=bearer(token)).json()
    assert [m["name"] for m in listed["members"]] == ["Owner"]


def test_add_member_twice_is_409_and_unknown_user_is_404(http: httpx.Client) -> None:
    token = register(http)["tokens"]["accessToken"]
    email = unique_email()
    user_id = register(http, email=email)["user"]["id"]
    _create(http, token, "dupes")
    body = {"userId": user_id, "role": "ORGANIZATION_ROLE_MEMBER"}
    assert http.post("/organizations/dupes/members", json=body, headers=bearer(token)).is_success
    again = http.post("/organizations/dupes/members", json=body, headers=bearer(token))
    assert (error_of(again).http_status, error_of(again).reason) == (409, "ALREADY_MEMBER")
    nobody = http.post(
        "/organizations/dupes/members",
        json={"email": unique_email(), "role": "ORGANIZATION_ROLE_MEMBER"},
        headers=bearer(token),
    )
    assert (error_of(nobody).http_status, error_of(nobody).reason) == (404, "USER_NOT_FOUND")


def test_member_cannot_manage_members_403(http: httpx.Client) -> None:
    owner = register(http)
    token = owner["tokens"]["accessToken"]
    email = unique_email()
    member = register(http, email=email)
    _create(http, token, "ranks")
    http.post(
        "/organizations/ranks/members",
        json={"email": email, "role": "ORGANIZATION_ROLE_MEMBER"},
        headers=bearer(token),
    )
    response = http.delete(
        f"/organizations/ranks/members/{owner['user']['id']}",
        headers=bearer(member["tokens"]["accessToken"]),
    )
    error = error_of(response)
    assert (error.http_status, error.code, error.reason) == (403, 7, "PERMISSION_DENIED")


def test_removing_the_last_owner_is_failed_precondition_400(http: httpx.Client) -> None:
    owner = register(http)
    token = owner["tokens"]["accessToken"]
    _create(http, token, "solo")
    response = http.delete(
        f"/organizations/solo/members/{owner['user']['id']}", headers=bearer(token)
    )
    error = error_of(response)
    assert (error.http_status, error.code, error.reason) == (400, 9, "LAST_OWNER")


def test_bad_role_and_bad_user_id_are_400_with_field_violations(http: httpx.Client) -> None:
    token = register(http)["tokens"]["accessToken"]
    _create(http, token, "checks")
    unspecified = http.patch(
        "/organizations/checks/members/not-a-uuid",
        json={"role": "ORGANIZATION_ROLE_UNSPECIFIED"},
        headers=bearer(token),
    )
    error = error_of(unspecified)
    assert (error.http_status, error.code) == (400, 3)
    assert "user_id" in error.field_violations
