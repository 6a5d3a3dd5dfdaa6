"""OAuth 2.0 endpoints on the gateway: RFC 8628's device authorization and token requests.

Standard OAuth clients post `application/x-www-form-urlencoded` bodies (RFC 6749 section 4.1.3,
RFC 8628 sections 3.1 and 3.4) and read errors as {"error": ..., "error_description": ...}
with HTTP 400 (RFC 6749 section 5.2). Routes whose RPC is marked
`(luman.api.v1.oauth_endpoint)` get both; every other route stays JSON-only with
google.rpc.Status errors. Accepting form bodies opens no cross-site request forgery here:
these endpoints are public and read no cookie, so a forged post carries nothing a forger does
not already have.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import grpc

from luman.server.gateway.status import ErrorResponse, bad_request

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
# ErrorInfo reasons that are RFC 8628 / RFC 6749 error codes already (in capitals).
PROTOCOL_ERRORS = frozenset(
    {"AUTHORIZATION_PENDING", "SLOW_DOWN", "ACCESS_DENIED", "EXPIRED_TOKEN", "INVALID_GRANT"}
)
MAX_FIELDS = 20


def is_form(content_type: str | None) -> bool:
    return (content_type or "").partition(";")[0].strip().lower() == FORM_MEDIA_TYPE


def form_to_json(body: bytes) -> bytes:
    """A form body as the JSON object the transcoder reads: each field a string.

    Raises:
        GatewayError: the body is not a well-formed form, or repeats a field (RFC 6749
            section 3.2: "Request and response parameters MUST NOT be included more than
            once").
    """
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (ValueError, UnicodeDecodeError):
        raise bad_request("INVALID_BODY", "the form body is malformed") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise bad_request("INVALID_BODY", f"{name!r} is given more than once", field=name)
        fields[name] = value
    return json.dumps(fields).encode()


def oauth_error(
    error: ErrorResponse, code: grpc.StatusCode, message: str, reason: str
) -> ErrorResponse:
    """The RFC 6749 section 5.2 form of a failed call, keeping Retry-After.

    The protocol's own errors (authorization_pending, slow_down, access_denied,
    expired_token, invalid_grant) and bad input (invalid_request) are HTTP 400 as the RFC
    says; the rest keep their status (429 for the rate limits, 503 while the database is away)
    under the closest RFC 6749 code."""
    if reason in PROTOCOL_ERRORS:
        name, status = reason.lower(), 400
    elif code is grpc.StatusCode.INVALID_ARGUMENT:
        name, status = "invalid_request", 400
    elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        name, status = "slow_down", error.http_status
    elif code is grpc.StatusCode.UNAVAILABLE:
        name, status = "temporarily_unavailable", error.http_status
        message = "the service is unavailable; try again later"
    else:
        # Whatever else went wrong is described by a fixed text, as the gateway's
        # google.rpc.Status answers describe internal errors.
        name, status = "server_error", error.http_status
        message = "internal error"
    body = json.dumps({"error": name, "error_description": message}, separators=(",", ":")).encode()
    return ErrorResponse(status, body, error.retry_after_seconds)
