from __future__ import annotations

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from tests.support import PASSWORD, bearer, register, rich_error, unique_email


def test_register_returns_user_and_working_access_token(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    response = register(auth, email="  Ada@Example.COM ", name="Ada")
    assert response.user.email == "ada@example.com"
    assert response.user.name == "Ada"
    me = auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(response.tokens.access_token))
    assert me.user.id == response.user.id


def test_register_duplicate_email_is_already_exists(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    email = unique_email()
    register(auth, email=email)
    with pytest.raises(grpc.RpcError) as caught:
        register(auth, email=email.upper())
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "EMAIL_TAKEN"
    assert error.domain == "luman.auth.v1"


def test_register_bad_fields_are_invalid_argument_with_field_violations(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        auth.Register(
            auth_service_pb2.RegisterRequest(email="not-an-email", password="short", name="")
        )
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == {"email", "password", "name"}


def test_login_wrong_password_and_unknown_email_answer_alike(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    email = unique_email()
    register(auth, email=email)
    errors = []
    for candidate, password in ((email, PASSWORD + "x"), (unique_email(), PASSWORD)):
        with pytest.raises(grpc.RpcError) as caught:
            auth.Login(auth_service_pb2.LoginRequest(email=candidate, password=password))
        errors.append(rich_error(caught.value))
    assert errors[0] == errors[1]
    assert errors[0].code == grpc.StatusCode.UNAUTHENTICATED
    assert errors[0].reason == "INVALID_CREDENTIALS"


def test_get_me_without_token_is_unauthenticated(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        auth.GetMe(auth_service_pb2.GetMeRequest())
    assert rich_error(caught.value).reason == "CREDENTIALS_MISSING"
