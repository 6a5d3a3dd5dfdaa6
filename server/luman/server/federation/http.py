"""The HTTP client every adapter shares, and how its failures map onto the adapters' errors."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from luman.server.federation.errors import ProviderRejectedError, ProviderUnavailableError

# A provider answers a sign-in in well under a second; ten seconds is for a slow one, and
# httpx applies it to each of connect, read, write and waiting for a pooled connection.
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Discovery documents, JWK Sets, tokens and profiles are a few kilobytes: a larger answer is
# not one, and is not read into memory.
MAX_BODY_BYTES = 1 << 20
USER_AGENT = "luman-identity"

logger = logging.getLogger(__name__)


def new_client() -> httpx.Client:
    """One client for all providers: connection pooling, and no redirects followed (a token or
    discovery endpoint that redirects is misconfigured, and a redirect must not carry a code
    elsewhere)."""
    return httpx.Client(timeout=TIMEOUT, follow_redirects=False, headers={"User-Agent": USER_AGENT})


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is not one."""
        value = self.json_value()
        return value if isinstance(value, dict) else None

    def json_value(self) -> Any:
        """The decoded JSON body, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
            return None


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
) -> Reply:
    """Sends one request and reads its answer.

    Args:
        what: names the call in error details ("github token endpoint").

    Raises:
        ProviderUnavailableError: unreachable, timed out, HTTP 5xx or 429, or an answer larger
            than MAX_BODY_BYTES.
    """
    try:
        with client.stream(method, url, headers=headers, data=data) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise ProviderUnavailableError(f"{what}: answer larger than {MAX_BODY_BYTES}")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ProviderUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise ProviderUnavailableError(f"{what}: HTTP {response.status_code}")
    return Reply(response.status_code, response.headers, bytes(body))


# The token endpoint refuses us rather than the code: the operator must fix the configuration.
_CLIENT_ERRORS = frozenset(
    {"invalid_client", "unauthorized_client", "incorrect_client_credentials"}
)


def token_error(reply: Reply, what: str, provider_id: str) -> ProviderRejectedError:
    """CODE_REJECTED for an OAuth 2.0 error answer (RFC 6749 §5.2), with its `error` code (and
    never the code or a secret) as the detail. A refused client is logged as well."""
    body = reply.json_object() or {}
    error = body.get("error")
    if error in _CLIENT_ERRORS:
        prefix = "IDP_" + provider_id.upper().replace("-", "_")
        logger.error(
            "identity provider %s refuses our client credentials (%s); check %s_CLIENT_ID and "
            "%s_CLIENT_SECRET",
            provider_id,
            error,
            prefix,
            prefix,
        )
    description = body.get("error_description")
    detail = f"{what}: HTTP {reply.status}"
    if isinstance(error, str):
        detail += f" {error[:100]}"
    if isinstance(description, str):
        detail += f" ({description[:200]})"
    return ProviderRejectedError("CODE_REJECTED", detail)
