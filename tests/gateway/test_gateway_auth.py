"""The seed's /auth REST surface end to end: HTTP -> gateway -> gRPC chain -> database."""

from __future__ import annotations

import grpc
import httpx
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from tests.gateway.helpers import access_token, bearer, error_of, register
from tests.support import PASSWORD, FakeClock, rich_error, unique_email


def test_register_returns_user_and_tokens_in_camel_case(http: httpx.Client) -> None:
    body = register(http, email="  Ada@Example.COM ", name="Ada")
    assert set(body) == {"user", "tokens"}
    assert body["user"]["email"] == "ada@example.com"
    assert body["user"]["name"] == "Ada"
    assert body["user"]["createTime"] == "2026-01-01T12:00:00Z"  # the test clock, RFC 3339
    assert set(body["tokens"]) == {
        "accessToken",
        "accessTokenExpireTime",
        "refreshToken",
        "refreshTokenExpireTime",
    }


def test_login_then_me_with_the_access_token(http: httpx.Client) -> None:
    email = unique_email()
    registered = register(http, email=email)
    response = http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200
    login = response.json()
    assert login["user"]["id"] == registered["user"]["id"]
    assert login["accessTokenExpireTime"] == login["tokens"]["accessTokenExpireTime"]
    me = http.get("/auth/me", headers=bearer(login["tokens"]["accessToken"]))
    assert me.status_code == 200
    assert me.json() == {"user": registered["user"]}


def test_request_fields_accept_proto_names_too(http: httpx.Client) -> None:
    email = unique_email()
    register(http, email=email)
    response = http.post(
        "/auth/cli-login", json={"email": email, "password": PASSWORD, "token_name": "laptop"}
    )
    assert response.status_code == 200
    assert response.json()["cliToken"]["name"] == "laptop"


def test_refresh_rotates_and_a_reused_refresh_token_is_401(
    http: httpx.Client, clock: FakeClock
) -> None:
    tokens = register(http)["tokens"]
    first = http.post("/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    assert first.status_code == 200
    renewed = first.json()["tokens"]
    assert renewed["refreshToken"] != tokens["refreshToken"]
    assert http.get("/auth/me", headers=bearer(renewed["accessToken"])).status_code == 200

    clock.advance(seconds=10)  # past REFRESH_REUSE_GRACE_SECONDS
    reused = http.post("/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    error = error_of(reused)
    assert (error.http_status, error.code, error.reason) == (401, 16, "REFRESH_TOKEN_REUSED")
    # Reuse revoked the whole sign-in, the renewed pair included.
    assert http.get("/auth/me", headers=bearer(renewed["accessToken"])).status_code == 401


def test_cli_login_me_and_cli_logout(http: httpx.Client) -> None:
    email = unique_email()
    register(http, email=email)
    response = http.post("/auth/cli-login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token"].startswith("lmn_")
    assert body["cliToken"]["name"] == "cli"
    assert "lastUseTime" not in body["cliToken"]  # unset message fields are left out

    cli = bearer(body["token"])
    assert http.get("/auth/me", headers=cli).json()["user"]["email"] == email
    # An empty message needs no body at all: `curl -X POST` works.
    logout = http.post("/auth/cli-logout", headers=cli)
    assert logout.status_code == 200
    assert logout.json() == {}
    assert error_of(http.get("/auth/me", headers=cli)).reason == "TOKEN_REVOKED"


def test_cli_logout_with_an_access_token_is_failed_precondition_400(http: httpx.Client) -> None:
    response = http.post("/auth/cli-logout", json={}, headers=bearer(access_token(http)))
    error = error_of(response)
    assert (error.http_status, error.code, error.reason) == (400, 9, "NOT_A_CLI_TOKEN")
    assert error.domain == "luman.auth.v1"


def test_duplicate_email_is_409_with_error_info(http: httpx.Client) -> None:
    email = unique_email()
    register(http, email=email)
    response = http.post(
        "/auth/register", json={"email": email.upper(), "password": PASSWORD, "name": "Again"}
    )
    error = error_of(response)
    assert (error.http_status, error.code) == (409, 6)
    assert (error.reason, error.domain) == ("EMAIL_TAKEN", "luman.auth.v1")


def test_bad_fields_are_400_with_field_violations(http: httpx.Client) -> None:
    response = http.post(
        "/auth/register", json={"email": "not-an-email", "password": "short", "name": ""}
    )
    error = error_of(response)
    assert (error.http_status, error.code, error.reason) == (400, 3, "INVALID_ARGUMENT")
    assert set(error.field_violations) == {"email", "password", "name"}


def test_wrong_password_and_unknown_email_answer_alike(http: httpx.Client) -> None:
    email = unique_email()
    register(http, email=email)
    wrong = http.post("/auth/login", json={"email": email, "password": PASSWORD + "x"})
    unknown = http.post("/auth/login", json={"email": unique_email(), "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert error_of(wrong).reason == "INVALID_CREDENTIALS"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer"],
    ids=["missing", "garbage", "wrong-scheme", "empty"],
)
def test_me_rejections_are_the_grpc_ones(
    http: httpx.Client,
    auth: auth_service_pb2_grpc.AuthServiceStub,
    authorization: str | None,
) -> None:
    """Same status, reason and message on both doors: they share the interceptor chain."""
    headers = {"authorization": authorization} if authorization is not None else {}
    response = http.get("/auth/me", headers=headers)
    metadata = (("authorization", authorization),) if authorization is not None else ()
    with pytest.raises(grpc.RpcError) as caught:
        auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=metadata)
    over_grpc = rich_error(caught.value)
    over_http = error_of(response)
    assert over_http.http_status == 401
    assert over_http.code == over_grpc.code.value[0]
    assert (over_http.reason, over_http.message) == (over_grpc.reason, over_grpc.message)


def test_a_token_from_one_door_works_on_the_other(
    http: httpx.Client, auth: auth_service_pb2_grpc.AuthServiceStub
) -> None:
    token = access_token(http)
    me = auth.GetMe(
        auth_service_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {token}"),)
    )
    assert http.get("/auth/me", headers=bearer(token)).json()["user"]["id"] == me.user.id
