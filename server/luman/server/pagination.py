"""AIP-158 pagination: page_size clamping and opaque keyset page tokens."""

from __future__ import annotations

import base64
import binascii
import json

from luman.server.validation import Violations

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Our tokens are well under 200 characters; anything much longer is not one of ours and is
# refused before it reaches the JSON parser.
MAX_PAGE_TOKEN_LENGTH = 512


def clamp_page_size(v: Violations, value: int, field: str = "page_size") -> int:
    # AIP-158: a negative page_size is INVALID_ARGUMENT; 0 means the default; above max is lowered.
    if value < 0:
        v.add(field, "must not be negative")
        return DEFAULT_PAGE_SIZE
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(scope: str, key: list[str]) -> str:
    """A token that resumes after `key` in the listing named by `scope`."""
    raw = json.dumps({"s": scope, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(
    v: Violations, token: str, scope: str, key_length: int, field: str = "page_token"
) -> list[str] | None:
    """The key a token resumes after, or None for the first page. A token from another listing
    (another organization, another user) is rejected rather than silently misread."""
    if not token:
        return None
    data = None
    if len(token) <= MAX_PAGE_TOKEN_LENGTH:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (binascii.Error, ValueError, RecursionError):
            data = None
    key = data.get("k") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("s") != scope
        or not isinstance(key, list)
        or len(key) != key_length
        or not all(isinstance(part, str) for part in key)
    ):
        v.add(field, "is not a page token from this listing")
        return None
    return key
