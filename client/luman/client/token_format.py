"""The format of Luman personal (CLI) tokens, and its offline checksum check.

    lmn_ <43 random base62 characters> <6-character base62 CRC32 of those 43 characters>

- Alphabet: `0-9A-Za-z` in that order (digit value 0-61).
- Random part: 43 characters drawn uniformly from the alphabet, 43 * log2(62) = 256.03 bits.
- Checksum: CRC-32 (ISO-HDLC, as zlib.crc32 and Python's binascii.crc32) of the 43 ASCII
  characters, written in base62, most significant digit first, left-padded with "0" to 6
  characters (62**6 > 2**32).

A secret scanner finds candidates with `lmn_[0-9A-Za-z]{49}` and confirms them with the
checksum without asking the server; the server refuses a token whose checksum is wrong before
any database work. Tokens issued before this format ("lmn_" and 43 base64url characters, 47
characters in all, no checksum) still work and are recognised by `is_legacy_token`.

Service account secrets follow the same rules with their own prefix, SERVICE_PREFIX "lms_":
a scanner looks for `lms_[0-9A-Za-z]{49}` and checks the same checksum.
"""

from __future__ import annotations

import secrets
import zlib

PREFIX = "lmn_"
SERVICE_PREFIX = "lms_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 43
CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH  # 53
LEGACY_TOKEN_LENGTH = len(PREFIX) + 43  # 47: base64url of 32 bytes, unpadded
_LEGACY_ALPHABET = frozenset(ALPHABET + "-_")
_ALPHABET_SET = frozenset(ALPHABET)


def checksum(random_part: str) -> str:
    """The 6-character base62 CRC32 of `random_part`."""
    value = zlib.crc32(random_part.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def new_token(prefix: str = PREFIX) -> str:
    """A fresh token: prefix, 256 random bits in base62, checksum."""
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return prefix + random_part + checksum(random_part)


def verify_checksum(token: str, prefix: str = PREFIX) -> bool:
    """True when `token` has this format with `prefix` and its checksum matches: offline, no
    server call.

    False for anything else, including tokens in the legacy format (which carry no checksum).
    """
    if len(token) != len(prefix) + RANDOM_LENGTH + CHECKSUM_LENGTH or not token.startswith(prefix):
        return False
    body = token[len(prefix) :]
    if not _ALPHABET_SET.issuperset(body):
        return False
    random_part, check = body[:RANDOM_LENGTH], body[RANDOM_LENGTH:]
    return secrets.compare_digest(checksum(random_part), check)


def is_legacy_token(token: str) -> bool:
    """True for the shape of a token issued before checksums: "lmn_" + 43 base64url characters."""
    return (
        len(token) == LEGACY_TOKEN_LENGTH
        and token.startswith(PREFIX)
        and _LEGACY_ALPHABET.issuperset(token[len(PREFIX) :])
    )


def hint(token: str, prefix: str = PREFIX) -> str:
    """What a listing shows of a token: the prefix and its last 4 characters."""
    return f"{prefix}...{token[-4:]}"
