"""OAuth 2.0 endpoints on the gateway: RFC 8628's device authorization and token requests.

Routes whose RPC is marked `(luman.api.v1.oauth_endpoint)` speak OAuth as standard clients
expect; every other route stays JSON-only with google.rpc.Status errors:

- Bodies may be `application/x-www-form-urlencoded` (RFC 6749 section 4.1.3, RFC 8628
  sections 3.1 and 3.4). Parameters the request message does not have are ignored and empty
  ones treated as absent (RFC 6749 section 3.1: "The authorization server MUST ignore
  unrecognized request parameters"); one given twice is refused (section 3.2).
- The client id may come as HTTP Basic credentials (section 2.3.1), as some libraries send it.
- Errors are {"error": ..., "error_description": ...} (section 5.2), HTTP 400 for the
  protocol's own (401 for invalid_client), the gateway's own refusals included.

Accepting form bodies opens no cross-site request forgery here: these endpoints are public and
read no cookie, so a forged post carries nothing a forger does not already have.
"""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import parse_qsl, unquote

import grpc
from google.protobuf.descriptor import Descriptor

from luman.server.gateway.status import ErrorResponse, GatewayError, bad_request

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
# ErrorInfo reasons that are RFC 8628 / RFC 6749 error codes already (in capitals).
PROTOCOL_ERRORS = frozenset(
    {"AUTHORIZATION_PENDING", "SLOW_DOWN", "ACCESS_DENIED", "EXPIRED_TOKEN", "INVALID_GRANT"}
)
# A bad field's RFC 6749 error code, where the RFC has one (sections 4.1.2.1 and 5.2).
FIELD_ERRORS = {
    "client_id": ("invalid_client", 401),
    "grant_type": ("unsupported_grant_type", 400),
    "scope": ("invalid_scope", 400),
}
MAX_FIELDS = 20


def is_form(content_type: str | None) -> bool:
    return (content_type or "").partition(";")[0].strip().lower() == FORM_MEDIA_TYPE


def form_to_json(body: bytes, request: Descriptor) -> bytes:
    """A form body as the JSON object the transcoder reads: the fields `request` has, each a
    string; unknown and empty parameters left out.

    Raises:
        GatewayError: the body is not a well-formed form, or repeats a parameter.
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
    known = {field.name for field in request.fields} | {f.json_name for f in request.fields}
    fields: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            raise bad_request("INVALID_BODY", f"{name!r} is given more than once", field=name)
        seen.add(name)
        if name in known and value:
            fields[name] = value
    return json.dumps(fields).encode()


def basic_client_id(authorization: str | None) -> str | None:
    """The client id of HTTP Basic client credentials (RFC 6749 section 2.3.1: the id is
    form-encoded, then base64 with the secret); None without them. A public client has no
    secret, so only the id is read."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise bad_request("INVALID_CLIENT_CREDENTIALS", "malformed Basic credentials") from None
    return unquote(decoded.partition(":")[0].replace("+", " ")) or None


def with_client_id(body: bytes, client_id: str) -> bytes:
    """A JSON body given the client id from Basic credentials, unless it has one itself."""
    document = json.loads(body) if body.strip() else {}
    if not isinstance(document, dict):
        return body  # the transcoder refuses it with its own message
    if not document.get("client_id") and not document.get("clientId"):
        document["client_id"] = client_id
    return json.dumps(document).encode()


def oauth_error(
    error: ErrorResponse,
    code: grpc.StatusCode,
    message: str,
    reason: str,
    fields: tuple[str, ...] = (),
) -> ErrorResponse:
    """The RFC 6749 section 5.2 form of a failed call, keeping Retry-After.

    The protocol's own errors (authorization_pending, slow_down, access_denied,
    expired_token, invalid_grant) and bad input (invalid_request, invalid_client,
    unsupported_grant_type, invalid_scope) are HTTP 400 (401 for invalid_client) as the RFC
    says; the rest keep their status (429 for the rate limits, 503 while the database is away)
    under the closest RFC 6749 code."""
    if reason in PROTOCOL_ERRORS:
        name, status = reason.lower(), 400
    elif code is grpc.StatusCode.INVALID_ARGUMENT:
        name, status = next(
            (FIELD_ERRORS[field] for field in fields if field in FIELD_ERRORS),
            ("invalid_request", 400),
        )
        if error.http_status == 413:
            status = 413
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
    body = json.dumps({"error": name, "error_description": message}, separators=(",", ":"))
    return ErrorResponse(status, body.encode(), error.retry_after_seconds)


def refusal(error: GatewayError) -> ErrorResponse:
    """A refusal of the gateway's own (a malformed form, an unsupported media type, a body too
    large) in the RFC's shape."""
    # invalid_request whatever the field: a repeated or malformed parameter is not a bad
    # client or scope.
    return oauth_error(error.response(), error.code, error.message, error.reason)
