"""Helpers for gateway tests: sign-up over HTTP and decoding google.rpc.Status JSON bodies."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from tests.support import PASSWORD, unique_email

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


@dataclasses.dataclass(frozen=True)
class HttpError:
    """An error response: HTTP status, then the google.rpc.Status fields and details."""

    http_status: int
    code: int
    message: str
    reason: str
    domain: str
    field_violations: dict[str, str]
    retry_delay: str | None


def error_of(response: httpx.Response) -> HttpError:
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message", "details"}, body
    reason = domain = ""
    violations: dict[str, str] = {}
    retry: str | None = None
    for detail in body["details"]:
        if detail["@type"] == ERROR_INFO:
            reason, domain = detail["reason"], detail["domain"]
        elif detail["@type"] == BAD_REQUEST:
            violations = {v["field"]: v["description"] for v in detail["fieldViolations"]}
        elif detail["@type"] == RETRY_INFO:
            retry = detail["retryDelay"]
    return HttpError(
        response.status_code, body["code"], body["message"], reason, domain, violations, retry
    )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def register(
    http: httpx.Client, email: str | None = None, name: str = "Test User", **headers: str
) -> dict[str, Any]:
    """POST /auth/register; returns the JSON body (user, tokens)."""
    response = http.post(
        "/auth/register",
        json={"email": email or unique_email(), "password": PASSWORD, "name": name},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def access_token(http: httpx.Client, email: str | None = None) -> str:
    token: str = register(http, email)["tokens"]["accessToken"]
    return token
