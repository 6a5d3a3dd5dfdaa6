"""Shape checks of the CLI-token RPCs: every bad field named in one INVALID_ARGUMENT."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from luman.auth.v1 import auth_service_pb2
from luman.server.auth.cli_token_repository import PageKey
from luman.server.auth.cli_tokens import known_scopes
from luman.server.pagination import clamp_page_size, decode_page_token, encode_page_token
from luman.server.validation import Violations, check_name


@dataclasses.dataclass(frozen=True)
class CreateCliToken:
    name: str
    scopes: frozenset[str]  # empty: the default scopes
    expire_time: dt.datetime | None
    ttl: dt.timedelta | None


def create_request(request: auth_service_pb2.CreateCliTokenRequest) -> CreateCliToken:
    """Raises:
    InvalidArgumentError: name empty or too long, unknown scope, unreadable expiry.
    """
    v = Violations()
    name = check_name(v, "name", request.name)
    known = known_scopes()
    unknown = sorted({scope for scope in request.scopes if scope not in known})
    if unknown:
        v.add(
            "scopes",
            f"unknown scope {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}",
        )
    expire_time = ttl = None
    which = request.WhichOneof("expiration")
    if which == "expire_time":
        try:
            expire_time = request.expire_time.ToDatetime(dt.UTC)
        except (ValueError, OverflowError, OSError):
            v.add("expire_time", "must be a valid timestamp")
    elif which == "ttl":
        try:
            ttl = request.ttl.ToTimedelta()
        except (ValueError, OverflowError):
            v.add("ttl", "must be a valid duration")
    v.raise_if_any()
    return CreateCliToken(name, frozenset(request.scopes), expire_time, ttl)


def page_request(
    request: auth_service_pb2.ListCliTokensRequest, scope: str
) -> tuple[int, PageKey | None]:
    v = Violations()
    page_size = clamp_page_size(v, request.page_size)
    key = decode_page_token(v, request.page_token, scope, 2)
    after = None
    if key is not None:
        try:
            after = (dt.datetime.fromisoformat(key[0]), uuid.UUID(key[1]))
        except ValueError:
            after = None
        if after is None or after[0].tzinfo is None:
            v.add("page_token", "is not a page token from this listing")
    v.raise_if_any()
    return page_size, after


def page_token(key: PageKey | None, scope: str) -> str:
    return "" if key is None else encode_page_token(scope, [key[0].isoformat(), str(key[1])])
