"""Shape checks shared by the servicers. Each collects FieldViolations instead of raising at
the first problem, so a client learns about every bad field in one round trip."""

from __future__ import annotations

import re
import uuid

from luman.interceptors.errors import FieldViolation, InvalidArgumentError

# Pragmatic address check (HTML5's definition): one @, a dotted domain, no spaces.
# Both are used with fullmatch(): `$` would also match before a trailing newline.
_EMAIL = re.compile(
    r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
)
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{1,38}[a-z0-9]")
MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 72  # bcrypt's limit: longer input is rejected, never silently truncated
MAX_NAME_LENGTH = 100
MAX_TOKEN_LENGTH = 4096


class Violations:
    """Collects violations; `raise_if_any()` raises one InvalidArgumentError for all of them."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgumentError(self.items)


def normalize_email(value: str) -> str:
    return value.strip().lower()


def check_email(v: Violations, field: str, value: str) -> str:
    email = normalize_email(value)
    if not email:
        v.add(field, "is required")
    elif len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        v.add(field, "must be a valid email address")
    return email


def check_password(v: Violations, field: str, value: str) -> None:
    """8 to 72 bytes of UTF-8, on sign-in as well as on registration.

    The upper bound is bcrypt's: bcrypt 5 raises on longer input, and older versions silently
    truncated it. On sign-in the same bounds answer a password no account can have without
    spending a hash on it.
    """
    size = len(value.encode())
    if size == 0:
        v.add(field, "is required")
    elif size > MAX_PASSWORD_BYTES:
        v.add(field, f"must be at most {MAX_PASSWORD_BYTES} bytes")
    elif size < MIN_PASSWORD_BYTES:
        v.add(field, f"must be at least {MIN_PASSWORD_BYTES} bytes")


def check_name(v: Violations, field: str, value: str, *, required: bool = True) -> str:
    name = value.strip()
    if not name:
        if required:
            v.add(field, "is required")
    elif len(name) > MAX_NAME_LENGTH:
        v.add(field, f"must be at most {MAX_NAME_LENGTH} characters")
    elif any(not ch.isprintable() for ch in name):
        v.add(field, "must not contain control characters")
    return name


def check_slug(v: Violations, field: str, value: str) -> str:
    if not value:
        v.add(field, "is required")
    elif not _SLUG.fullmatch(value):
        v.add(field, "must be 3 to 40 of a-z, 0-9 and '-', not starting or ending with '-'")
    return value


def check_uuid(v: Violations, field: str, value: str) -> uuid.UUID | None:
    if not value:
        v.add(field, "is required")
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        v.add(field, "must be a UUID")
        return None


def check_token(v: Violations, field: str, value: str) -> str:
    if not value:
        v.add(field, "is required")
    elif len(value) > MAX_TOKEN_LENGTH:
        v.add(field, "is too long")
    return value
