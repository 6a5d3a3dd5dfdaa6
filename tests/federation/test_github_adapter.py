"""The GitHub adapter against a loopback fake of GitHub's documented endpoints."""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest

from luman.server.federation.adapters import (
    Adapter,
    ProviderIdentity,
    ProviderRejectedError,
    ProviderUnavailableError,
    build_adapters,
    code_challenge,
)
from luman.server.federation.http import new_client
from luman.server.federation.providers import ProviderConfig
from tests.federation.github_fake import GitHubEmail, GitHubFake, GitHubUser
from tests.support import FakeClock

CALLBACK = "http://127.0.0.1:8080/auth/providers/github/callback"
VERIFIER = "v" * 43 + "-._~0123456789"
STATE = "state-123"


@pytest.fixture
def fake() -> Iterator[GitHubFake]:
    with GitHubFake(callback_url=CALLBACK) as fake:
        fake.add_user(
            GitHubUser(
                id=583231,
                login="octocat",
                name="The Octocat",
                emails=[
                    GitHubEmail("octocat@github.com", primary=True, verified=True),
                    GitHubEmail("583231+octocat@users.noreply.github.com", verified=True),
                ],
            )
        )
        yield fake


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with new_client() as client:
        yield client


def _adapter(fake: GitHubFake, client: httpx.Client, **changes: str) -> Adapter:
    config = ProviderConfig(
        id="github",
        kind="github",
        display_name="GitHub",
        client_id=changes.get("client_id", fake.client_id),
        client_secret=changes.get("client_secret", fake.client_secret),
        github_url=changes.get("github_url", fake.url),
        github_api_url=changes.get("github_api_url", fake.api_url),
        scopes=("read:user", "user:email"),
    )
    return build_adapters([config], clock=FakeClock(), client=client)["github"]


def _sign_in(fake: GitHubFake, adapter: Adapter, *, redirect_uri: str = CALLBACK) -> str:
    """The browser's part: returns the code GitHub hands the callback."""
    url = adapter.authorization_url(
        redirect_uri=redirect_uri,
        state=STATE,
        nonce="unused",
        code_challenge=code_challenge(VERIFIER),
    )
    location = urllib.parse.urlsplit(fake.approve(url))
    query = dict(urllib.parse.parse_qsl(location.query))
    assert query.get("state") == STATE
    return query["code"]


def test_github_authorization_url_parameters(fake: GitHubFake, client: httpx.Client) -> None:
    adapter = _adapter(fake, client)
    url = adapter.authorization_url(
        redirect_uri=CALLBACK, state=STATE, nonce="n", code_challenge=code_challenge(VERIFIER)
    )
    assert url.startswith(fake.url + "/login/oauth/authorize?")
    fake.approve(url)
    assert fake.last_authorize_query == {
        "client_id": fake.client_id,
        "redirect_uri": CALLBACK,
        "scope": "read:user user:email",
        "state": STATE,
        "code_challenge": code_challenge(VERIFIER),
        "code_challenge_method": "S256",
    }


def test_github_identity_happy_path(fake: GitHubFake, client: httpx.Client) -> None:
    adapter = _adapter(fake, client)
    code = _sign_in(fake, adapter)
    identity = adapter.identity(
        code=code, redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce="unused"
    )
    assert identity == ProviderIdentity(
        subject="583231",
        email="octocat@github.com",
        email_verified=True,
        name="The Octocat",
        username="octocat",
    )
    (request,) = fake.token_requests
    assert request["code_verifier"] == VERIFIER
    assert request["redirect_uri"] == CALLBACK


def test_github_name_defaults_to_login(fake: GitHubFake, client: httpx.Client) -> None:
    fake.users["octocat"].name = None
    adapter = _adapter(fake, client)
    identity = adapter.identity(
        code=_sign_in(fake, adapter), redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce=""
    )
    assert identity.name == "octocat"


def test_github_code_works_once(fake: GitHubFake, client: httpx.Client) -> None:
    adapter = _adapter(fake, client)
    code = _sign_in(fake, adapter)
    adapter.identity(code=code, redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce="")
    with pytest.raises(ProviderRejectedError) as raised:
        adapter.identity(code=code, redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce="")
    assert raised.value.reason == "CODE_REJECTED"
    assert "bad_verification_code" in raised.value.detail
    assert code not in raised.value.detail


def test_github_bad_code_is_code_rejected(fake: GitHubFake, client: httpx.Client) -> None:
    adapter = _adapter(fake, client)
    with pytest.raises(ProviderRejectedError) as raised:
        adapter.identity(code="0" * 20, redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce="")
    assert raised.value.reason == "CODE_REJECTED"


def test_github_pkce_mismatch_is_code_rejected(fake: GitHubFake, client: httpx.Client) -> None:
    adapter = _adapter(fake, client)
    code = _sign_in(fake, adapter)
    with pytest.raises(ProviderRejectedError) as raised:
        adapter.identity(code=code, redirect_uri=CALLBACK, code_verifier="w" * 43, nonce="")
    assert raised.value.reason == "CODE_REJECTED"


def test_github_wrong_client_secret_is_code_rejected(
    fake: GitHubFake, client: httpx.Client
) -> None:
    adapter = _adapter(fake, client, client_secret="not-the-secret")
    code = _sign_in(fake, adapter)
    with pytest.raises(ProviderRejectedError) as raised:
        adapter.identity(code=code, redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce="")
    assert raised.value.reason == "CODE_REJECTED"
    assert "incorrect_client_credentials" in raised.value.detail
    assert "not-the-secret" not in str(raised.value)


def test_github_redirect_mismatch_at_authorize(fake: GitHubFake, client: httpx.Client) -> None:
    adapter = _adapter(fake, client)
    url = adapter.authorization_url(
        redirect_uri="http://127.0.0.1:9999/elsewhere",
        state=STATE,
        nonce="",
        code_challenge=code_challenge(VERIFIER),
    )
    location = urllib.parse.urlsplit(fake.approve(url))
    query = dict(urllib.parse.parse_qsl(location.query))
    # GitHub sends the browser to the registered callback with the error.
    assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
    assert query["error"] == "redirect_uri_mismatch"
    assert query["state"] == STATE


def test_github_redirect_mismatch_at_exchange_is_code_rejected(
    fake: GitHubFake, client: httpx.Client
) -> None:
    adapter = _adapter(fake, client)
    code = _sign_in(fake, adapter)
    with pytest.raises(ProviderRejectedError) as raised:
        adapter.identity(
            code=code, redirect_uri=CALLBACK + "/other", code_verifier=VERIFIER, nonce=""
        )
    assert raised.value.reason == "CODE_REJECTED"
    assert "redirect_uri_mismatch" in raised.value.detail


def test_github_cancel_redirects_with_access_denied(fake: GitHubFake, client: httpx.Client) -> None:
    adapter = _adapter(fake, client)
    url = adapter.authorization_url(
        redirect_uri=CALLBACK, state=STATE, nonce="", code_challenge=code_challenge(VERIFIER)
    )
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(fake.cancel(url)).query))
    assert query["error"] == "access_denied"
    assert query["state"] == STATE


@pytest.mark.parametrize(
    ("emails", "expected"),
    [
        # The primary, unverified, and a verified other: the verified one.
        (
            [
                GitHubEmail("Primary@Example.com", primary=True, verified=False),
                GitHubEmail("583231+octocat@users.noreply.github.com", verified=True),
                GitHubEmail("Other@Example.com", verified=True),
            ],
            ("other@example.com", True),
        ),
        # None verified: the primary, unverified.
        (
            [
                GitHubEmail("other@example.com", verified=False),
                GitHubEmail("primary@example.com", primary=True, verified=False),
            ],
            ("primary@example.com", False),
        ),
        # No primary, none verified; no addresses at all.
        ([GitHubEmail("other@example.com", verified=False)], ("", False)),
        ([], ("", False)),
    ],
)
def test_github_email_choice(
    fake: GitHubFake,
    client: httpx.Client,
    emails: list[GitHubEmail],
    expected: tuple[str, bool],
) -> None:
    fake.users["octocat"].emails = emails
    adapter = _adapter(fake, client)
    identity = adapter.identity(
        code=_sign_in(fake, adapter), redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce=""
    )
    assert (identity.email, identity.email_verified) == expected


def test_github_down_is_unavailable(fake: GitHubFake, client: httpx.Client) -> None:
    adapter = _adapter(fake, client)
    code = _sign_in(fake, adapter)
    fake.down = True
    with pytest.raises(ProviderUnavailableError, match="HTTP 503"):
        adapter.identity(code=code, redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce="")


def test_github_closed_port_is_unavailable(fake: GitHubFake, client: httpx.Client) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    adapter = _adapter(fake, client, github_url=closed)
    with pytest.raises(ProviderUnavailableError, match="ConnectError"):
        adapter.identity(code="x", redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce="")


def test_github_api_answering_404_is_response_invalid(
    fake: GitHubFake, client: httpx.Client
) -> None:
    adapter = _adapter(fake, client, github_api_url=fake.url + "/api/v3/elsewhere")
    with pytest.raises(ProviderRejectedError) as raised:
        adapter.identity(
            code=_sign_in(fake, adapter), redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce=""
        )
    assert raised.value.reason == "RESPONSE_INVALID"
