"""JWT verification and refresh-token rotation, through real calls.

Forged tokens are built with PyJWT from a real sign-in's claims, changing one thing at a time;
a forged token that changes nothing must be accepted, so each rejection is for the stated reason.
Access tokens are forged with the server's own active signing key (EdDSA, the default), refresh
tokens with JWT_REFRESH_SECRET (HS256).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from luman.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App
from luman.server.auth.key_ring import LoadedKey
from luman.server.config import Settings
from tests.support import (
    PASSWORD,
    FakeClock,
    RichError,
    get_me,
    register,
    rich_error,
    unique_email,
)

Stub = auth_service_pb2_grpc.AuthServiceStub


def _refresh(auth: Stub, token: str) -> auth_pb2.TokenPair:
    response = auth.RefreshToken(auth_service_pb2.RefreshTokenRequest(refresh_token=token))
    return response.tokens


def _error(call: Any, *args: Any) -> RichError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args)
    return rich_error(caught.value)


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


@pytest.fixture
def access_key(app: App) -> LoadedKey:
    """The key the server signs access tokens with."""
    assert app.keys is not None
    return app.keys.signing_key()


def _unauthenticated(error: RichError, reason: str = "TOKEN_INVALID") -> None:
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == reason
    assert error.domain == "luman.auth.v1"


# --- Issued tokens ----------------------------------------------------------------------------


def test_issued_tokens_carry_the_documented_claims(
    auth: Stub, settings: Settings, clock: FakeClock, access_key: LoadedKey
) -> None:
    response = register(auth)
    now = int(clock().timestamp())
    assert jwt.get_unverified_header(response.tokens.access_token) == {
        "alg": "EdDSA",
        "kid": access_key.kid,
        "typ": "JWT",
    }
    assert jwt.get_unverified_header(response.tokens.refresh_token) == {
        "alg": "HS256",
        "typ": "JWT",
    }
    for token, kind, secret, algorithm, lifetime in (
        (response.tokens.access_token, "access", access_key.public_key, "EdDSA", 15 * 60),
        (
            response.tokens.refresh_token,
            "refresh",
            settings.jwt_refresh_secret,
            "HS256",
            7 * 86400,
        ),
    ):
        claims = jwt.decode(
            token,
            secret,
            algorithms=[algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"verify_exp": False, "verify_iat": False},
        )
        assert claims["sub"] == response.user.id
        assert claims["typ"] == kind
        assert claims["iat"] == now
        assert claims["exp"] == now + lifetime
        uuid.UUID(claims["jti"])
        uuid.UUID(claims["sid"])
    access, refresh = _claims(response.tokens.access_token), _claims(response.tokens.refresh_token)
    assert access["sid"] == refresh["sid"]
    assert access["jti"] != refresh["jti"]


# --- Access token verification ----------------------------------------------------------------


def test_access_token_works_until_15_minutes_then_is_expired(auth: Stub, clock: FakeClock) -> None:
    token = register(auth).tokens.access_token
    clock.advance(minutes=14, seconds=59)
    get_me(auth, token)
    clock.advance(seconds=1)
    _unauthenticated(_error(get_me, auth, token), "TOKEN_EXPIRED")
    clock.advance(days=1)
    _unauthenticated(_error(get_me, auth, token), "TOKEN_EXPIRED")


def test_tampered_signature_is_rejected(auth: Stub) -> None:
    token = register(auth).tokens.access_token
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    forged = f"{head}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"
    _unauthenticated(_error(get_me, auth, forged))


def test_tampered_payload_is_rejected(auth: Stub) -> None:
    victim = register(auth).user.id
    token = register(auth).tokens.access_token
    head, _payload, signature = token.split(".")
    claims = _claims(token) | {"sub": victim}
    raw = json.dumps(claims, separators=(",", ":")).encode()
    forged_payload = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    _unauthenticated(_error(get_me, auth, f"{head}.{forged_payload}.{signature}"))


def test_refresh_token_is_not_accepted_as_bearer(auth: Stub) -> None:
    _unauthenticated(_error(get_me, auth, register(auth).tokens.refresh_token))


def test_access_token_is_not_accepted_by_refresh_token(auth: Stub) -> None:
    _unauthenticated(_error(_refresh, auth, register(auth).tokens.access_token))


def _forge(
    base: dict[str, Any],
    secret: Any,
    changes: dict[str, Any],
    algorithm: str = "HS256",
    kid: str | None = None,
) -> str:
    """`base` with `changes` applied; a value of None removes the claim."""
    claims = {k: v for k, v in (base | changes).items() if v is not None}
    headers = None if kid is None else {"kid": kid}
    return jwt.encode(claims, secret, algorithm=algorithm, headers=headers)


def _forge_access(base: dict[str, Any], key: LoadedKey, changes: dict[str, Any]) -> str:
    """An access token signed as the server signs it, with `changes` applied."""
    return _forge(base, key.private_key, changes, key.algorithm, key.kid)


def _none_alg(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


ACCESS_FORGERIES: dict[str, dict[str, Any]] = {
    "wrong-audience": {"aud": "someone-else"},
    "audience-list-without-ours": {"aud": ["a", "b"]},
    "wrong-issuer": {"iss": "evil"},
    "type-refresh": {"typ": "refresh"},
    "no-type": {"typ": None},
    "missing-exp": {"exp": None},
    "missing-iat": {"iat": None},
    "missing-jti": {"jti": None},
    "missing-sub": {"sub": None},
    "missing-sid": {"sid": None},
    "missing-aud": {"aud": None},
    "missing-iss": {"iss": None},
    "sub-not-a-uuid": {"sub": "admin"},
    "sid-not-a-uuid": {"sid": "1"},
    "sid-of-no-sign-in": {"sid": str(uuid.uuid4())},
    "sub-of-another-user": {"sub": str(uuid.uuid4())},
    "exp-as-string": {"exp": "9999999999"},
    "issued-in-the-future": {"iat": 2_000_000_000},
}


@pytest.mark.parametrize("changes", ACCESS_FORGERIES.values(), ids=ACCESS_FORGERIES.keys())
def test_forged_access_token_is_rejected(
    auth: Stub, access_key: LoadedKey, changes: dict[str, Any]
) -> None:
    base = _claims(register(auth).tokens.access_token)
    get_me(auth, _forge_access(base, access_key, {}))  # the unchanged forgery is accepted
    _unauthenticated(_error(get_me, auth, _forge_access(base, access_key, changes)))


def test_access_token_signed_with_the_refresh_secret_is_rejected(
    auth: Stub, settings: Settings
) -> None:
    base = _claims(register(auth).tokens.access_token)
    _unauthenticated(_error(get_me, auth, _forge(base, settings.jwt_refresh_secret, {})))


def test_access_token_with_another_algorithm_is_rejected(
    auth: Stub, settings: Settings, access_key: LoadedKey
) -> None:
    base = _claims(register(auth).tokens.access_token)
    forged = _forge(base, settings.jwt_secret + "x" * 32, {}, algorithm="HS512")
    _unauthenticated(_error(get_me, auth, forged))
    _unauthenticated(_error(get_me, auth, _none_alg(base)))
    # The seed's HS256 with JWT_SECRET, with and without the active kid: the kid's key
    # decides the algorithm, not the token.
    _unauthenticated(_error(get_me, auth, _forge(base, settings.jwt_secret, {})))
    forged = _forge(base, settings.jwt_secret, {}, kid=access_key.kid)
    _unauthenticated(_error(get_me, auth, forged))


def test_access_token_hmac_signed_with_the_public_key_is_rejected(
    auth: Stub, access_key: LoadedKey
) -> None:
    # Algorithm confusion: HS256 keyed with the published public key (raw, PEM, JWK's x).
    base = _claims(register(auth).tokens.access_token)
    raw = access_key.public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    pem = access_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": access_key.kid}
    for secret in (raw, pem, access_key.public_jwk["x"].encode()):
        # Built by hand: PyJWT itself refuses asymmetric keys as HMAC secrets.
        forged = _compact(header, base, functools.partial(hmac.digest, secret, digest="sha256"))
        _unauthenticated(_error(get_me, auth, forged))


def test_access_token_signed_by_another_key_or_with_an_unknown_kid_is_rejected(
    auth: Stub, access_key: LoadedKey, clock: FakeClock
) -> None:
    base = _claims(register(auth).tokens.access_token)
    stranger = Ed25519PrivateKey.generate()
    _unauthenticated(_error(get_me, auth, _forge(base, stranger, {}, "EdDSA", access_key.kid)))
    _unauthenticated(_error(get_me, auth, _forge(base, stranger, {}, "EdDSA", "no-such-kid")))
    clock.advance(seconds=2)  # past the unknown-kid reload interval: a second look, same answer
    _unauthenticated(_error(get_me, auth, _forge(base, stranger, {}, "EdDSA", "no-such-kid")))
    private_key = access_key.private_key
    assert isinstance(private_key, Ed25519PrivateKey)
    for kid in ("", 7, None, [access_key.kid]):
        header = {"alg": "EdDSA", "typ": "JWT", "kid": kid}
        _unauthenticated(_error(get_me, auth, _compact(header, base, private_key.sign)))
    # The same construction with the right kid is accepted: the rejections are the kid's.
    header = {"alg": "EdDSA", "typ": "JWT", "kid": access_key.kid}
    get_me(auth, _compact(header, base, private_key.sign))


def _compact(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A JWS compact serialization built by hand, for headers PyJWT will not write."""

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    signing_input = ".".join(
        part(json.dumps(data, separators=(",", ":")).encode()) for data in (header, claims)
    )
    return f"{signing_input}.{part(sign(signing_input.encode()))}"


def test_access_token_with_expired_exp_is_expired_even_if_forged_correctly(
    auth: Stub, access_key: LoadedKey, clock: FakeClock
) -> None:
    base = _claims(register(auth).tokens.access_token)
    forged = _forge_access(base, access_key, {"exp": int(clock().timestamp())})
    _unauthenticated(_error(get_me, auth, forged), "TOKEN_EXPIRED")


REFRESH_FORGERIES: dict[str, dict[str, Any]] = {
    "wrong-audience": {"aud": "someone-else"},
    "wrong-issuer": {"iss": "evil"},
    "type-access": {"typ": "access"},
    "missing-exp": {"exp": None},
    "missing-jti": {"jti": None},
    "missing-sub": {"sub": None},
    "jti-not-stored": {"jti": str(uuid.uuid4())},
    "sub-of-another-user": {"sub": str(uuid.uuid4())},
}


@pytest.mark.parametrize("changes", REFRESH_FORGERIES.values(), ids=REFRESH_FORGERIES.keys())
def test_forged_refresh_token_is_rejected(
    auth: Stub, settings: Settings, changes: dict[str, Any]
) -> None:
    tokens = register(auth).tokens
    base = _claims(tokens.refresh_token)
    _unauthenticated(_error(_refresh, auth, _forge(base, settings.jwt_refresh_secret, changes)))
    # None of these forgeries spent or revoked the real token.
    get_me(auth, _refresh(auth, tokens.refresh_token).access_token)


def test_refresh_token_signed_with_the_access_secret_is_rejected(
    auth: Stub, settings: Settings
) -> None:
    base = _claims(register(auth).tokens.refresh_token)
    _unauthenticated(_error(_refresh, auth, _forge(base, settings.jwt_secret, {})))
    _unauthenticated(_error(_refresh, auth, _none_alg(base)))


@pytest.mark.shape_check  # refused by the JWT check, before any lookup
@pytest.mark.parametrize("garbage", ["x", "a.b.c", "lmn_abc", "eyJ" * 20])
def test_garbage_refresh_token_is_unauthenticated(auth: Stub, garbage: str) -> None:
    _unauthenticated(_error(_refresh, auth, garbage))


# --- Refresh rotation -------------------------------------------------------------------------


def test_refresh_returns_a_new_pair_that_works(auth: Stub, clock: FakeClock) -> None:
    first = register(auth)
    clock.advance(minutes=20)  # the access token has expired; the refresh token has not
    second = _refresh(auth, first.tokens.refresh_token)
    assert second.refresh_token != first.tokens.refresh_token
    assert second.access_token != first.tokens.access_token
    assert second.access_token_expire_time.ToDatetime(dt.UTC) == clock() + dt.timedelta(minutes=15)
    assert second.refresh_token_expire_time.ToDatetime(dt.UTC) == clock() + dt.timedelta(days=7)
    assert get_me(auth, second.access_token).user == first.user
    third = _refresh(auth, second.refresh_token)
    assert get_me(auth, third.access_token).user == first.user


def test_reused_refresh_token_revokes_the_whole_sign_in(auth: Stub) -> None:
    email = unique_email()
    first = register(auth, email=email).tokens
    other = auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD)).tokens
    second = _refresh(auth, first.refresh_token)
    third = _refresh(auth, second.refresh_token)

    _unauthenticated(_error(_refresh, auth, first.refresh_token), "REFRESH_TOKEN_REUSED")

    # Everything descended from that sign-in is dead, the newest refresh token included ...
    _unauthenticated(_error(_refresh, auth, third.refresh_token), "TOKEN_REVOKED")
    for access in (first.access_token, second.access_token, third.access_token):
        _unauthenticated(_error(get_me, auth, access), "TOKEN_REVOKED")
    _unauthenticated(_error(_refresh, auth, second.refresh_token), "TOKEN_REVOKED")
    # ... while the same user's other sign-in is untouched.
    get_me(auth, other.access_token)
    get_me(auth, _refresh(auth, other.refresh_token).access_token)


def test_refresh_token_presented_twice_in_a_row_is_reuse(auth: Stub, clock: FakeClock) -> None:
    tokens = register(auth).tokens
    new = _refresh(auth, tokens.refresh_token)
    clock.advance(seconds=10)  # past REFRESH_REUSE_GRACE_SECONDS (test_refresh_grace.py)
    _unauthenticated(_error(_refresh, auth, tokens.refresh_token), "REFRESH_TOKEN_REUSED")
    _unauthenticated(_error(get_me, auth, new.access_token), "TOKEN_REVOKED")


def test_refresh_token_expires_after_7_days(auth: Stub, clock: FakeClock) -> None:
    refresh = register(auth).tokens.refresh_token
    clock.advance(days=7)
    _unauthenticated(_error(_refresh, auth, refresh), "TOKEN_EXPIRED")


def test_refresh_token_works_just_before_7_days(auth: Stub, clock: FakeClock) -> None:
    refresh = register(auth).tokens.refresh_token
    clock.advance(days=6, hours=23, minutes=59)
    get_me(auth, _refresh(auth, refresh).access_token)


def test_expired_refresh_token_does_not_count_as_reuse(auth: Stub, clock: FakeClock) -> None:
    tokens = register(auth).tokens
    clock.advance(days=1)
    newer = _refresh(auth, tokens.refresh_token)
    clock.advance(days=6, seconds=1)
    # The old token is expired, so it is refused before any reuse bookkeeping ...
    _unauthenticated(_error(_refresh, auth, tokens.refresh_token), "TOKEN_EXPIRED")
    # ... and the sign-in lives on through the newer one.
    get_me(auth, _refresh(auth, newer.refresh_token).access_token)
