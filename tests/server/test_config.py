from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from luman.server.config import ConfigError, Settings

SECRET_A = "a" * 32
SECRET_B = "b" * 32


def test_defaults_match_the_seed(tmp_path: Path) -> None:
    settings = Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path)})
    assert settings.port == 3000
    assert settings.jwt_expires_in == 15 * 60
    assert settings.jwt_refresh_expires_in == 7 * 86400
    assert settings.rate_limit_window_ms == 900_000
    assert settings.rate_limit_max_requests == 100
    assert settings.bcrypt_rounds == 10
    assert settings.bcrypt_max_waiting == 128
    assert settings.embedded_database
    assert settings.database_url == f"sqlite:///{tmp_path / 'luman.db'}"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("15m", 900), ("7d", 604800), ("30s", 30), ("2h", 7200), ("90", 90), ("1500ms", 1.5)],
)
def test_durations_accept_the_seed_forms(tmp_path: Path, value: str, seconds: float) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path), "JWT_EXPIRES_IN": value}
    assert Settings.from_env(env).jwt_expires_in == seconds


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "http"),
        ("PORT", "70000"),
        ("JWT_EXPIRES_IN", "soon"),
        ("JWT_EXPIRES_IN", "0m"),
        ("BCRYPT_ROUNDS", "3"),
        ("BCRYPT_MAX_WAITING", "-1"),
        ("RATE_LIMIT_MAX_REQUESTS", "-1"),
        ("LUMAN_ENV", "staging"),
        ("LOG_LEVEL", "loud"),
        ("PUBLIC_URL", "login.example.com"),
        ("PUBLIC_URL", "ftp://login.example.com"),
        # A path prefix would break the device page's /device links and cookie paths.
        ("PUBLIC_URL", "https://example.com/luman"),
        ("DEVICE_CODE_LIFETIME", "2h"),
        ("DEVICE_POLL_INTERVAL", "0"),
    ],
)
def test_bad_value_names_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path), name: value})
    assert str(caught.value).startswith(name)
    assert "\n" not in str(caught.value)


def test_waiting_sign_ins_must_leave_other_calls_room(tmp_path: Path) -> None:
    env = {
        "LUMAN_DATA_DIR": str(tmp_path),
        "GRPC_MAX_WORKERS": "16",
        "GRPC_MAX_CONCURRENT_RPCS": "100",
    }
    assert Settings.from_env({**env, "BCRYPT_MAX_WAITING": "84"}).bcrypt_max_waiting == 84
    with pytest.raises(ConfigError, match=r"^BCRYPT_MAX_WAITING \(85\) plus GRPC_MAX_WORKERS"):
        Settings.from_env({**env, "BCRYPT_MAX_WAITING": "85"})


def test_production_requires_both_secrets(tmp_path: Path) -> None:
    # HS256: JWT_SECRET signs access tokens (tests/server/test_jwt_secret_config.py: EdDSA).
    hs256 = {"LUMAN_DATA_DIR": str(tmp_path), "LUMAN_ENV": "production", "JWT_ALGORITHM": "HS256"}
    with pytest.raises(ConfigError, match=r"^JWT_SECRET is required"):
        Settings.from_env(hs256)
    with pytest.raises(ConfigError, match=r"^JWT_REFRESH_SECRET is required"):
        Settings.from_env(hs256 | {"JWT_SECRET": SECRET_A})
    assert not (tmp_path / "dev-secrets.json").exists()


def test_production_rejects_short_secrets(tmp_path: Path) -> None:
    env = {
        "LUMAN_DATA_DIR": str(tmp_path),
        "LUMAN_ENV": "production",
        "JWT_SECRET": "x" * 31,
        "JWT_REFRESH_SECRET": SECRET_B,
    }
    with pytest.raises(ConfigError, match=r"^JWT_SECRET must be at least 32 bytes"):
        Settings.from_env(env)


def test_production_accepts_explicit_secrets(tmp_path: Path) -> None:
    env = {
        "LUMAN_DATA_DIR": str(tmp_path),
        "LUMAN_ENV": "production",
        "JWT_SECRET": SECRET_A,
        "JWT_REFRESH_SECRET": SECRET_B,
        "SIGNING_KEY_SECRET": SECRET_A + "-signing",
        "SMTP_URL": "smtp://127.0.0.1:25",
        "PUBLIC_URL": "https://id.example.com",
    }
    settings = Settings.from_env(env)
    assert (settings.jwt_secret, settings.jwt_refresh_secret) == (SECRET_A, SECRET_B)
    assert settings.signing_key_secret == SECRET_A + "-signing"


def test_refresh_secret_must_differ_from_access_secret(tmp_path: Path) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path), "JWT_SECRET": SECRET_A, "JWT_REFRESH_SECRET": SECRET_A}
    with pytest.raises(ConfigError, match=r"^JWT_REFRESH_SECRET must differ"):
        Settings.from_env(env)


def test_development_secrets_are_generated_private_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path)})
    path = tmp_path / "dev-secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.jwt_secret) >= 32
    assert first.jwt_secret != first.jwt_refresh_secret
    assert "generated development secrets" in caplog.text
    assert first.jwt_secret not in caplog.text
    second = Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path)})
    assert (second.jwt_secret, second.jwt_refresh_secret) == (
        first.jwt_secret,
        first.jwt_refresh_secret,
    )
    assert json.loads(path.read_text())["jwt_secret"] == first.jwt_secret


def test_dotenv_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(f"PORT=4100\nHTTP_PORT=8100\nLUMAN_DATA_DIR={tmp_path}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HTTP_PORT", "8200")
    monkeypatch.delenv("PORT", raising=False)
    settings = Settings.from_env()
    assert settings.port == 4100
    assert settings.http_port == 8200


ROOT = Path(__file__).resolve().parents[2]


def _example_values() -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v or "" for k, v in dotenv_values(ROOT / ".env.example").items()}


def test_env_example_documents_exactly_the_variables_read() -> None:
    import re

    source = (ROOT / "server/luman/server/config.py").read_text()
    read = set(re.findall(r'r\.\w+\(\s*"([A-Z0-9_]+)"', source))
    # The OTEL_* variables, which tracing.py reads (README "Tracing").
    tracing = (ROOT / "server/luman/server/tracing.py").read_text()
    read |= set(re.findall(r'"(OTEL_[A-Z0-9_]+)"', tracing))
    # IDENTITY_PROVIDERS, which federation/providers.py reads (with the IDP_<ID>_* it names).
    providers = (ROOT / "server/luman/server/federation/providers.py").read_text()
    read |= set(re.findall(r'env\.get\("([A-Z0-9_]+)"', providers))
    assert read == set(_example_values())


def test_env_example_values_are_the_defaults(tmp_path: Path) -> None:
    example = {**_example_values(), "LUMAN_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(example) == Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path)})


def test_token_cache_ttl_defaults_to_30s_and_0_turns_it_off(tmp_path: Path) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(env).token_cache_ttl == 30
    assert Settings.from_env(env).token_cache_max_entries == 10_000
    for off in ("0", "0s", "0ms"):
        assert Settings.from_env({**env, "TOKEN_CACHE_TTL": off}).token_cache_ttl == 0
    assert Settings.from_env({**env, "TOKEN_CACHE_TTL": "1500ms"}).token_cache_ttl == 1.5
    assert Settings.from_env({**env, "TOKEN_CACHE_TTL": "1h"}).token_cache_ttl == 3600


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOKEN_CACHE_TTL", "-1s"),
        ("TOKEN_CACHE_TTL", "soon"),
        ("TOKEN_CACHE_TTL", "2h"),  # a revocation elsewhere would go unnoticed that long
        ("TOKEN_CACHE_MAX_ENTRIES", "0"),
        ("JWT_EXPIRES_IN", "0"),  # 0 is "off" for the cache only
    ],
)
def test_bad_token_cache_setting_names_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path), name: value})
    assert str(caught.value).startswith(name)


def test_identity_providers_are_read_and_their_errors_name_the_variable(tmp_path: Path) -> None:
    env = {
        "LUMAN_DATA_DIR": str(tmp_path),
        "IDENTITY_PROVIDERS": "github",
        "IDP_GITHUB_CLIENT_ID": "Ov23li",
        "IDP_GITHUB_CLIENT_SECRET": "s3cret-value",
    }
    (github,) = Settings.from_env(env).identity_providers
    assert (github.id, github.kind, github.display_name) == ("github", "github", "GitHub")
    assert "s3cret-value" not in repr(Settings.from_env(env))
    with pytest.raises(ConfigError, match="IDP_GITHUB_CLIENT_ID"):
        Settings.from_env({**env, "IDP_GITHUB_CLIENT_ID": ""})


def test_password_login_off_needs_a_provider(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PASSWORD_LOGIN=false needs IDENTITY_PROVIDERS"):
        Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path), "PASSWORD_LOGIN": "false"})
