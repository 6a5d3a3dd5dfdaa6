"""The shared organization configuration over HTTP: PUT a JSON document, GET it back, a stale
etag is 409, and both routes are in the OpenAPI document."""

from __future__ import annotations

import httpx

from tests.gateway.helpers import ERROR_INFO, access_token, bearer, error_of


def test_put_get_and_stale_etag_over_http(http: httpx.Client) -> None:
    owner = access_token(http)
    created = http.post(
        "/organizations", json={"name": "Acme", "slug": "acme-conf"}, headers=bearer(owner)
    )
    assert created.status_code == 200, created.text

    empty = http.get("/organizations/acme-conf/config", headers=bearer(owner))
    assert empty.status_code == 200, empty.text
    body = empty.json()["organizationConfig"]
    # int64 is a string in proto3 JSON.
    assert (body["config"], body["version"], body["etag"]) == ({}, "0", 'W/"0"')

    document = {"sources": [{"name": "acme", "url": "https://ui.acme.dev"}], "preset": "dark"}
    put = http.put(
        "/organizations/acme-conf/config",
        json={"config": document, "etag": 'W/"0"'},
        headers=bearer(owner),
    )
    assert put.status_code == 200, put.text
    written = put.json()["organizationConfig"]
    assert (written["version"], written["etag"], written["config"]) == ("1", 'W/"1"', document)

    got = http.get("/organizations/acme-conf/config", headers=bearer(owner))
    assert got.json()["organizationConfig"] == written

    stale = http.put(
        "/organizations/acme-conf/config",
        json={"config": {"preset": "light"}, "etag": 'W/"0"'},
        headers=bearer(owner),
    )
    error = error_of(stale)
    assert (error.http_status, error.reason) == (409, "ETAG_MISMATCH")
    info = next(d for d in stale.json()["details"] if d["@type"] == ERROR_INFO)
    assert info["metadata"] == {"etag": 'W/"1"'}

    not_object = error_of(
        http.put("/organizations/acme-conf/config", json={"config": [1, 2]}, headers=bearer(owner))
    )
    assert not_object.http_status == 400

    stranger = access_token(http)
    hidden = error_of(http.get("/organizations/acme-conf/config", headers=bearer(stranger)))
    assert (hidden.http_status, hidden.reason) == (404, "ORGANIZATION_NOT_FOUND")


def test_routes_are_in_the_openapi_document(http: httpx.Client) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200, response.text
    operations = response.json()["paths"]["/organizations/{slug}/config"]
    assert set(operations) >= {"get", "put"}
