"""GET /.well-known/jwks.json: the RFC 7517 shape, HTTP caching, and offline verification of
Luman access tokens by an independent JOSE library (joserfc) that sees only the published set.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from luman.server.app import App, build_server
from luman.server.auth.key_ring import JWKS_MAX_AGE_SECONDS, PUBLISH_AHEAD
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.gateway import build_gateway
from tests.gateway.helpers import bearer, register
from tests.support import FakeClock

JWKS = "/.well-known/jwks.json"
# joserfc warns that RFC 9864 (2025) deprecates the polymorphic "EdDSA" name in favour of
# "Ed25519". EdDSA is what PyJWT, jose (Node) and every JWKS consumer Luman targets accept today.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")


def _offline_claims(
    jwks: dict[str, Any], token: str, algorithm: str, clock: FakeClock
) -> dict[str, Any]:
    """Verify `token` as a relying service would: with the published set only (and the test's
    clock for exp)."""
    key_set = KeySet.import_key_set(jwks)  # type: ignore[arg-type]  # a parsed JWK Set
    decoded = jose_jwt.decode(token, key_set, algorithms=[algorithm])
    jose_jwt.JWTClaimsRegistry(
        now=int(clock().timestamp()),
        iss={"essential": True, "value": "luman"},
        aud={"essential": True, "value": "luman-api"},
        sub={"essential": True},
    ).validate(decoded.claims)
    return decoded.claims


def test_jwks_is_an_rfc_7517_key_set_with_cache_headers(http: httpx.Client, app: App) -> None:
    response = http.get(JWKS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == f"public, max-age={JWKS_MAX_AGE_SECONDS}"
    assert response.headers["etag"].startswith('"')
    assert app.keys is not None
    active = app.keys.signing_key()
    assert response.json() == {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": active.public_jwk["x"],
                "kid": active.kid,
                "alg": "EdDSA",
                "use": "sig",
            }
        ]
    }


def test_jwks_answers_a_matching_if_none_match_with_304(http: httpx.Client, app: App) -> None:
    first = http.get(JWKS)
    tag = first.headers["etag"]
    for if_none_match in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        again = http.get(JWKS, headers={"if-none-match": if_none_match})
        assert again.status_code == 304, if_none_match
        assert again.content == b""
        assert again.headers["etag"] == tag
        assert again.headers["cache-control"] == first.headers["cache-control"]
        assert "content-length" not in again.headers
    assert http.get(JWKS, headers={"if-none-match": '"stale"'}).status_code == 200
    # A rotation changes the set, so the old tag no longer matches.
    assert app.keys is not None
    app.keys.rotate()
    changed = http.get(JWKS, headers={"if-none-match": tag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != tag
    assert len(changed.json()["keys"]) == 2


def test_an_independent_library_verifies_tokens_before_and_after_a_rotation(
    http: httpx.Client, app: App, clock: FakeClock
) -> None:
    before = register(http)
    token = before["tokens"]["accessToken"]
    claims = _offline_claims(http.get(JWKS).json(), token, "EdDSA", clock)
    assert claims["sub"] == before["user"]["id"]
    assert claims["typ"] == "access"

    assert app.keys is not None
    app.keys.rotate()
    clock.advance(seconds=PUBLISH_AHEAD.total_seconds())
    after = register(http)
    new_token = after["tokens"]["accessToken"]
    jwks = http.get(JWKS).json()
    assert [key["kid"] for key in jwks["keys"]] == [app.keys.signing_key().kid, claims_kid(token)]
    assert claims_kid(new_token) != claims_kid(token)
    # Both verify offline against the one set; the server agrees.
    assert _offline_claims(jwks, new_token, "EdDSA", clock)["sub"] == after["user"]["id"]
    assert _offline_claims(jwks, token, "EdDSA", clock)["sub"] == before["user"]["id"]
    assert http.get("/auth/me", headers=bearer(new_token)).status_code == 200
    # A set without the token's key does not verify it: the check above is a real one.
    only_new = {"keys": [k for k in jwks["keys"] if k["kid"] == claims_kid(new_token)]}
    with pytest.raises(JoseError):
        _offline_claims(only_new, token, "EdDSA", clock)


def claims_kid(token: str) -> str:
    from joserfc import jws

    kid: str = jws.extract_compact(token.encode()).protected["kid"]
    return kid


StartGateway = Callable[..., httpx.Client]


@pytest.fixture
def start_gateway(
    gateway_settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[StartGateway]:
    """A server and its gateway with settings changed as asked."""
    with contextlib.ExitStack() as stack:

        def start(**changes: Any) -> httpx.Client:
            settings = dataclasses.replace(gateway_settings, **changes)
            app = build_server(settings, sessions, clock=clock, hasher=hasher)
            app.start()
            stack.callback(app.stop, None)
            gateway = build_gateway(settings, sessions, app)
            gateway.start()
            stack.callback(gateway.stop, None)
            return stack.enter_context(
                httpx.Client(
                    base_url=f"http://127.0.0.1:{gateway.port}", timeout=10.0, trust_env=False
                )
            )

        yield start


def test_es256_tokens_verify_offline(start_gateway: StartGateway, clock: FakeClock) -> None:
    http = start_gateway(jwt_algorithm="ES256")
    (key,) = http.get(JWKS).json()["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    signed_up = register(http)
    claims = _offline_claims(
        http.get(JWKS).json(), signed_up["tokens"]["accessToken"], "ES256", clock
    )
    assert claims["sub"] == signed_up["user"]["id"]


def test_hs256_publishes_an_empty_key_set(start_gateway: StartGateway) -> None:
    http = start_gateway(jwt_algorithm="HS256")
    response = http.get(JWKS)
    assert response.status_code == 200
    assert response.json() == {"keys": []}
