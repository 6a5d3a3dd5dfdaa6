from __future__ import annotations

from pathlib import Path

import pytest

from luman.server.federation.providers import (
    ProviderConfig,
    ProviderConfigError,
    providers_from_env,
)


def test_providers_unset_or_empty_is_none() -> None:
    assert providers_from_env({}) == ()
    assert providers_from_env({"IDENTITY_PROVIDERS": " "}) == ()


def test_providers_defaults_per_kind() -> None:
    env = {
        "IDENTITY_PROVIDERS": "github, google,gitlab,corp",
        "IDP_GITHUB_CLIENT_ID": "gh-id",
        "IDP_GITHUB_CLIENT_SECRET": "gh-secret",
        "IDP_GOOGLE_CLIENT_ID": "g-id",
        "IDP_GOOGLE_CLIENT_SECRET": "g-secret",
        "IDP_GITLAB_CLIENT_ID": "gl-id",
        "IDP_GITLAB_CLIENT_SECRET": "gl-secret",
        "IDP_CORP_CLIENT_ID": "c-id",
        "IDP_CORP_CLIENT_SECRET": "c-secret",
        "IDP_CORP_ISSUER": "https://sso.corp.example/realms/main",
    }
    github, google, gitlab, corp = providers_from_env(env)
    assert github == ProviderConfig(
        id="github",
        kind="github",
        display_name="GitHub",
        client_id="gh-id",
        client_secret="gh-secret",
        scopes=("read:user", "user:email"),
    )
    assert github.github_url == "https://github.com"
    assert github.github_api_url == "https://api.github.com"
    assert (google.kind, google.display_name, google.issuer) == (
        "google",
        "Google",
        "https://accounts.google.com",
    )
    assert (gitlab.kind, gitlab.display_name, gitlab.issuer) == (
        "gitlab",
        "GitLab",
        "https://gitlab.com",
    )
    assert (corp.kind, corp.display_name, corp.issuer) == (
        "oidc",
        "corp",
        "https://sso.corp.example/realms/main",
    )
    for oidc in (google, gitlab, corp):
        assert oidc.scopes == ("openid", "email", "profile")
        assert oidc.allowed_domains == frozenset()


def test_providers_optional_variables() -> None:
    env = {
        "IDENTITY_PROVIDERS": "acme-sso,ghe",
        "IDP_ACME_SSO_CLIENT_ID": "id",
        "IDP_ACME_SSO_CLIENT_SECRET": "secret",
        "IDP_ACME_SSO_ISSUER": "https://login.acme.example/",
        "IDP_ACME_SSO_NAME": "Acme SSO",
        "IDP_ACME_SSO_SCOPES": "openid,email  groups",
        "IDP_ACME_SSO_ALLOWED_DOMAINS": "Acme.example, @eng.acme.example",
        "IDP_GHE_KIND": "github",
        "IDP_GHE_CLIENT_ID": "id",
        "IDP_GHE_CLIENT_SECRET": "secret",
        "IDP_GHE_GITHUB_URL": "https://ghe.acme.example/",
        "IDP_GHE_GITHUB_API_URL": "https://ghe.acme.example/api/v3/",
    }
    acme, ghe = providers_from_env(env)
    assert acme.display_name == "Acme SSO"
    # Kept exactly: it is compared with the discovery document's issuer.
    assert acme.issuer == "https://login.acme.example/"
    assert acme.scopes == ("openid", "email", "groups")
    assert acme.allowed_domains == frozenset({"acme.example", "eng.acme.example"})
    assert acme.email_domain_allowed("ada@ACME.example")
    assert not acme.email_domain_allowed("ada@evil.example")
    assert not acme.email_domain_allowed("acme.example")
    assert (ghe.kind, ghe.display_name) == ("github", "GitHub")
    assert ghe.github_url == "https://ghe.acme.example"
    assert ghe.github_api_url == "https://ghe.acme.example/api/v3"
    # GITHUB_URL alone: the API is that server's /api/v3, never api.github.com.
    del env["IDP_GHE_GITHUB_API_URL"]
    assert providers_from_env(env)[1].github_api_url == "https://ghe.acme.example/api/v3"


def test_providers_http_allowed_to_loopback_only() -> None:
    base = {"IDENTITY_PROVIDERS": "dev", "IDP_DEV_CLIENT_ID": "i", "IDP_DEV_CLIENT_SECRET": "s"}
    for issuer in ("http://127.0.0.1:9000", "http://localhost:9000/x", "http://[::1]:9000"):
        (dev,) = providers_from_env({**base, "IDP_DEV_ISSUER": issuer})
        assert dev.issuer == issuer
    with pytest.raises(ProviderConfigError, match=r"^IDP_DEV_ISSUER must be https://"):
        providers_from_env({**base, "IDP_DEV_ISSUER": "http://sso.example"})


def test_providers_secret_never_in_repr_or_errors(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("  file-secret-value\n")
    env = {
        "IDENTITY_PROVIDERS": "github",
        "IDP_GITHUB_CLIENT_ID": "gh-id",
        "IDP_GITHUB_CLIENT_SECRET_FILE": str(secret_file),
    }
    (github,) = providers_from_env(env)
    assert github.client_secret == "file-secret-value"
    assert "file-secret-value" not in repr(github)
    assert "client_secret" not in repr(github)

    with pytest.raises(ProviderConfigError) as raised:
        providers_from_env({**env, "IDP_GITHUB_GITHUB_URL": "https://user:hunter2@ghe.example"})
    assert "hunter2" not in str(raised.value)
    assert str(raised.value).startswith("IDP_GITHUB_GITHUB_URL ")


_VALID = {
    "IDENTITY_PROVIDERS": "github,corp",
    "IDP_GITHUB_CLIENT_ID": "gh-id",
    "IDP_GITHUB_CLIENT_SECRET": "gh-secret",
    "IDP_CORP_CLIENT_ID": "c-id",
    "IDP_CORP_CLIENT_SECRET": "c-secret",
    "IDP_CORP_ISSUER": "https://sso.corp.example",
}


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"IDENTITY_PROVIDERS": "GitHub"}, "IDENTITY_PROVIDERS"),
        ({"IDENTITY_PROVIDERS": "github,9lives"}, "IDENTITY_PROVIDERS"),
        ({"IDENTITY_PROVIDERS": "a" * 33}, "IDENTITY_PROVIDERS"),
        ({"IDENTITY_PROVIDERS": "github,corp,github"}, "IDENTITY_PROVIDERS"),
        ({"IDP_CORP_KIND": "saml"}, "IDP_CORP_KIND"),
        ({"IDP_GITHUB_CLIENT_ID": ""}, "IDP_GITHUB_CLIENT_ID"),
        ({"IDP_CORP_CLIENT_SECRET": ""}, "IDP_CORP_CLIENT_SECRET"),
        (
            {"IDP_CORP_CLIENT_SECRET": "", "IDP_CORP_CLIENT_SECRET_FILE": "/nonexistent/secret"},
            "IDP_CORP_CLIENT_SECRET_FILE",
        ),
        ({"IDP_CORP_ISSUER": ""}, "IDP_CORP_ISSUER"),
        ({"IDP_CORP_ISSUER": "http://sso.corp.example"}, "IDP_CORP_ISSUER"),
        ({"IDP_CORP_ISSUER": "https://sso.corp.example?tenant=1"}, "IDP_CORP_ISSUER"),
        ({"IDP_CORP_ISSUER": "https://sso.corp.example#x"}, "IDP_CORP_ISSUER"),
        ({"IDP_CORP_ISSUER": "sso.corp.example"}, "IDP_CORP_ISSUER"),
        ({"IDP_CORP_SCOPES": "email profile"}, "IDP_CORP_SCOPES"),
        ({"IDP_CORP_ALLOWED_DOMAINS": "corp.example,c_x"}, "IDP_CORP_ALLOWED_DOMAINS"),
        ({"IDP_CORP_ALLOWED_DOMAINS": "ada@corp.example"}, "IDP_CORP_ALLOWED_DOMAINS"),
        ({"IDP_CORP_GITHUB_URL": "https://ghe.example"}, "IDP_CORP_GITHUB_URL"),
        ({"IDP_GITHUB_ISSUER": "https://github.com"}, "IDP_GITHUB_ISSUER"),
        ({"IDP_GITHUB_GITHUB_URL": "ftp://ghe.example"}, "IDP_GITHUB_GITHUB_URL"),
        ({"IDP_GITHUB_GITHUB_API_URL": "http://ghe.example/api/v3"}, "IDP_GITHUB_GITHUB_API_URL"),
    ],
)
def test_providers_error_names_the_variable(change: dict[str, str], variable: str) -> None:
    with pytest.raises(ProviderConfigError) as raised:
        providers_from_env({**_VALID, **change})
    assert str(raised.value).startswith(variable), str(raised.value)


def test_providers_secret_and_secret_file_both_set_is_an_error(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s")
    with pytest.raises(ProviderConfigError, match=r"^IDP_CORP_CLIENT_SECRET and "):
        providers_from_env({**_VALID, "IDP_CORP_CLIENT_SECRET_FILE": str(secret_file)})


def test_providers_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(" \n")
    env = {**_VALID, "IDP_CORP_CLIENT_SECRET": "", "IDP_CORP_CLIENT_SECRET_FILE": str(secret_file)}
    with pytest.raises(ProviderConfigError, match=r"^IDP_CORP_CLIENT_SECRET_FILE: .* is empty"):
        providers_from_env(env)
