"""HTTP caching for GET answers the method marks cacheable (Cache-Control metadata: GetJwks).

Such an answer gets a strong ETag, the SHA-256 of its JSON, and a request whose If-None-Match
names it (or is `*`) gets 304 Not Modified without a body (RFC 9110 13.1.2, 15.4.5): a verifier
revalidating the JWKS downloads nothing until a key changes. The ETag is computed from the body
rather than kept, so every replica gives the same one for the same key set.
"""

from __future__ import annotations

import base64
import hashlib

from luman.interceptors import metadata_keys

Header = tuple[bytes, bytes]

_CACHE_CONTROL = metadata_keys.CACHE_CONTROL.encode()


def security_headers(defaults: tuple[Header, ...], headers: list[Header]) -> list[Header]:
    """`defaults` without their `Cache-Control: no-store` when the answer carries its own."""
    if not any(name == _CACHE_CONTROL for name, _ in headers):
        return list(defaults)
    return [(name, value) for name, value in defaults if name != _CACHE_CONTROL]


def is_cacheable(http_method: str, headers: list[Header]) -> bool:
    return http_method == "GET" and any(name == _CACHE_CONTROL for name, _ in headers)


def etag(body: bytes) -> str:
    digest = hashlib.sha256(body).digest()[:16]
    return '"' + base64.urlsafe_b64encode(digest).decode().rstrip("=") + '"'


def not_modified(if_none_match: list[str], tag: str) -> bool:
    """Whether If-None-Match (every header of that name) matches `tag`. Weak comparison, as
    RFC 9110 13.1.2 asks for If-None-Match: W/"x" matches "x"."""
    for header in if_none_match:
        for candidate in header.split(","):
            candidate = candidate.strip()
            if candidate == "*" or candidate.removeprefix("W/") == tag:
                return True
    return False
