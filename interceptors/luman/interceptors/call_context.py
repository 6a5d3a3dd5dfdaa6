"""The record of the call being served: who called, with what credential, proved as whom.

RequestLoggingInterceptor, the outermost stage, opens a CallRecord for each call from its peer
and metadata (one pass over the metadata) and closes it when the call ends; the stages inside
read it (`current_call()`): the per-IP limit its client address, token authentication its
authorization values, which then records the verified principal on it for the per-user limit,
the servicers (`current_principal()`) and, once the call is over, the request log.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import TYPE_CHECKING

import grpc

from luman.interceptors import metadata_keys
from luman.interceptors.client_address import CALLER_KEYS, Caller, CallerResolver

if TYPE_CHECKING:
    from luman.interceptors.principal import Principal


@dataclasses.dataclass(slots=True)
class CallRecord:
    """One call's identity. `principal` is set by token authentication once a token checks out."""

    caller: Caller
    # The call's "authorization" metadata values, text or (malformed) binary, in order.
    authorization: tuple[str | bytes, ...] = ()
    principal: Principal | None = None
    # The client's x-request-id metadata as sent (the last one); only an audit event reads
    # it, and checks it then (audit/record.py): a call that records nothing pays nothing more.
    request_id: str = ""
    # The OpenTelemetry trace id (32 hex digits) when tracing is on and the call's span is
    # sampled (interceptors/tracing.py); the request log and the process log carry it.
    trace_id: str = ""
    # The ErrorInfo reason of the call's error ("PROVIDER_ACCESS_DENIED"), set as the error is
    # mapped (error_mapping.py); the request log keeps it.
    reason: str = ""


_current: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "luman_call", default=None
)


def open_record(resolver: CallerResolver, context: grpc.ServicerContext) -> CallRecord:
    """The record of the call `context` belongs to, its metadata read once."""
    found: dict[str, list[str]] = {}
    authorization: list[str | bytes] = []
    request_id = ""
    for key, value in context.invocation_metadata() or ():
        if key == metadata_keys.AUTHORIZATION:
            authorization.append(value)  # binary too: token authentication refuses it
        elif key in CALLER_KEYS and isinstance(value, str):
            found.setdefault(key, []).append(value)
        elif key == metadata_keys.REQUEST_ID and isinstance(value, str):
            request_id = value
    return CallRecord(
        resolver.from_headers(context.peer(), found), tuple(authorization), request_id=request_id
    )


def enter(record: CallRecord) -> contextvars.Token[CallRecord | None]:
    """Make `record` the current call's; hand the result to `leave()` when the call ends.

    grpcio reuses its worker threads, so leaving is what keeps one call's record out of the
    next one's."""
    return _current.set(record)


def leave(token: contextvars.Token[CallRecord | None]) -> None:
    _current.reset(token)


def current_call() -> CallRecord:
    """The record of the call being served.

    Raises:
        RuntimeError: outside a call, or in a chain without RequestLoggingInterceptor outermost.
    """
    record = _current.get()
    if record is None:
        raise RuntimeError("no call record: RequestLoggingInterceptor must be the outermost stage")
    return record


def optional_call() -> CallRecord | None:
    return _current.get()
