"""gRPC statuses as HTTP responses: the status code table and the google.rpc.Status JSON body.

The table is grpc-gateway's (runtime.HTTPStatusFromCode), so clients written against a
grpc-gateway service see the same codes here. FAILED_PRECONDITION is 400, as there: 412 is
about HTTP preconditions (If-Match), which this API does not use.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from luman.interceptors import metadata_keys

logger = logging.getLogger(__name__)

GATEWAY_DOMAIN = "luman.gateway"

HTTP_STATUS_BY_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

# Statuses our server sends always carry grpc-status-details-bin. One of these codes without it
# came from the channel itself ("failed to connect to 127.0.0.1:3000 ..."): its text describes
# the inside of the process, so the client gets a fixed message instead.
_GENERIC_MESSAGES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNKNOWN: "internal error",
    grpc.StatusCode.INTERNAL: "internal error",
    grpc.StatusCode.DATA_LOSS: "internal error",
    grpc.StatusCode.UNAVAILABLE: "service unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline exceeded",
    grpc.StatusCode.CANCELLED: "request cancelled",
}


@dataclasses.dataclass(frozen=True)
class ErrorResponse:
    http_status: int
    body: bytes
    retry_after_seconds: int | None = None


class GatewayError(Exception):
    """A request the gateway refuses before it reaches gRPC (bad JSON, wrong media type, …).

    It is answered in the same google.rpc.Status form as the errors of the services, with an
    ErrorInfo (domain "luman.gateway") and, for bad fields, a BadRequest.
    """

    def __init__(
        self,
        http_status: int,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        violations: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.reason = reason
        self.message = message
        self.violations = tuple(violations)

    def response(self) -> ErrorResponse:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        details: list[Any] = [
            error_details_pb2.ErrorInfo(reason=self.reason, domain=GATEWAY_DOMAIN),
        ]
        if self.violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in self.violations
                    ]
                )
            )
        for detail in details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        return ErrorResponse(self.http_status, _status_json(status))


def bad_request(reason: str, message: str, field: str | None = None) -> GatewayError:
    violations = [(field, message)] if field is not None else []
    return GatewayError(400, grpc.StatusCode.INVALID_ARGUMENT, reason, message, violations)


def from_rpc_error(
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Sequence[tuple[str, str | bytes]],
) -> ErrorResponse:
    """The HTTP answer to a failed call, with the details the server attached."""
    status = status_pb2.Status(code=code.value[0], message=message)
    rich = _rich_status(code, trailing_metadata)
    if rich is None and code in _GENERIC_MESSAGES:
        logger.warning("upstream %s without details: %s", code.name, message)
        status.message = _GENERIC_MESSAGES[code]
    if rich is not None:
        status.details.extend(rich.details)
    retry_after = None
    # RFC 9110 10.2.3: Retry-After goes with 503 (the database is away) as with 429.
    if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
        retry_after = _retry_after(status)
    return ErrorResponse(HTTP_STATUS_BY_CODE.get(code, 500), _status_json(status), retry_after)


def error_info(
    code: grpc.StatusCode, trailing_metadata: Sequence[tuple[str, str | bytes]]
) -> tuple[str, tuple[str, ...]]:
    """The ErrorInfo reason ("" without one) and the BadRequest field names the server attached
    to a failed call."""
    rich = _rich_status(code, trailing_metadata)
    reason = ""
    fields: tuple[str, ...] = ()
    for detail in () if rich is None else rich.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = str(info.reason)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = tuple(str(v.field) for v in bad.field_violations)
    return reason, fields


def _rich_status(
    code: grpc.StatusCode, trailing_metadata: Sequence[tuple[str, str | bytes]]
) -> status_pb2.Status | None:
    for key, value in trailing_metadata:
        if key == metadata_keys.STATUS_DETAILS and isinstance(value, bytes):
            try:
                rich = status_pb2.Status.FromString(value)
            except DecodeError:  # a corrupt trailer must not turn into a 500
                logger.warning(
                    "undecodable %s on a %s status", metadata_keys.STATUS_DETAILS, code.name
                )
                return None
            # grpc-status-details-bin must agree with the status it travels with.
            return rich if rich.code == code.value[0] else None
    return None


def _retry_after(status: status_pb2.Status) -> int | None:
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            # Retry-After counts whole seconds; round up so a client never retries too early.
            seconds: float = info.retry_delay.ToTimedelta().total_seconds()
            return max(1, math.ceil(seconds))
    return None


def _status_json(status: status_pb2.Status) -> bytes:
    details: list[dict[str, Any]] = []
    for detail in status.details:
        try:
            details.append(json_format.MessageToDict(detail))
        except (TypeError, KeyError, json_format.Error):
            # A detail type this process does not know still says what it is.
            details.append({"@type": detail.type_url})
    body = {"code": status.code, "message": status.message, "details": details}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
