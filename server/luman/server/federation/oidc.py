"""Sign-in with an OpenID Connect provider (kinds oidc, google and gitlab): the authorization
code flow with PKCE (OIDC Core 1.0 §3.1), discovery (OIDC Discovery 1.0) and ID token
validation with PyJWT.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hmac
import logging
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from luman.server.federation.errors import ProviderRejectedError, ProviderUnavailableError
from luman.server.federation.http import Reply, send, token_error
from luman.server.federation.identity import ProviderIdentity
from luman.server.federation.providers import ProviderConfig, is_loopback

logger = logging.getLogger(__name__)

# Asymmetric algorithms only: an HS* token would be "signed" with our own client secret, and
# alg none with nothing (OIDC Core §10.1; RFC 8725 §3.1).
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
# Clock skew tolerated between us and the provider on exp, iat and nbf.
LEEWAY_SECONDS = 60
DISCOVERY_TTL = dt.timedelta(hours=1)
JWKS_TTL = dt.timedelta(hours=1)
# Google's ID tokens carry either form (https://developers.google.com/identity/openid-connect/openid-connect#validatinganidtoken).
_GOOGLE_ISSUER = "https://accounts.google.com"
_GOOGLE_BARE_ISSUER = "accounts.google.com"


@dataclasses.dataclass(frozen=True)
class _Discovery:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str  # "" when the provider has none
    client_secret_post: bool  # the token endpoint does not take client_secret_basic


@dataclasses.dataclass(frozen=True)
class _KeySet:
    keys: tuple[dict[str, Any], ...]  # the JWK Set's signing keys, as published


class OidcAdapter:
    """One OpenID Connect provider. Thread-safe: the discovery document and JWK Set are cached
    behind a lock (one fetch at a time per provider)."""

    def __init__(
        self,
        config: ProviderConfig,
        *,
        client: httpx.Client,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.config = config
        self._client = client
        self._clock = clock
        self._issuers: tuple[str, ...] = (config.issuer,)
        if config.issuer == _GOOGLE_ISSUER:
            self._issuers += (_GOOGLE_BARE_ISSUER,)
        self._lock = threading.Lock()
        self._discovery: tuple[_Discovery, dt.datetime] | None = None
        self._key_set: tuple[_KeySet, dt.datetime] | None = None
        self._mismatch_logged = False

    def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_challenge: str
    ) -> str:
        endpoint = self._discover().authorization_endpoint
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(self.config.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            },
            quote_via=urllib.parse.quote,
        )
        # RFC 6749 §3.1: the endpoint may carry a query of its own, which is kept.
        return endpoint + ("&" if urllib.parse.urlsplit(endpoint).query else "?") + query

    def identity(
        self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> ProviderIdentity:
        discovery = self._discover()
        tokens = self._exchange(discovery, code, redirect_uri, code_verifier)
        claims = self._verify_id_token(tokens["id_token"], nonce, discovery.jwks_uri)
        if not isinstance(claims.get("email"), str) and discovery.userinfo_endpoint:
            claims = self._with_userinfo(claims, discovery, tokens["access_token"])
        email = claims.get("email")
        email = email.strip().lower() if isinstance(email, str) else ""
        verified = claims.get("email_verified")
        # Some providers send the string "true" (OIDC Core §5.1 says boolean).
        email_verified = bool(email) and (verified is True or verified == "true")
        return ProviderIdentity(
            subject=claims["sub"],
            email=email,
            email_verified=email_verified,
            name=_text(claims.get("name")) or _full_name(claims),
            username=_text(claims.get("preferred_username")) or _text(claims.get("nickname")),
            # Google Workspace's domain (`hd`): ALLOWED_DOMAINS is checked against it too, since
            # a consumer account can carry a verified address at a company's domain.
            hosted_domain=_text(claims.get("hd")).lower(),
        )

    # -- token endpoint ------------------------------------------------------------------

    def _exchange(
        self, discovery: _Discovery, code: str, redirect_uri: str, code_verifier: str
    ) -> dict[str, str]:
        what = f"{self.config.id} token endpoint"
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        headers = {"Accept": "application/json"}
        if discovery.client_secret_post:
            form |= {"client_id": self.config.client_id, "client_secret": self.config.client_secret}
        else:
            headers["Authorization"] = _basic_auth(self.config.client_id, self.config.client_secret)
        reply = send(
            self._client, "POST", discovery.token_endpoint, what=what, headers=headers, data=form
        )
        if 400 <= reply.status < 500:
            raise token_error(reply, what, self.config.id)
        body = reply.json_object() if reply.status == 200 else None
        if body is not None and isinstance(body.get("error"), str):
            raise token_error(reply, what, self.config.id)
        if body is None:
            raise _invalid_response(f"{what}: HTTP {reply.status}, not a JSON object")
        id_token, access_token = body.get("id_token"), body.get("access_token")
        if not isinstance(id_token, str) or not isinstance(access_token, str) or not access_token:
            raise _invalid_response(f"{what}: no id_token or access_token in the answer")
        return {"id_token": id_token, "access_token": access_token}

    # -- ID token (OIDC Core §3.1.3.7) -----------------------------------------------------

    def _verify_id_token(self, id_token: str, nonce: str, jwks_uri: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise _invalid_token(f"not a JWS: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise _invalid_token(f"alg {alg!r} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _invalid_token("kid is not a string")
        key = self._signing_key(jwks_uri, kid, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key=key,
                algorithms=[alg],
                audience=self.config.client_id,
                issuer=self._issuers,
                # Times are judged below against the injected clock, not PyJWT's own.
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["iss", "sub", "aud", "exp", "iat"],
                },
            )
        except jwt.PyJWTError as exc:
            raise _invalid_token(f"{type(exc).__name__}: {exc}") from None
        self._check_claims(claims)
        sent = claims.get("nonce")
        # ASCII first: compare_digest takes no lone surrogates, which JSON can carry.
        if (
            not isinstance(sent, str)
            or not sent.isascii()
            or not hmac.compare_digest(sent.encode("ascii"), nonce.encode("ascii"))
        ):
            raise ProviderRejectedError(
                "NONCE_MISMATCH", f"{self.config.id}: the ID token's nonce is not the one sent"
            )
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise _invalid_token("sub is empty")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        azp = claims.get("azp")
        # §3.1.3.7 steps 4 and 5: several audiences need azp, and an azp must be us.
        if (len(audiences) > 1 or azp is not None) and azp != self.config.client_id:
            raise _invalid_token(f"azp {azp!r} is not this client")
        now = self._clock().timestamp()
        exp, iat, nbf = (_number(claims, name) for name in ("exp", "iat", "nbf"))
        if exp is None or now > exp + LEEWAY_SECONDS:
            raise _invalid_token("expired")
        if iat is None or iat > now + LEEWAY_SECONDS:
            raise _invalid_token("issued in the future")
        if nbf is not None and nbf > now + LEEWAY_SECONDS:
            raise _invalid_token("not valid yet (nbf)")

    def _signing_key(self, jwks_uri: str, kid: str | None, alg: str) -> jwt.PyJWK:
        key_set = self._keys(jwks_uri, stale=None)
        jwk = _pick_key(key_set.keys, kid, alg)
        if jwk is None:
            # A kid we do not know: the provider may have rotated its keys since we fetched
            # them. One refetch, then the token is refused.
            key_set = self._keys(jwks_uri, stale=key_set)
            jwk = _pick_key(key_set.keys, kid, alg)
        if jwk is None:
            raise _invalid_token(f"no {alg} key with kid {kid!r} in the JWK Set")
        try:
            # An RSA key without "alg" serves RS* and PS* alike; PyJWK would assume RS256.
            forced = alg if jwk.get("kty") == "RSA" and "alg" not in jwk else None
            return jwt.PyJWK(jwk, algorithm=forced)
        except jwt.PyJWTError as exc:
            raise _invalid_token(f"unusable key {kid!r}: {exc}") from None

    # -- userinfo (OIDC Core §5.3) --------------------------------------------------------

    def _with_userinfo(
        self, claims: dict[str, Any], discovery: _Discovery, access_token: str
    ) -> dict[str, Any]:
        what = f"{self.config.id} userinfo endpoint"
        reply = send(
            self._client,
            "GET",
            discovery.userinfo_endpoint,
            what=what,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        body = reply.json_object() if reply.status == 200 else None
        if body is None:
            raise _invalid_response(f"{what}: HTTP {reply.status}, not a JSON object")
        # §5.3.2: a userinfo answer about another subject must not be used.
        if body.get("sub") != claims["sub"]:
            raise _invalid_response(f"{what}: sub differs from the ID token's")
        merged = dict(claims)
        # The address and whether it is verified come together, from one source.
        merged["email"], merged["email_verified"] = body.get("email"), body.get("email_verified")
        for name in ("name", "given_name", "family_name", "preferred_username", "nickname"):
            merged.setdefault(name, body.get(name))
        return merged

    # -- discovery and JWK Set, cached ---------------------------------------------------

    def _discover(self) -> _Discovery:
        with self._lock:
            now = self._clock()
            if self._discovery is not None and now - self._discovery[1] < DISCOVERY_TTL:
                return self._discovery[0]
            discovery = self._fetch_discovery()
            self._discovery = (discovery, now)
            return discovery

    def _keys(self, jwks_uri: str, *, stale: _KeySet | None) -> _KeySet:
        """The cached JWK Set, or a fresh one when it is older than JWKS_TTL or is `stale` (a
        set already found lacking; another thread may have refetched meanwhile)."""
        with self._lock:
            now = self._clock()
            cached = self._key_set
            if cached is not None and cached[0] is not stale and now - cached[1] < JWKS_TTL:
                return cached[0]
            key_set = self._fetch_keys(jwks_uri)
            self._key_set = (key_set, now)
            return key_set

    def _fetch_discovery(self) -> _Discovery:
        what = f"{self.config.id} discovery"
        # OIDC Discovery 1.0 §4: a terminating "/" of the issuer is removed before appending.
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        reply = send(self._client, "GET", url, what=what, headers={"Accept": "application/json"})
        if 300 <= reply.status < 500:
            # No discovery document at this issuer: a wrong IDP_<ID>_ISSUER, not an outage.
            raise ProviderRejectedError("MISCONFIGURED", f"{what}: HTTP {reply.status} at {url}")
        if reply.status != 200:
            raise ProviderUnavailableError(f"{what}: HTTP {reply.status}")
        doc = reply.json_object()
        if doc is None:
            raise ProviderUnavailableError(f"{what}: HTTP {reply.status}, not a JSON object")
        if doc.get("issuer") != self.config.issuer:
            # §4.3: the document must be the configured issuer's. A misconfiguration (or an
            # impostor), not an outage: logged once, refused every time.
            if not self._mismatch_logged:
                self._mismatch_logged = True
                logger.error(
                    "identity provider %s: the discovery document at %s names issuer %r, "
                    "but %r is configured; sign-in with it fails until they agree",
                    self.config.id,
                    url,
                    str(doc.get("issuer"))[:200],
                    self.config.issuer,
                )
            raise ProviderRejectedError(
                "MISCONFIGURED", f"{what}: issuer differs from the configured one"
            )
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint"):
            value = doc.get(name)
            if value is None and name == "userinfo_endpoint":
                value = ""
            elif not isinstance(value, str) or not _endpoint_ok(value):
                raise _invalid_response(f"{what}: {name} is missing or not an https URL")
            endpoints[name] = value
        methods = doc.get("token_endpoint_auth_methods_supported")
        # §3: the default is client_secret_basic.
        post = (
            isinstance(methods, list)
            and "client_secret_basic" not in methods
            and "client_secret_post" in methods
        )
        return _Discovery(**endpoints, client_secret_post=post)

    def _fetch_keys(self, jwks_uri: str) -> _KeySet:
        what = f"{self.config.id} JWK Set"
        reply = _metadata(self._client, jwks_uri, what)
        doc = reply.json_object()
        keys = doc.get("keys") if doc is not None else None
        if not isinstance(keys, list):
            raise ProviderUnavailableError(f"{what}: HTTP {reply.status}, not a JWK Set")
        try:
            jwt.PyJWKSet(keys)  # at least one key PyJWT can use
        except jwt.PyJWTError as exc:
            raise ProviderUnavailableError(f"{what}: {exc}") from None
        signing = tuple(
            key for key in keys if isinstance(key, dict) and key.get("use", "sig") == "sig"
        )
        return _KeySet(signing)


def _metadata(client: httpx.Client, url: str, what: str) -> Reply:
    reply = send(client, "GET", url, what=what, headers={"Accept": "application/json"})
    if reply.status != 200:
        raise ProviderUnavailableError(f"{what}: HTTP {reply.status}")
    return reply


def _pick_key(keys: tuple[dict[str, Any], ...], kid: str | None, alg: str) -> dict[str, Any] | None:
    """The key that verifies a token with this header: the one with its kid, or without a kid
    the only key of the algorithm's type."""
    kty = _KEY_TYPES[alg[:2]]
    candidates = [
        key
        for key in keys
        if key.get("kty") == kty
        and key.get("alg", alg) == alg
        and (kid is None or key.get("kid") == kid)
    ]
    if kid is None and len(candidates) != 1:
        return None
    return candidates[0] if candidates else None


def _endpoint_ok(url: str) -> bool:
    """https, or http to a loopback host; a query is allowed (RFC 6749 §3.1), a fragment not."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    host = parts.hostname or ""
    secure = parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host))
    return secure and bool(host) and not parts.fragment and parts.username is None


def _basic_auth(client_id: str, client_secret: str) -> str:
    # RFC 6749 §2.3.1: both are form-urlencoded before they are joined and base64-encoded.
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _number(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2); None when absent.

    Raises:
        ProviderRejectedError: ID_TOKEN_INVALID, it is not a number.
    """
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid_token(f"{name} is not a number")
    return float(value)


def _full_name(claims: dict[str, Any]) -> str:
    return " ".join(
        part for part in (_text(claims.get(n)) for n in ("given_name", "family_name")) if part
    )


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _invalid_token(detail: str) -> ProviderRejectedError:
    return ProviderRejectedError("ID_TOKEN_INVALID", detail[:300])


def _invalid_response(detail: str) -> ProviderRejectedError:
    return ProviderRejectedError("RESPONSE_INVALID", detail)
