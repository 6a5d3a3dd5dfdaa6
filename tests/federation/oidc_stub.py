"""A minimal OpenID Connect issuer on 127.0.0.1:<port>, for the adapter's edge cases.

Discovery (OIDC Discovery 1.0 §4), a JWK Set, an authorization endpoint that approves at once,
a token endpoint (authorization code + PKCE S256, client_secret_basic or _post) and an optional
userinfo endpoint. ID tokens are signed by PyJWT with keys `cryptography` makes; the test bends
them through `claims` (override or, with None, remove a claim), `forge` (build the token itself:
HS256, alg none, a tampered signature, an unpublished key) and `rotate_key()`.

The end-to-end tests use a certified provider (npm oidc-provider); this stub is only for what
a real provider will not do on request.

    with OidcStub(clock=clock) as stub:
        location = stub.approve(adapter.authorization_url(...))   # ?code=…&state=…
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import http.server
import json
import secrets
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclasses.dataclass
class StubKey:
    kid: str
    alg: str  # RS256, PS256, ES256 or EdDSA
    private: SigningKey
    publish_alg: bool = True  # put "alg" in the published JWK

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        jwk |= {"kid": self.kid, "use": "sig"}
        if self.publish_alg:
            jwk["alg"] = self.alg
        return jwk


@functools.cache
def _first_rsa_key() -> rsa.RSAPrivateKey:
    # Every stub starts with this one (RSA key generation is the slow part of a test); each
    # stub's issuer differs, so sharing it lets no token cross between tests.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_key(alg: str = "RS256", *, publish_alg: bool = True) -> StubKey:
    private: SigningKey
    if alg.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return StubKey(f"key-{secrets.token_hex(4)}", alg, private, publish_alg)


@dataclasses.dataclass
class _Grant:
    redirect_uri: str
    nonce: str
    code_challenge: str
    code_challenge_method: str


class OidcStub:
    """An issuer for one client. The test sets: `subject`, `profile` (claims of every ID
    token), `claims` (overrides; None removes), `forge`, `userinfo` (served, and advertised in
    discovery, when not None), `discovery_overrides` (None removes), `auth_method`, `down`.
    It reads: `jwks_fetches`, `discovery_fetches`, `token_requests`."""

    def __init__(
        self,
        *,
        clock: Callable[[], dt.datetime],
        client_id: str = "oidc-client",
        client_secret: str = "oidc-client-secret-0123456789abcdef",
    ) -> None:
        self.clock = clock
        self.client_id = client_id
        self.client_secret = client_secret
        self.auth_method = "client_secret_basic"
        self.key = StubKey(f"key-{secrets.token_hex(4)}", "RS256", _first_rsa_key())
        self.published: list[StubKey] = [self.key]
        self.subject = "user-1"
        self.profile: dict[str, Any] = {
            "email": "Ada@Example.COM",
            "email_verified": True,
            "name": "Ada Lovelace",
            "preferred_username": "ada",
        }
        self.claims: dict[str, Any] = {}
        self.forge: Callable[[dict[str, Any]], str] | None = None
        self.userinfo: dict[str, Any] | None = None
        self.discovery_overrides: dict[str, Any] = {}
        self.down = False
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.token_requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] = {}
        self._access_tokens: dict[str, str] = {}
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def issuer(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> OidcStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- test hooks ------------------------------------------------------------------------

    def rotate_key(self, alg: str = "RS256", *, publish_alg: bool = True) -> StubKey:
        """Signs with a new key (a new kid) and publishes only it."""
        self.key = new_key(alg, publish_alg=publish_alg)
        self.published = [self.key]
        return self.key

    def sign(self, claims: dict[str, Any], key: StubKey | None = None) -> str:
        key = key or self.key
        return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid})

    def approve(self, authorization_url: str) -> str:
        """What a browser gets from the authorization endpoint: the redirect's Location."""
        answer = httpx.get(authorization_url, follow_redirects=False)
        assert answer.status_code == 302, answer.text
        return answer.headers["location"]

    def id_token_claims(self, nonce: str) -> dict[str, Any]:
        now = int(self.clock().timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.client_id,
            "exp": now + 300,
            "iat": now,
            "nonce": nonce,
            **self.profile,
        }
        for name, value in self.claims.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    # -- endpoints -------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        self.discovery_fetches += 1
        doc: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
            "token_endpoint_auth_methods_supported": [self.auth_method],
            "code_challenge_methods_supported": ["S256"],
        }
        if self.userinfo is not None:
            doc["userinfo_endpoint"] = self.issuer + "/userinfo"
        for name, value in self.discovery_overrides.items():
            if value is None:
                doc.pop(name, None)
            else:
                doc[name] = value
        return doc

    def jwks(self) -> dict[str, Any]:
        self.jwks_fetches += 1
        return {"keys": [key.jwk() for key in self.published]}

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            return _json(400, {"error": "invalid_request"})
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._grants[code] = _Grant(
                redirect_uri=query["redirect_uri"],
                nonce=query.get("nonce", ""),
                code_challenge=query.get("code_challenge", ""),
                code_challenge_method=query.get("code_challenge_method", ""),
            )
        params = urllib.parse.urlencode({"code": code, "state": query.get("state", "")})
        return 302, {"Location": f"{query['redirect_uri']}?{params}"}, b""

    def token(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, str], bytes]:
        self.token_requests.append({**form, "authorization": authorization})
        if self.auth_method == "client_secret_basic":
            scheme, _, encoded = authorization.partition(" ")
            decoded = base64.b64decode(encoded).decode() if scheme == "Basic" else ":"
            client_id, _, secret = (urllib.parse.unquote_plus(p) for p in decoded.partition(":"))
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if (client_id, secret) != (self.client_id, self.client_secret):
            return _json(401, {"error": "invalid_client"})
        if form.get("grant_type") != "authorization_code":
            return _json(400, {"error": "unsupported_grant_type"})
        with self._lock:
            grant = self._grants.pop(form.get("code", ""), None)
        if grant is None or form.get("redirect_uri") != grant.redirect_uri:
            return _json(400, {"error": "invalid_grant", "error_description": "grant not found"})
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant.code_challenge:
            return _json(400, {"error": "invalid_grant", "error_description": "PKCE failed"})
        claims = self.id_token_claims(grant.nonce)
        access_token = secrets.token_urlsafe(24)
        with self._lock:
            self._access_tokens[access_token] = self.subject
        id_token = self.forge(claims) if self.forge else self.sign(claims)
        return _json(
            200,
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            },
        )

    def userinfo_answer(self, authorization: str) -> tuple[int, dict[str, str], bytes]:
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            subject = self._access_tokens.get(token) if scheme == "Bearer" else None
        if subject is None or self.userinfo is None:
            return _json(401, {"error": "invalid_token"})
        return _json(200, {"sub": subject, **self.userinfo})


def tampered(token: str) -> str:
    """`token` with another subject in its payload and its original signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _json(status: int, body: object) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stub: OidcStub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stub = stub


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        stub = self.server.stub
        parts = urllib.parse.urlsplit(self.path)
        if stub.down:
            self._answer(503, {"Content-Type": "text/plain"}, b"down")
        elif parts.path == "/.well-known/openid-configuration":
            self._answer(*_json(200, stub.discovery()))
        elif parts.path == "/jwks":
            self._answer(*_json(200, stub.jwks()))
        elif parts.path == "/authorize":
            self._answer(*stub.authorize(dict(urllib.parse.parse_qsl(parts.query))))
        elif parts.path == "/userinfo":
            self._answer(*stub.userinfo_answer(self.headers.get("Authorization", "")))
        else:
            self._answer(404, {"Content-Type": "text/plain"}, b"not found")

    def do_POST(self) -> None:
        stub = self.server.stub
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        if stub.down:
            self._answer(503, {"Content-Type": "text/plain"}, b"down")
        elif self.path == "/token":
            self._answer(*stub.token(form, self.headers.get("Authorization", "")))
        else:
            self._answer(404, {"Content-Type": "text/plain"}, b"not found")

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass
