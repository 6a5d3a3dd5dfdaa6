"""The JWK Set (RFC 7517) that GetJwks and GET /.well-known/jwks.json publish."""

from __future__ import annotations

from luman.auth.v1 import auth_service_pb2
from luman.interceptors import metadata_keys
from luman.server.auth.key_ring import JWKS_MAX_AGE_SECONDS

# Sent as initial metadata; the HTTP gateway passes it on as the Cache-Control header. Rotation
# publishes a new key PUBLISH_AHEAD (more than this) before it signs (key_ring.py), so a set
# cached for max-age never misses a key that is signing.
CACHE_METADATA = ((metadata_keys.CACHE_CONTROL, f"public, max-age={JWKS_MAX_AGE_SECONDS}"),)


def to_proto(keys: list[dict[str, str]]) -> auth_service_pb2.GetJwksResponse:
    """Members that do not apply to a key (y for an OKP key) stay unset, so the JSON leaves
    them out."""
    return auth_service_pb2.GetJwksResponse(
        keys=[auth_service_pb2.JsonWebKey(**key) for key in keys]
    )
