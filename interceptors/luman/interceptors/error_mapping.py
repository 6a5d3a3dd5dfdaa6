"""ErrorMappingInterceptor: the one place that turns exceptions into gRPC statuses.

Domain errors become their status with a google.rpc.ErrorInfo (and BadRequest,
PreconditionFailure or RetryInfo).
Other exceptions are first offered to `translate`, which the server passes in to recognise its
dependencies' failures (a database that went away becomes UNAVAILABLE, not a traceback per
call). Anything still unknown is logged with its traceback and becomes INTERNAL "internal
error", because grpcio would otherwise send the exception's text (SQL, parameters, hashes) to
the client.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from luman.interceptors import call_context, metadata_keys
from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor
from luman.interceptors.errors import (
    DomainError,
    FailedPreconditionError,
    InvalidArgumentError,
    RetryableError,
)

logger = logging.getLogger(__name__)


# An exception the chain does not know -> the DomainError it stands for, or None.
Translate = Callable[[Exception], DomainError | None]


def _unknown(_exc: Exception) -> DomainError | None:
    return None


class _Status(
    collections.namedtuple("_Status", ("code", "details", "trailing_metadata")),
    grpc.Status,
):
    """The status argument of context.abort_with_status()."""


class ErrorMappingInterceptor(MethodInterceptor):
    """Aborts with the mapped status whatever the method raises, while it runs or, for a
    response stream, while grpcio iterates it.

    Args:
        translate: maps exceptions that are not DomainErrors (a database driver's, say) to the
            DomainError the client should see; None leaves them INTERNAL.
    """

    def __init__(self, translate: Translate = _unknown) -> None:
        super().__init__()
        self._translate = translate

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        name, translate = method.name, self._translate
        if method.response_streaming:

            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from behavior(request, context)
                except Exception as exc:
                    _abort_for(exc, name, context, translate)

            return streamed

        def mapped(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return behavior(request, context)
            except Exception as exc:
                _abort_for(exc, name, context, translate)

        return mapped


def _abort_for(
    exc: Exception, method_name: str, context: grpc.ServicerContext, translate: Translate
) -> NoReturn:
    """Abort the call with the status `exc` maps to (called while `exc` is being handled)."""
    if _already_aborted(context):
        raise exc
    known = exc if isinstance(exc, DomainError) else translate(exc)
    if known is not None:
        record = call_context.optional_call()
        if record is not None:
            record.reason = known.reason
        context.abort_with_status(status_for(known, method_name, _trailing(context)))
    else:
        logger.exception("unhandled exception in %s", method_name)
        context.abort_with_status(
            _Status(grpc.StatusCode.INTERNAL, "internal error", _trailing(context))
        )


def status_for(
    exc: DomainError,
    method_name: str,
    extra_metadata: tuple[tuple[str, str | bytes], ...] = (),
) -> _Status:
    """Build the status (with rich details) that `exc` is sent as."""
    details: list[Any] = [
        error_details_pb2.ErrorInfo(
            reason=exc.reason, domain=domain_of(method_name), metadata=exc.metadata
        )
    ]
    if isinstance(exc, InvalidArgumentError):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
    if isinstance(exc, FailedPreconditionError) and exc.violations:
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
    if isinstance(exc, RetryableError):
        retry = duration_pb2.Duration()
        retry.FromMilliseconds(max(0, round(exc.retry_after_seconds * 1000)))
        details.append(error_details_pb2.RetryInfo(retry_delay=retry))
    status = status_pb2.Status(code=exc.code.value[0], message=exc.message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    assert status.code != code_pb2.OK
    metadata = tuple((k, v) for k, v in extra_metadata if k != metadata_keys.STATUS_DETAILS)
    return _Status(
        exc.code,
        exc.message,
        (*metadata, (metadata_keys.STATUS_DETAILS, status.SerializeToString())),
    )


def domain_of(method_name: str) -> str:
    """'/luman.auth.v1.AuthService/Login' -> 'luman.auth.v1'."""
    service = method_name.lstrip("/").split("/", 1)[0]
    return service.rsplit(".", 1)[0] if "." in service else service


def _trailing(context: grpc.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
    # Keep trailers set earlier in the chain (rate-limit headers, for example).
    return tuple(context.trailing_metadata() or ())


def _already_aborted(context: grpc.ServicerContext) -> bool:
    # context.abort() raises a bare Exception after recording the status; let it through.
    code = cast(Any, context).code()  # grpc-stubs predates ServicerContext.code()
    return code is not None and code != grpc.StatusCode.OK
