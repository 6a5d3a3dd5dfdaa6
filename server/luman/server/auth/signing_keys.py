"""Asymmetric keys that sign access tokens: generation, their public JWK, encryption at rest.

- Algorithms: EdDSA (Ed25519, the default) and ES256 (ECDSA P-256, for verifiers without
  Ed25519). Every primitive comes from `cryptography`; nothing here is hand-rolled.
- The kid is the key's RFC 7638 JWK thumbprint (SHA-256, base64url): deterministic, unique per
  key, and checkable by anyone holding the public JWK.
- The public key is stored as its JWK (RFC 7517/8037/7518 members only), exactly what the JWKS
  publishes.
- The private key (PKCS#8 DER) is stored encrypted with AES-256-GCM under a key derived with
  HKDF-SHA256 from SIGNING_KEY_SECRET. A random 96-bit nonce per encryption; the kid and the
  algorithm are the associated data, so a ciphertext moved to another row does not decrypt.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

Algorithm = Literal["EdDSA", "ES256"]
ALGORITHMS: tuple[Algorithm, ...] = ("EdDSA", "ES256")
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey

_NONCE_BYTES = 12  # AES-GCM's standard nonce size
# HKDF's info label: a different use of the same secret would use a different label.
_HKDF_INFO = b"luman signing-key encryption v1"
_P256_COORDINATE_BYTES = 32


class SigningKeyError(Exception):
    """The signing keys cannot be used: typically SIGNING_KEY_SECRET does not decrypt them."""


@dataclasses.dataclass(frozen=True)
class NewKey:
    kid: str
    algorithm: Algorithm
    public_jwk: dict[str, str]
    private_key: PrivateKey


def generate(algorithm: Algorithm) -> NewKey:
    private_key: PrivateKey
    if algorithm == "EdDSA":
        private_key = Ed25519PrivateKey.generate()
    elif algorithm == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:  # pragma: no cover - Algorithm is a closed set
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    public_jwk = public_jwk_of(private_key.public_key(), algorithm)
    return NewKey(public_jwk["kid"], algorithm, public_jwk, private_key)


def public_jwk_of(public_key: PublicKey, algorithm: Algorithm) -> dict[str, str]:
    """The public key as a JWK with kid (its thumbprint), alg and use "sig"."""
    members: dict[str, str]
    if isinstance(public_key, Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    else:
        numbers = public_key.public_numbers()
        members = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64(numbers.x.to_bytes(_P256_COORDINATE_BYTES, "big")),
            "y": _b64(numbers.y.to_bytes(_P256_COORDINATE_BYTES, "big")),
        }
    return {**members, "kid": thumbprint(members), "alg": algorithm, "use": "sig"}


def thumbprint(members: dict[str, str]) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without whitespace."""
    required = ("crv", "kty", "x") if members["kty"] == "OKP" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: members[k] for k in required}, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode()).digest())


def public_key_of(public_jwk: dict[str, Any]) -> PublicKey:
    """The key object PyJWT verifies with, from a stored public JWK.

    Raises:
        SigningKeyError: the JWK is not one this module writes.
    """
    try:
        if public_jwk["kty"] == "OKP" and public_jwk["crv"] == "Ed25519":
            return Ed25519PublicKey.from_public_bytes(_unb64(public_jwk["x"]))
        if public_jwk["kty"] == "EC" and public_jwk["crv"] == "P-256":
            x = int.from_bytes(_unb64(public_jwk["x"]), "big")
            y = int.from_bytes(_unb64(public_jwk["y"]), "big")
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except (KeyError, TypeError, ValueError) as exc:
        raise SigningKeyError(f"malformed public key {public_jwk.get('kid')!r}") from exc
    raise SigningKeyError(f"unsupported public key {public_jwk.get('kid')!r}")


class KeyCipher:
    """Encrypts and decrypts private keys under the key HKDF derives from `secret`."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise SigningKeyError("SIGNING_KEY_SECRET is empty")
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
            secret.encode()
        )
        self._aead = AESGCM(derived)

    def encrypt(self, key: NewKey) -> bytes:
        plain = key.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, _associated(key.kid, key.algorithm))

    def decrypt(self, kid: str, algorithm: str, sealed: bytes) -> PrivateKey:
        """Raises:
        SigningKeyError: the secret is not the one the key was encrypted with (or the row
            was altered).
        """
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            plain = self._aead.decrypt(nonce, ciphertext, _associated(kid, algorithm))
        except InvalidTag:
            raise SigningKeyError(
                f"SIGNING_KEY_SECRET does not decrypt signing key {kid}: it is not the secret "
                "the keys were created with (restore it, or see README: Signing keys)"
            ) from None
        private_key = serialization.load_der_private_key(plain, password=None)
        if not isinstance(private_key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise SigningKeyError(f"signing key {kid} is not an Ed25519 or P-256 key")
        return private_key


def _associated(kid: str, algorithm: str) -> bytes:
    return f"luman-signing-key:{kid}:{algorithm}".encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
