"""Bad HTTP input gets a clean 4xx in google.rpc.Status form, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from luman.server.config import Settings
from tests.gateway.helpers import access_token, bearer, error_of
from tests.support import PASSWORD, unique_email

JSON = {"content-type": "application/json"}


def _login_body() -> dict[str, str]:
    return {"email": unique_email(), "password": PASSWORD}


@pytest.mark.shape_check
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"email": ', "INVALID_JSON"),
        (b"\xff\xfe{}", "INVALID_JSON"),
        (b"[1, 2]", "INVALID_JSON"),
        (b'"a string"', "INVALID_JSON"),
        (b'{"email": NaN}', "INVALID_JSON"),
        (b'{"email": "a@b.c", "email": "d@e.f"}', "DUPLICATE_FIELD"),
        (b'{"email": "a@b.c", "tokenName": "x"}', "UNKNOWN_FIELD"),
        (b'{"email": 12}', "INVALID_FIELD_VALUE"),
        (b'{"email": "\\ud800"}', "INVALID_FIELD_VALUE"),
        (b"[" * 100_00 + b"]" * 100_00, "INVALID_JSON"),
    ],
    ids=[
        "truncated",
        "not-utf8",
        "array",
        "string",
        "nan",
        "duplicate-key",
        "unknown-field",
        "wrong-type",
        "lone-surrogate",
        "deeply-nested",
    ],
)
def test_malformed_bodies_are_400(http: httpx.Client, body: bytes, reason: str) -> None:
    response = http.post("/auth/login", content=body, headers=JSON)
    error = error_of(response)
    assert (error.http_status, error.code, error.reason) == (400, 3, reason)
    assert error.domain == "luman.gateway"


@pytest.mark.shape_check
def test_unknown_field_names_the_field(http: httpx.Client) -> None:
    response = http.post("/auth/login", json={**_login_body(), "admin": True})
    error = error_of(response)
    assert error.reason == "UNKNOWN_FIELD"
    assert "admin" in error.field_violations


@pytest.mark.shape_check
def test_a_field_under_both_names_is_400(http: httpx.Client) -> None:
    body = {"email": unique_email(), "password": PASSWORD, "name": "A", "token_name": "x"}
    body.pop("name")
    response = http.post(
        "/auth/cli-login", json={**body, "tokenName": "y"}, headers={"user-agent": "pytest"}
    )
    assert error_of(response).reason == "DUPLICATE_FIELD"


def test_a_path_field_in_the_body_is_400(http: httpx.Client) -> None:
    token = access_token(http)
    for field in ("slug", "organizationId", "userId"):
        response = http.patch(
            "/organizations/acme/members/00000000-0000-0000-0000-000000000000",
            json={"role": "ORGANIZATION_ROLE_ADMIN", field: "x"},
            headers=bearer(token),
        )
        error = error_of(response)
        assert (error.http_status, error.reason) == (400, "FIELD_SET_BY_PATH"), field


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("pageSize=abc", "INVALID_FIELD_VALUE"),
        ("pageSize=99999999999", "INVALID_FIELD_VALUE"),
        ("pageSize=1&pageSize=2", "REPEATED_QUERY_PARAMETER"),
        ("pageSize=1&page_size=2", "REPEATED_QUERY_PARAMETER"),
        ("debug=1", "UNKNOWN_QUERY_PARAMETER"),
        ("organizationId=x", "FIELD_SET_BY_PATH"),
        ("pageToken=%FF", "INVALID_QUERY"),
    ],
)
def test_bad_query_parameters_are_400(http: httpx.Client, query: str, reason: str) -> None:
    token = access_token(http)
    response = http.get(f"/organizations/acme/members?{query}", headers=bearer(token))
    error = error_of(response)
    assert (error.http_status, error.code, error.reason) == (400, 3, reason)


@pytest.mark.shape_check
def test_query_parameters_on_a_body_endpoint_are_400(http: httpx.Client) -> None:
    response = http.post("/auth/login?email=a@b.c", json=_login_body())
    assert error_of(response).reason == "UNKNOWN_QUERY_PARAMETER"


def test_unknown_enum_name_is_400(http: httpx.Client) -> None:
    token = access_token(http)
    response = http.post(
        "/organizations/acme/members",
        json={"email": unique_email(), "role": "ORGANIZATION_ROLE_EMPEROR"},
        headers=bearer(token),
    )
    assert error_of(response).http_status == 400


@pytest.mark.shape_check
@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_wrong_content_type_is_415(http: httpx.Client, content_type: str | None) -> None:
    # httpx sends no content type of its own for raw content.
    headers = {"content-type": content_type} if content_type else {}
    response = http.post("/auth/login", content=b'{"email": "a@b.c"}', headers=headers)
    error = error_of(response)
    assert (error.http_status, error.reason) == (415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"],
)
def test_json_content_types_are_accepted(http: httpx.Client, content_type: str) -> None:
    body = f'{{"email": "{unique_email()}", "password": "{PASSWORD}"}}'.encode()
    response = http.post("/auth/login", content=body, headers={"content-type": content_type})
    assert error_of(response).reason == "INVALID_CREDENTIALS"


@pytest.mark.shape_check
def test_oversized_body_is_413(http: httpx.Client, gateway_settings: Settings) -> None:
    big = b'{"email": "' + b"a" * gateway_settings.http_max_body_bytes + b'"}'
    error = error_of(http.post("/auth/login", content=big, headers=JSON))
    assert (error.http_status, error.reason) == (413, "BODY_TOO_LARGE")


@pytest.mark.shape_check
def test_oversized_chunked_body_is_413(http: httpx.Client, gateway_settings: Settings) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"email": "'
        for _ in range(gateway_settings.http_max_body_bytes // 1024 + 1):
            yield b"a" * 1024
        yield b'"}'

    response = http.post("/auth/login", content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert error_of(response).http_status == 413


@pytest.mark.shape_check
def test_unknown_route_is_404(http: httpx.Client) -> None:
    for path in ("/nope", "/auth", "/organizations/acme/members/x/y", "/auth/me/"):
        error = error_of(http.get(path))
        assert (error.http_status, error.code, error.reason) == (404, 5, "NOT_FOUND"), path


@pytest.mark.shape_check
def test_wrong_method_is_405_with_allow(http: httpx.Client) -> None:
    response = http.put("/organizations/acme/members/u1", json={})
    error = error_of(response)
    assert (error.http_status, error.code, error.reason) == (405, 12, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "DELETE, PATCH"
    assert http.delete("/auth/login").headers["allow"] == "POST"
    assert http.post("/healthz").status_code == 405


def test_bad_percent_encoding_in_the_path_is_400(http: httpx.Client) -> None:
    token = access_token(http)
    error = error_of(http.get("/organizations/%FF%FE", headers=bearer(token)))
    assert (error.http_status, error.reason) == (400, "INVALID_PATH")


def test_percent_encoded_slash_stays_inside_the_variable(http: httpx.Client) -> None:
    token = access_token(http)
    error = error_of(http.get("/organizations/a%2Fb", headers=bearer(token)))
    # It reached the service as slug "a/b" (not a 404 for an unknown route).
    assert (error.http_status, error.domain) == (400, "luman.organization.v1")
    assert "slug" in error.field_violations


@pytest.mark.shape_check
def test_non_ascii_authorization_is_400(http: httpx.Client) -> None:
    request = http.build_request("GET", "/auth/me")
    request.headers["authorization"] = "Bearer caf\xe9"
    error = error_of(http.send(request))
    assert (error.http_status, error.reason) == (400, "INVALID_HEADER")
