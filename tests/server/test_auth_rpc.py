from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import bcrypt
import grpc
import pytest
from sqlalchemy import select

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.db.models import User
from luman.server.db.session import Sessions
from tests.support import PASSWORD, FakeClock, bearer, register, rich_error, unique_email


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


@pytest.mark.parametrize("rpc", ["Login", "CliLogin"])
def test_wrong_password_and_unknown_email_answer_alike(
    auth: auth_service_pb2_grpc.AuthServiceStub, rpc: str
) -> None:
    request_type = getattr(auth_service_pb2, f"{rpc}Request")
    email = unique_email()
    register(auth, email=email)
    errors = []
    for candidate, password in ((email, PASSWORD + "x"), (unique_email(), PASSWORD)):
        with pytest.raises(grpc.RpcError) as caught:
            getattr(auth, rpc)(request_type(email=candidate, password=password))
        errors.append(rich_error(caught.value))
    assert errors[0] == errors[1]
    assert errors[0].code == grpc.StatusCode.UNAUTHENTICATED
    assert errors[0].reason == "INVALID_CREDENTIALS"
    assert errors[0].message == "invalid email or password"


def test_get_me_without_token_is_unauthenticated(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        auth.GetMe(auth_service_pb2.GetMeRequest())
    assert rich_error(caught.value).reason == "CREDENTIALS_MISSING"


# --- Register / Login / GetMe happy paths -------------------------------------------------------


def test_register_token_pair_expires_after_15_minutes_and_7_days(
    auth: auth_service_pb2_grpc.AuthServiceStub, clock: FakeClock
) -> None:
    response = register(auth)
    tokens = response.tokens
    assert tokens.access_token
    assert tokens.refresh_token
    assert tokens.access_token != tokens.refresh_token
    assert tokens.access_token_expire_time.ToDatetime(dt.UTC) == clock() + dt.timedelta(minutes=15)
    assert tokens.refresh_token_expire_time.ToDatetime(dt.UTC) == clock() + dt.timedelta(days=7)
    assert response.user.create_time.ToDatetime(dt.UTC) == clock()
    uuid.UUID(response.user.id)


def test_register_stores_only_a_bcrypt_hash_of_the_password(
    auth: auth_service_pb2_grpc.AuthServiceStub, sessions: Sessions
) -> None:
    response = register(auth)
    with sessions.read() as session:
        stored = session.scalars(select(User).where(User.id == uuid.UUID(response.user.id))).one()
    assert stored.password_hash.startswith("$2b$04$")
    assert PASSWORD not in stored.password_hash
    assert bcrypt.checkpw(PASSWORD.encode(), stored.password_hash.encode())


def test_register_trims_name(auth: auth_service_pb2_grpc.AuthServiceStub) -> None:
    assert register(auth, name="  Grace Hopper \t").user.name == "Grace Hopper"


def test_register_accepts_unicode_name(auth: auth_service_pb2_grpc.AuthServiceStub) -> None:
    assert register(auth, name="Zoë 李").user.name == "Zoë 李"


def test_login_normalizes_email_and_returns_user_and_tokens(
    auth: auth_service_pb2_grpc.AuthServiceStub, clock: FakeClock
) -> None:
    registered = register(auth, email="grace@example.com")
    response = auth.Login(
        auth_service_pb2.LoginRequest(email="  GRACE@Example.com\n", password=PASSWORD)
    )
    assert response.user == registered.user
    expires = clock() + dt.timedelta(minutes=15)
    assert response.access_token_expire_time.ToDatetime(dt.UTC) == expires
    assert response.tokens.access_token_expire_time == response.access_token_expire_time
    me = auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(response.tokens.access_token))
    assert me.user == registered.user


def test_get_me_answers_each_caller_with_their_own_user_on_every_call(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    # The servicer reuses a built GetMe response per user: it must never cross users.
    users = [register(auth, name=f"User {n}") for n in range(3)]
    for _ in range(3):
        for user in users:
            me = auth.GetMe(
                auth_service_pb2.GetMeRequest(), metadata=bearer(user.tokens.access_token)
            )
            assert me.user == user.user
    assert len({user.user.id for user in users}) == 3


def test_each_login_is_its_own_sign_in_and_earlier_tokens_keep_working(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    email = unique_email()
    first = register(auth, email=email).tokens
    second = auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD)).tokens
    assert second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token
    for token in (first.access_token, second.access_token):
        auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(token))


def test_password_of_exactly_72_multibyte_bytes_round_trips(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    email = unique_email()
    password = "é" * 36  # 36 characters, 72 bytes: bcrypt's limit exactly
    register(auth, email=email, password=password)
    auth.Login(auth_service_pb2.LoginRequest(email=email, password=password))
    with pytest.raises(grpc.RpcError) as caught:
        # Same first 72 bytes plus one more: must not be truncated into a match.
        auth.Login(auth_service_pb2.LoginRequest(email=email, password=password + "x"))
    assert rich_error(caught.value).field_violations.keys() == {"password"}


def test_login_73_byte_password_is_invalid_argument_not_a_crash(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    # bcrypt 5 raises ValueError in checkpw for > 72 bytes; this must never reach the hasher.
    email = unique_email()
    register(auth, email=email)
    for password in ("p" * 73, "€" * 25, PASSWORD + "x" * 60):
        for candidate in (email, unique_email()):
            with pytest.raises(grpc.RpcError) as caught:
                auth.Login(auth_service_pb2.LoginRequest(email=candidate, password=password))
            error = rich_error(caught.value)
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT
            assert error.field_violations.keys() == {"password"}


def test_login_password_is_case_sensitive_and_not_trimmed(
    auth: auth_service_pb2_grpc.AuthServiceStub,
) -> None:
    email = unique_email()
    register(auth, email=email)
    for wrong in (PASSWORD.upper(), f" {PASSWORD}", f"{PASSWORD} "):
        with pytest.raises(grpc.RpcError) as caught:
            auth.Login(auth_service_pb2.LoginRequest(email=email, password=wrong))
        assert rich_error(caught.value).reason == "INVALID_CREDENTIALS"


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((("authorization", "Basic dXNlcjpwYXNz"),), "CREDENTIALS_MALFORMED"),
        ((("authorization", "Bearer "),), "CREDENTIALS_MALFORMED"),
        ((("authorization", "Bearer not-a-token"),), "TOKEN_INVALID"),
        ((("authorization", "Bearer lmn_not-a-real-token"),), "TOKEN_INVALID"),
        ((("x-token", "whatever"),), "CREDENTIALS_MISSING"),
    ],
)
def test_get_me_with_bad_credentials_is_unauthenticated(
    auth: auth_service_pb2_grpc.AuthServiceStub,
    metadata: tuple[tuple[str, str], ...],
    reason: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=metadata)
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == reason


# --- INTERNAL errors never leak ------------------------------------------------------------------


@contextlib.contextmanager
def table_missing(sessions: Sessions, table: str) -> Iterator[None]:
    """Make `table` disappear for the duration (renamed, so the shared PostgreSQL schema can be
    restored for the next test)."""
    with sessions.engine.begin() as conn:
        conn.exec_driver_sql(f'ALTER TABLE "{table}" RENAME TO "{table}_gone"')
    try:
        yield
    finally:
        with sessions.engine.begin() as conn:
            conn.exec_driver_sql(f'ALTER TABLE "{table}_gone" RENAME TO "{table}"')


def test_database_failure_is_internal_without_sql_or_exception_text(
    auth: auth_service_pb2_grpc.AuthServiceStub, sessions: Sessions
) -> None:
    email = unique_email()
    tokens = register(auth, email=email).tokens
    with table_missing(sessions, "login_sessions"):
        calls: list[Callable[[], object]] = [
            lambda: auth.GetMe(
                auth_service_pb2.GetMeRequest(), metadata=bearer(tokens.access_token)
            ),
            lambda: auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD)),
            lambda: register(auth),
            lambda: auth.RefreshToken(
                auth_service_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token)
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as caught:
                call()
            error = rich_error(caught.value)
            assert error.code == grpc.StatusCode.INTERNAL
            assert error.message == "internal error"
            assert (error.reason, error.field_violations) == ("", {})
            # grpc-stubs leaves trailing_metadata() untyped on the raised error.
            trailers = repr(cast(Any, caught.value).trailing_metadata())
            for leak in ("login_sessions", "SELECT", "INSERT", "$2b$", email, "Traceback"):
                assert leak not in trailers
    # The schema is back: the same calls work again.
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(tokens.access_token))
