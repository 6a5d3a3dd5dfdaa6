"""The test OpenID provider (tests/federation/oidc_provider.py) used as a relying party would:
headless Chromium signs in through its login and consent pages, a loopback HTTP server
receives the redirect, httpx redeems the code (client_secret_basic + PKCE) and PyJWT verifies
the id_token against the provider's JWKS. Then its failure modes: a tampered id_token, the
user cancelling, the provider being down.

No database: these tests check the harness the federation tests stand on.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser_support import launched_chromium, loopback_context
from tests.federation.oidc_provider import OidcClient, OidcProvider, running_oidc_provider

CLIENT_ID = "luman-test"
CLIENT_SECRET = secrets.token_urlsafe(24)
CALLBACK_PATH = "/callback"
TIMEOUT_MS = 15_000


class _Callback(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!DOCTYPE html><title>callback</title><p>received</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows stderr of failing tests


@pytest.fixture(scope="module")
def redirect_uri() -> Iterator[str]:
    """A relying party's callback on a free loopback port: it answers every GET with 200."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{CALLBACK_PATH}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def provider(redirect_uri: str) -> Iterator[OidcProvider]:
    with running_oidc_provider([OidcClient(CLIENT_ID, CLIENT_SECRET, [redirect_uri])]) as op:
        yield op


@pytest.fixture(scope="module")
def discovery(provider: OidcProvider) -> dict[str, Any]:
    with httpx.Client(trust_env=False, timeout=10) as http:
        response = http.get(provider.discovery_url)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
    return document


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = loopback_context(browser)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


class Flow:
    """One authorization request's secrets: state, nonce and the PKCE verifier."""

    def __init__(self) -> None:
        self.state = secrets.token_urlsafe(16)
        self.nonce = secrets.token_urlsafe(16)
        self.verifier = secrets.token_urlsafe(48)

    def authorize_url(self, discovery: dict[str, Any], redirect_uri: str) -> str:
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": redirect_uri,
                "scope": "openid email profile",
                "state": self.state,
                "nonce": self.nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{discovery['authorization_endpoint']}?{query}"


def _callback_query(page: Page, redirect_uri: str) -> dict[str, str]:
    page.wait_for_url(f"{redirect_uri}?**")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).query))


def _sign_in(page: Page, login: str) -> None:
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill("any password")
    page.get_by_role("button", name="Sign in").click()


def _consent(page: Page) -> None:
    expect(page.get_by_role("heading", name="Authorize")).to_be_visible()
    page.get_by_role("button", name="Continue").click()


def _redeem(discovery: dict[str, Any], redirect_uri: str, flow: Flow, code: str) -> dict[str, Any]:
    with httpx.Client(trust_env=False, timeout=10) as http:
        response = http.post(
            discovery["token_endpoint"],
            auth=(CLIENT_ID, CLIENT_SECRET),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": flow.verifier,
            },
        )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def _verify(discovery: dict[str, Any], id_token: str) -> dict[str, Any]:
    """What a relying party does: the key by `kid` from the JWKS, RS256 only, iss and aud."""
    with httpx.Client(trust_env=False, timeout=10) as http:
        jwks = http.get(discovery["jwks_uri"]).raise_for_status().json()
    kid = jwt.get_unverified_header(id_token)["kid"]
    assert isinstance(kid, str)
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims: dict[str, Any] = jwt.decode(
        id_token,
        key=key,
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer=discovery["issuer"],
        options={"require": ["exp", "iat", "sub", "nonce"]},
    )
    return claims


def test_sign_in_through_the_browser_and_verify_the_id_token(
    page: Page, provider: OidcProvider, discovery: dict[str, Any], redirect_uri: str
) -> None:
    assert discovery["issuer"] == provider.issuer
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    flow = Flow()

    page.goto(flow.authorize_url(discovery, redirect_uri))
    _sign_in(page, "Alice.Smith@Example.TEST")
    _consent(page)
    query = _callback_query(page, redirect_uri)

    assert query["state"] == flow.state
    assert query["iss"] == provider.issuer
    tokens = _redeem(discovery, redirect_uri, flow, query["code"])
    assert tokens["token_type"].lower() == "bearer"
    assert "refresh_token" not in tokens
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "RS256"
    claims = _verify(discovery, tokens["id_token"])
    assert claims["nonce"] == flow.nonce
    assert claims["sub"] == "sub-" + hashlib.sha256(b"Alice.Smith@Example.TEST").hexdigest()[:16]
    assert claims["email"] == "alice.smith@example.test"
    assert claims["email_verified"] is True
    assert claims["name"] == "Test Alice.Smith"
    assert claims["preferred_username"] == "Alice.Smith@Example.TEST"

    # The code is single-use.
    with httpx.Client(trust_env=False, timeout=10) as http:
        again = http.post(
            discovery["token_endpoint"],
            auth=(CLIENT_ID, CLIENT_SECRET),
            data={
                "grant_type": "authorization_code",
                "code": query["code"],
                "redirect_uri": redirect_uri,
                "code_verifier": flow.verifier,
            },
        )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_tampered_tokens_cancelled_sign_ins_and_an_outage(
    page: Page, provider: OidcProvider, discovery: dict[str, Any], redirect_uri: str
) -> None:
    # Cancel on the login page.
    cancelled = Flow()
    page.goto(cancelled.authorize_url(discovery, redirect_uri))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_role("link", name="Cancel").click()
    query = _callback_query(page, redirect_uri)
    assert (query["error"], query["state"]) == ("access_denied", cancelled.state)

    # Cancel on the consent page, after signing in.
    cancelled = Flow()
    page.goto(cancelled.authorize_url(discovery, redirect_uri))
    _sign_in(page, "unverified-bob")
    expect(page.get_by_role("heading", name="Authorize")).to_be_visible()
    page.get_by_role("link", name="Cancel").click()
    query = _callback_query(page, redirect_uri)
    assert (query["error"], query["state"]) == ("access_denied", cancelled.state)

    # A broken signature, then an unsigned token: neither verifies. The session stays signed
    # in, so only the consent page shows the first time.
    try:
        for mode, error in (
            ("signature", jwt.InvalidSignatureError),
            ("none", jwt.InvalidAlgorithmError),
        ):
            provider.tamper(mode)
            flow = Flow()
            page.goto(flow.authorize_url(discovery, redirect_uri))
            if mode == "signature":
                _consent(page)
            code = _callback_query(page, redirect_uri)["code"]
            tokens = _redeem(discovery, redirect_uri, flow, code)
            unverified = jwt.decode(tokens["id_token"], options={"verify_signature": False})
            assert unverified["email"] == "unverified-bob@example.test"
            assert unverified["email_verified"] is False
            with pytest.raises(error):
                _verify(discovery, tokens["id_token"])
    finally:
        provider.tamper(None)

    # Down: every endpoint answers 503 until it is back.
    with httpx.Client(trust_env=False, timeout=10) as http:
        provider.set_down(True)
        try:
            assert http.get(provider.discovery_url).status_code == 503
            assert http.post(discovery["token_endpoint"]).status_code == 503
        finally:
            provider.set_down(False)
        assert http.get(provider.discovery_url).status_code == 200
