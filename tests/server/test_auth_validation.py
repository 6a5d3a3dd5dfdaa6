"""Bad input on every field of every AuthService RPC: INVALID_ARGUMENT naming exactly that field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from tests.support import PASSWORD, register, rich_error, unique_email

GOOD_EMAIL = "someone@example.com"
# 64 + 1 + 189 = 254 characters, the longest address allowed; one more is too long.
LONGEST_EMAIL = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
assert len(LONGEST_EMAIL) == 254

BAD_EMAILS = {
    "empty": "",
    "blank": "   ",
    "no-at": "someone.example.com",
    "no-domain-dot": "someone@localhost",
    "two-ats": "a@b@example.com",
    "space-inside": "some one@example.com",
    "newline-inside": "some\none@example.com",
    "trailing-dot": "someone@example.com.",
    "label-starts-with-dash": "someone@-example.com",
    "too-long": "a" + LONGEST_EMAIL,
    "non-ascii": "zoë@example.com",
}
BAD_NEW_PASSWORDS = {
    "empty": "",
    "7-bytes": "1234567",
    "73-bytes": "p" * 73,
    "3-byte-chars-74-bytes": "é" * 37,  # 37 characters: the limit counts bytes
    "4-byte-chars-76-bytes": "😀" * 19,
}
BAD_NAMES = {
    "empty": "",
    "blank": " \t ",
    "101-chars": "n" * 101,
    "nul": "Ada\x00Lovelace",
    "newline": "Ada\nLovelace",
    "tab-inside": "Ada\tLovelace",
    "del": "Ada\x7f",
    "escape": "\x1b[31mAda",
    "bidi-override": "Ada\u202eecalevoL",
}

Call = Callable[[auth_service_pb2_grpc.AuthServiceStub], Any]


def _register(email: str = GOOD_EMAIL, password: str = PASSWORD, name: str = "Ada") -> Call:
    request = auth_service_pb2.RegisterRequest(email=email, password=password, name=name)
    return lambda auth: auth.Register(request)


def _login(email: str = GOOD_EMAIL, password: str = PASSWORD) -> Call:
    request = auth_service_pb2.LoginRequest(email=email, password=password)
    return lambda auth: auth.Login(request)


def _cli_login(email: str = GOOD_EMAIL, password: str = PASSWORD, token_name: str = "") -> Call:
    request = auth_service_pb2.CliLoginRequest(
        email=email, password=password, token_name=token_name
    )
    return lambda auth: auth.CliLogin(request)


def _refresh(token: str) -> Call:
    request = auth_service_pb2.RefreshTokenRequest(refresh_token=token)
    return lambda auth: auth.RefreshToken(request)


def _cases() -> list[Any]:
    cases: list[Any] = []
    for rpc, build in (("register", _register), ("login", _login), ("cli_login", _cli_login)):
        for label, email in BAD_EMAILS.items():
            cases.append(pytest.param(build(email=email), "email", id=f"{rpc}-email-{label}"))
        for label, password in BAD_NEW_PASSWORDS.items():
            cases.append(
                pytest.param(build(password=password), "password", id=f"{rpc}-password-{label}")
            )
    for label, name in BAD_NAMES.items():
        cases.append(pytest.param(_register(name=name), "name", id=f"register-name-{label}"))
    for label, name in BAD_NAMES.items():
        if name.strip():  # an empty token_name is allowed: it defaults to "cli"
            cases.append(
                pytest.param(
                    _cli_login(token_name=name), "token_name", id=f"cli_login-token_name-{label}"
                )
            )
    cases.append(pytest.param(_refresh(""), "refresh_token", id="refresh-empty"))
    cases.append(pytest.param(_refresh("x" * 4097), "refresh_token", id="refresh-too-long"))
    return cases


@pytest.mark.shape_check  # AuthServicer checks every field before AuthService runs a query
@pytest.mark.parametrize(("call", "field"), _cases())
def test_bad_field_is_invalid_argument_naming_the_field(
    auth: auth_service_pb2_grpc.AuthServiceStub, call: Call, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(auth)
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert error.domain == "luman.auth.v1"
    assert list(error.field_violations) == [field]
    assert error.field_violations[field]
    assert field in error.message


@pytest.mark.shape_check
def test_every_bad_field_is_reported_in_one_answer(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        auth.CliLogin(
            auth_service_pb2.CliLoginRequest(email="x", password="", token_name="t" * 101)
        )
    assert rich_error(caught.value).field_violations.keys() == {"email", "password", "token_name"}


@pytest.mark.parametrize(
    ("email", "password", "name"),
    [
        pytest.param(LONGEST_EMAIL, PASSWORD, "Ada", id="254-char-email"),
        pytest.param("first.last+tag@sub.example.co.uk", PASSWORD, "Ada", id="plus-and-subdomains"),
        pytest.param(None, "12345678", "Ada", id="8-byte-password"),
        pytest.param(None, "😀😀", "Ada", id="2-chars-8-bytes-password"),
        pytest.param(None, "p" * 72, "Ada", id="72-byte-password"),
        pytest.param(None, PASSWORD, "n" * 100, id="100-char-name"),
        pytest.param(None, PASSWORD, "N", id="1-char-name"),
    ],
)
def test_boundary_values_are_accepted(
    auth: auth_service_pb2_grpc.AuthServiceStub, email: str | None, password: str, name: str
) -> None:
    email = email or unique_email()
    response = register(auth, email=email, password=password, name=name)
    assert response.user.email == email.lower()
    auth.Login(auth_service_pb2.LoginRequest(email=email, password=password))


def test_empty_token_name_defaults_to_cli(auth: auth_service_pb2_grpc.AuthServiceStub) -> None:
    email = unique_email()
    register(auth, email=email)
    response = auth.CliLogin(auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD))
    assert response.cli_token.name == "cli"
