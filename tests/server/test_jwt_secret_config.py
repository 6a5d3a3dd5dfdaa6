"""JWT_SECRET is needed where it signs: access tokens under JWT_ALGORITHM=HS256. With EdDSA or
ES256 nothing reads it (refresh tokens use JWT_REFRESH_SECRET), so production runs without it,
and a server so configured signs, verifies and refreshes tokens."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import ConfigError, Settings
from luman.server.db.session import Sessions
from tests.support import FakeClock, bearer, register

SECRET_B = "b" * 32
SECRET_C = "c" * 32


def _production(tmp_path: Path, **env: str) -> dict[str, str]:
    return {
        "LUMAN_DATA_DIR": str(tmp_path),
        "LUMAN_ENV": "production",
        "JWT_REFRESH_SECRET": SECRET_B,
        "SIGNING_KEY_SECRET": SECRET_C,
        "SMTP_URL": "smtp://127.0.0.1:25",
        "PUBLIC_URL": "https://id.example.com",
        **env,
    }


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_production_with_signing_keys_needs_no_jwt_secret(tmp_path: Path, algorithm: str) -> None:
    settings = Settings.from_env(_production(tmp_path, JWT_ALGORITHM=algorithm))
    assert settings.jwt_secret == ""
    assert not (tmp_path / "dev-secrets.json").exists()  # nothing generated in production


def test_production_with_hs256_requires_jwt_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^JWT_SECRET is required .*JWT_ALGORITHM=HS256"):
        Settings.from_env(_production(tmp_path, JWT_ALGORITHM="HS256"))
    settings = Settings.from_env(_production(tmp_path, JWT_ALGORITHM="HS256", JWT_SECRET="a" * 32))
    assert settings.jwt_secret == "a" * 32


def test_a_jwt_secret_given_anyway_must_still_be_long(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^JWT_SECRET must be at least 32 bytes"):
        Settings.from_env(_production(tmp_path, JWT_SECRET="short"))


def test_a_server_without_jwt_secret_signs_verifies_and_refreshes(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    without = dataclasses.replace(settings, jwt_secret="")
    app = build_server(without, sessions, clock=clock, hasher=hasher)
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            auth = auth_service_pb2_grpc.AuthServiceStub(channel)
            tokens = register(auth).tokens
            auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(tokens.access_token))
            renewed = auth.RefreshToken(
                auth_service_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token)
            ).tokens
            auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(renewed.access_token))
    finally:
        app.stop(None)
