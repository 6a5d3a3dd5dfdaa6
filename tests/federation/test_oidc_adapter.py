"""The OpenID Connect adapter against a loopback issuer whose ID tokens the test bends."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
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
from tests.federation.oidc_stub import OidcStub, new_key, tampered
from tests.support import FakeClock

CALLBACK = "http://127.0.0.1:8080/auth/providers/corp/callback"
VERIFIER = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"
STATE = "state-abc"
NONCE = "nonce-xyz"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stub(clock: FakeClock) -> Iterator[OidcStub]:
    with OidcStub(clock=clock) as stub:
        yield stub


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with new_client() as client:
        yield client


def _adapter(
    stub: OidcStub,
    client: httpx.Client,
    clock: Callable[[], dt.datetime],
    *,
    issuer: str | None = None,
) -> Adapter:
    config = ProviderConfig(
        id="corp",
        kind="oidc",
        display_name="Corp",
        client_id=stub.client_id,
        client_secret=stub.client_secret,
        issuer=stub.issuer if issuer is None else issuer,
        scopes=("openid", "email", "profile"),
    )
    return build_adapters([config], clock=clock, client=client)["corp"]


def _sign_in(stub: OidcStub, adapter: Adapter, *, verifier: str = VERIFIER) -> ProviderIdentity:
    url = adapter.authorization_url(
        redirect_uri=CALLBACK, state=STATE, nonce=NONCE, code_challenge=code_challenge(VERIFIER)
    )
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(stub.approve(url)).query))
    assert query["state"] == STATE
    return adapter.identity(
        code=query["code"], redirect_uri=CALLBACK, code_verifier=verifier, nonce=NONCE
    )


def _rejected(stub: OidcStub, adapter: Adapter) -> str:
    with pytest.raises(ProviderRejectedError) as raised:
        _sign_in(stub, adapter)
    return raised.value.reason


def test_oidc_authorization_url_parameters(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    adapter = _adapter(stub, client, clock)
    url = adapter.authorization_url(
        redirect_uri=CALLBACK, state=STATE, nonce=NONCE, code_challenge=code_challenge(VERIFIER)
    )
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == stub.issuer + "/authorize"
    assert dict(urllib.parse.parse_qsl(parts.query)) == {
        "response_type": "code",
        "client_id": stub.client_id,
        "redirect_uri": CALLBACK,
        "scope": "openid email profile",
        "state": STATE,
        "nonce": NONCE,
        "code_challenge": code_challenge(VERIFIER),
        "code_challenge_method": "S256",
    }


def test_oidc_identity_happy_path(stub: OidcStub, client: httpx.Client, clock: FakeClock) -> None:
    adapter = _adapter(stub, client, clock)
    assert _sign_in(stub, adapter) == ProviderIdentity(
        subject="user-1",
        email="ada@example.com",
        email_verified=True,
        name="Ada Lovelace",
        username="ada",
    )
    (request,) = stub.token_requests
    # client_secret_basic by default; the secret never in the form.
    assert request["authorization"].startswith("Basic ")
    assert "client_secret" not in request
    assert request["code_verifier"] == VERIFIER
    assert (stub.discovery_fetches, stub.jwks_fetches) == (1, 1)


def test_oidc_client_secret_post_when_basic_is_not_offered(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    stub.auth_method = "client_secret_post"
    adapter = _adapter(stub, client, clock)
    assert _sign_in(stub, adapter).subject == "user-1"
    (request,) = stub.token_requests
    assert request["client_secret"] == stub.client_secret
    assert request["authorization"] == ""


@pytest.mark.parametrize(
    ("value", "verified"),
    [(True, True), ("true", True), (False, False), ("True", False), (1, False), (None, False)],
)
def test_oidc_email_verified_accepts_true_or_the_string_true(
    stub: OidcStub, client: httpx.Client, clock: FakeClock, value: object, verified: bool
) -> None:
    stub.claims = {"email_verified": value}
    assert _sign_in(stub, _adapter(stub, client, clock)).email_verified is verified


def test_oidc_userinfo_gives_the_email_the_id_token_lacks(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    stub.profile = {}
    stub.userinfo = {
        "email": "Grace@Example.com",
        "email_verified": True,
        "name": "Grace Hopper",
        "preferred_username": "grace",
    }
    assert _sign_in(stub, _adapter(stub, client, clock)) == ProviderIdentity(
        subject="user-1",
        email="grace@example.com",
        email_verified=True,
        name="Grace Hopper",
        username="grace",
    )


def test_oidc_userinfo_about_another_subject_is_refused(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    stub.profile = {}
    stub.userinfo = {"sub": "user-2", "email": "mallory@example.com", "email_verified": True}
    assert _rejected(stub, _adapter(stub, client, clock)) == "RESPONSE_INVALID"


def test_oidc_no_email_anywhere_is_an_identity_without_email(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    stub.profile = {}
    identity = _sign_in(stub, _adapter(stub, client, clock))
    assert (identity.email, identity.email_verified, identity.name) == ("", False, "")


def _hs256_with_client_secret(stub: OidcStub) -> Callable[[dict[str, Any]], str]:
    # The classic confusion: "signed" with a secret the client knows.
    return lambda claims: jwt.encode(
        claims, stub.client_secret, algorithm="HS256", headers={"kid": stub.key.kid}
    )


_INVALID_TOKENS: dict[str, Callable[[OidcStub], None]] = {
    "tampered": lambda s: setattr(s, "forge", lambda c: tampered(s.sign(c))),
    "alg none": lambda s: setattr(s, "forge", lambda c: jwt.encode(c, "", algorithm="none")),
    "HS256": lambda s: setattr(s, "forge", _hs256_with_client_secret(s)),
    "not a JWT": lambda s: setattr(s, "forge", lambda c: "not-a-jwt"),
    "unpublished key": lambda s: setattr(s, "forge", lambda c: s.sign(c, new_key("ES256"))),
    "wrong iss": lambda s: s.claims.update(iss="https://impostor.example"),
    "wrong aud": lambda s: s.claims.update(aud="someone-else"),
    "no aud": lambda s: s.claims.update(aud=None),
    "several aud, no azp": lambda s: s.claims.update(aud=[s.client_id, "other"]),
    "several aud, other azp": lambda s: s.claims.update(aud=[s.client_id, "x"], azp="x"),
    "azp not us": lambda s: s.claims.update(azp="other"),
    "expired": lambda s: s.claims.update(exp=int(s.clock().timestamp()) - 61),
    "no exp": lambda s: s.claims.update(exp=None),
    "exp not a number": lambda s: s.claims.update(exp="tomorrow"),
    "iat in the future": lambda s: s.claims.update(iat=int(s.clock().timestamp()) + 61),
    "no iat": lambda s: s.claims.update(iat=None),
    "nbf in the future": lambda s: s.claims.update(nbf=int(s.clock().timestamp()) + 61),
    "no sub": lambda s: s.claims.update(sub=None),
    "empty sub": lambda s: s.claims.update(sub=""),
}


@pytest.mark.parametrize("case", list(_INVALID_TOKENS))
def test_oidc_id_token_invalid(
    stub: OidcStub, client: httpx.Client, clock: FakeClock, case: str
) -> None:
    _INVALID_TOKENS[case](stub)
    assert _rejected(stub, _adapter(stub, client, clock)) == "ID_TOKEN_INVALID"


def test_oidc_several_audiences_with_our_azp_are_accepted(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    stub.claims = {"aud": [stub.client_id, "other"], "azp": stub.client_id}
    assert _sign_in(stub, _adapter(stub, client, clock)).subject == "user-1"


@pytest.mark.parametrize("nonce", ["other-nonce", None, NONCE + "x"])
def test_oidc_nonce_mismatch(
    stub: OidcStub, client: httpx.Client, clock: FakeClock, nonce: str | None
) -> None:
    stub.claims = {"nonce": nonce}
    assert _rejected(stub, _adapter(stub, client, clock)) == "NONCE_MISMATCH"


def test_oidc_unknown_kid_is_refetched_once(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    adapter = _adapter(stub, client, clock)
    _sign_in(stub, adapter)
    assert stub.jwks_fetches == 1
    _sign_in(stub, adapter)
    assert stub.jwks_fetches == 1  # cached
    stub.rotate_key()
    assert _sign_in(stub, adapter).subject == "user-1"
    assert stub.jwks_fetches == 2
    stub.forge = lambda claims: stub.sign(claims, new_key())
    assert _rejected(stub, adapter) == "ID_TOKEN_INVALID"
    assert stub.jwks_fetches == 3  # one refetch, not more


@pytest.mark.parametrize(
    ("alg", "publish_alg"),
    [("ES256", True), ("EdDSA", False), ("PS256", False), ("RS256", False)],
)
def test_oidc_other_key_types(
    stub: OidcStub, client: httpx.Client, clock: FakeClock, alg: str, publish_alg: bool
) -> None:
    stub.rotate_key(alg, publish_alg=publish_alg)
    assert _sign_in(stub, _adapter(stub, client, clock)).subject == "user-1"


def test_oidc_expiry_is_judged_by_the_injected_clock(stub: OidcStub, client: httpx.Client) -> None:
    # The stub signs at its clock's time (exp = iat + 300 s); the adapter reads its own.
    # PyJWT's own check, by the real time, would refuse every one of these tokens.
    issued = stub.clock()
    later = FakeClock(issued + dt.timedelta(seconds=300 + 59))
    assert _sign_in(stub, _adapter(stub, client, later)).subject == "user-1"
    later.advance(seconds=2)
    assert _rejected(stub, _adapter(stub, client, later)) == "ID_TOKEN_INVALID"
    earlier = FakeClock(issued - dt.timedelta(seconds=61))
    assert _rejected(stub, _adapter(stub, client, earlier)) == "ID_TOKEN_INVALID"


def test_oidc_discovery_is_cached_for_an_hour(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    adapter = _adapter(stub, client, clock)
    for _ in range(3):
        adapter.authorization_url(redirect_uri=CALLBACK, state="s", nonce="n", code_challenge="c")
    assert stub.discovery_fetches == 1
    clock.advance(minutes=61)
    adapter.authorization_url(redirect_uri=CALLBACK, state="s", nonce="n", code_challenge="c")
    assert stub.discovery_fetches == 2


def test_oidc_discovery_issuer_mismatch_is_refused_and_logged_once(
    stub: OidcStub, client: httpx.Client, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = _adapter(stub, client, clock, issuer=stub.issuer + "/")
    with caplog.at_level(logging.ERROR, logger="luman.server.federation"):
        for _ in range(2):
            with pytest.raises(ProviderRejectedError) as raised:
                adapter.authorization_url(
                    redirect_uri=CALLBACK, state="s", nonce="n", code_challenge="c"
                )
            assert raised.value.reason == "MISCONFIGURED"
    assert len([r for r in caplog.records if "discovery document" in r.getMessage()]) == 1


def test_oidc_issuer_without_discovery_is_misconfigured(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    adapter = _adapter(stub, client, clock, issuer=stub.issuer + "/wrong-realm")
    with pytest.raises(ProviderRejectedError) as raised:
        adapter.authorization_url(redirect_uri=CALLBACK, state="s", nonce="n", code_challenge="c")
    assert raised.value.reason == "MISCONFIGURED"


def test_oidc_discovery_without_token_endpoint_is_response_invalid(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    stub.discovery_overrides = {"token_endpoint": None}
    with pytest.raises(ProviderRejectedError) as raised:
        _sign_in(stub, _adapter(stub, client, clock))
    assert raised.value.reason == "RESPONSE_INVALID"


def test_oidc_reused_code_is_code_rejected(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    adapter = _adapter(stub, client, clock)
    url = adapter.authorization_url(
        redirect_uri=CALLBACK, state=STATE, nonce=NONCE, code_challenge=code_challenge(VERIFIER)
    )
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(stub.approve(url)).query))["code"]
    adapter.identity(code=code, redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce=NONCE)
    with pytest.raises(ProviderRejectedError) as raised:
        adapter.identity(code=code, redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce=NONCE)
    assert raised.value.reason == "CODE_REJECTED"
    assert "invalid_grant" in raised.value.detail
    assert code not in raised.value.detail


def test_oidc_pkce_failure_is_code_rejected(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    with pytest.raises(ProviderRejectedError) as raised:
        _sign_in(stub, _adapter(stub, client, clock), verifier="x" * 43)
    assert raised.value.reason == "CODE_REJECTED"


def test_oidc_wrong_client_secret_is_code_rejected(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    adapter = _adapter(stub, client, clock)
    stub.client_secret = "rotated-client-secret-0123456789"
    with pytest.raises(ProviderRejectedError) as raised:
        _sign_in(stub, adapter)
    assert raised.value.reason == "CODE_REJECTED"
    assert "invalid_client" in raised.value.detail


def test_oidc_down_is_unavailable(stub: OidcStub, client: httpx.Client, clock: FakeClock) -> None:
    adapter = _adapter(stub, client, clock)
    stub.down = True
    with pytest.raises(ProviderUnavailableError, match="HTTP 503"):
        adapter.authorization_url(redirect_uri=CALLBACK, state="s", nonce="n", code_challenge="c")


def test_oidc_down_at_the_token_endpoint_is_unavailable(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    adapter = _adapter(stub, client, clock)
    url = adapter.authorization_url(
        redirect_uri=CALLBACK, state=STATE, nonce=NONCE, code_challenge=code_challenge(VERIFIER)
    )
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(stub.approve(url)).query))["code"]
    stub.down = True
    with pytest.raises(ProviderUnavailableError):
        adapter.identity(code=code, redirect_uri=CALLBACK, code_verifier=VERIFIER, nonce=NONCE)


def test_oidc_jwks_unreadable_is_unavailable(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    stub.discovery_overrides = {"jwks_uri": stub.issuer + "/no-such-jwks"}
    with pytest.raises(ProviderUnavailableError, match="JWK Set: HTTP 404"):
        _sign_in(stub, _adapter(stub, client, clock))


def test_oidc_closed_port_is_unavailable(client: httpx.Client, clock: FakeClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = ProviderConfig(
        id="corp", kind="oidc", display_name="Corp", client_id="c", client_secret="s", issuer=closed
    )
    adapter = build_adapters([config], clock=clock, client=client)["corp"]
    with pytest.raises(ProviderUnavailableError, match="ConnectError"):
        adapter.authorization_url(redirect_uri=CALLBACK, state="s", nonce="n", code_challenge="c")


def test_code_challenge_is_rfc7636_s256() -> None:
    # RFC 7636 Appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    with pytest.raises(ValueError, match="43 to 128"):
        code_challenge("short")


def test_oidc_name_from_given_and_family_name(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    stub.profile = {"given_name": "Ada", "family_name": "Lovelace", "nickname": "countess"}
    identity = _sign_in(stub, _adapter(stub, client, clock))
    assert (identity.name, identity.username) == ("Ada Lovelace", "countess")


def test_oidc_concurrent_sign_ins_share_one_discovery_and_jwks(
    stub: OidcStub, client: httpx.Client, clock: FakeClock
) -> None:
    adapter = _adapter(stub, client, clock)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        identities = list(pool.map(lambda _: _sign_in(stub, adapter), range(16)))
    assert {identity.subject for identity in identities} == {"user-1"}
    assert (stub.discovery_fetches, stub.jwks_fetches) == (1, 1)
