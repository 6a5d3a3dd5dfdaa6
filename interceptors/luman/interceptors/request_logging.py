"""RequestLoggingInterceptor: the outermost stage. Opens each call's record, and hands one entry
per call to a sink that must never block.

Being outermost, it sees the final status of every call, including those that rate limiting or
token authentication rejected. It opens the call's CallRecord (client IP, user agent,
authorization values) for the stages inside and reads back the user that token authentication
recorded on it.

An entry holds the time, full method name, status code name ("OK", "UNAUTHENTICATED", …),
duration, user id, client IP, user agent and, when the call was traced, its trace id: never a
request or response body, and never metadata values such as tokens. The `rpc …` line in the
process log (with `trace=` when traced) is written at DEBUG only: the request log itself is the
record of every call.

It is also where the server's metrics count calls (`observe`: started, then code and duration),
health checks and reflection included, so that per-call counting happens in one place.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import grpc

from luman.interceptors import call_context
from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor
from luman.interceptors.call_context import CallRecord
from luman.interceptors.client_address import CallerResolver

logger = logging.getLogger(__name__)


class RequestLogEntry(NamedTuple):
    time: dt.datetime
    method: str
    status: str
    duration_ms: float
    user_id: uuid.UUID | None
    client_ip: str
    user_agent: str
    # The call's trace id when it was traced (interceptors/tracing.py), else None.
    trace_id: str | None = None
    # The ErrorInfo reason of a failed call ("INVALID_CREDENTIALS"), else None.
    reason: str | None = None


Sink = Callable[[RequestLogEntry], None]


class MethodObserver(Protocol):
    """Counts one method's calls (the server's metrics): told as each call starts, and once it
    is over, with its status name ("OK", …), its duration and its context (for the trailing
    metadata of a failed call). Both must return at once and never raise."""

    def started(self) -> None: ...

    def finished(self, status: str, seconds: float, context: grpc.ServicerContext) -> None: ...


# Resolved once per method, when the chain wraps it, so a call pays no label lookup.
Observe = Callable[[MethodInfo], MethodObserver]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RequestLoggingInterceptor(MethodInterceptor):
    """Opens every call's record and records every call to `sink` (and, at DEBUG, as a line).

    Args:
        sink: receives each entry; it must return at once (the server passes a bounded queue).
            None when the request log is off: the stage then only opens the records.
        resolver: turns the call's peer and metadata into its client address and user agent.
        clock: wall-clock time of the call (aware UTC).
        timer: monotonic seconds for the duration.
        skip: method names kept out of the sink (health checks and reflection, which would
            bury the calls an operator is looking for); they still get the DEBUG log line.
        observe: the metrics' observer of each method (all of them, skipped ones included);
            None: no metrics.
    """

    def __init__(
        self,
        sink: Sink | None,
        resolver: CallerResolver,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        timer: Callable[[], float] = time.perf_counter,
        skip: Callable[[str], bool] = lambda _: False,
        observe: Observe | None = None,
    ) -> None:
        self._sink = sink
        self._observe = observe
        self._resolver = resolver
        self._clock = clock
        self._timer = timer
        self._skip = skip

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        name = method.name
        sink = None if self._skip(name) else self._sink
        resolver, clock, timer = self._resolver, self._clock, self._timer
        observer = None if self._observe is None else self._observe(method)
        if method.response_streaming:

            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                # Runs while grpcio iterates the responses: the call ends with the stream.
                record = call_context.open_record(resolver, context)
                started_at, started = clock(), timer()
                if observer is not None:
                    observer.started()
                failed = True
                token = call_context.enter(record)
                try:
                    yield from behavior(request, context)
                    failed = False
                finally:
                    # Inside the call's context: the log line carries its request id.
                    try:
                        self._finish(
                            sink, observer, name, record, context, started_at, started, failed
                        )
                    finally:
                        call_context.leave(token)

            return streamed

        def logged(request: Any, context: grpc.ServicerContext) -> Any:
            record = call_context.open_record(resolver, context)
            started_at, started = clock(), timer()
            if observer is not None:
                observer.started()
            failed = True
            token = call_context.enter(record)
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                # Inside the call's context: the log line carries its request id.
                try:
                    self._finish(sink, observer, name, record, context, started_at, started, failed)
                finally:
                    call_context.leave(token)

        return logged

    def _finish(
        self,
        sink: Sink | None,
        observer: MethodObserver | None,
        method_name: str,
        record: CallRecord,
        context: grpc.ServicerContext,
        started_at: dt.datetime,
        started: float,
        failed: bool,
    ) -> None:
        duration_ms = (self._timer() - started) * 1000
        code = context.code()  # type: ignore[attr-defined]  # grpc-stubs predates code()
        # No status set: grpcio answers a returned response with OK, an escaped exception
        # with UNKNOWN.
        if isinstance(code, grpc.StatusCode):
            status = code.name
        else:
            status = grpc.StatusCode.UNKNOWN.name if failed else grpc.StatusCode.OK.name
        if observer is not None:
            observer.finished(status, duration_ms / 1000, context)
        caller = record.caller
        if logger.isEnabledFor(logging.DEBUG):
            if record.trace_id:
                logger.debug(
                    "rpc %s %s %.1fms ip=%s trace=%s",
                    method_name,
                    status,
                    duration_ms,
                    caller.ip,
                    record.trace_id,
                )
            else:
                logger.debug("rpc %s %s %.1fms ip=%s", method_name, status, duration_ms, caller.ip)
        if sink is None:
            return
        principal = record.principal
        entry = RequestLogEntry(
            started_at,
            method_name,
            status,
            duration_ms,
            # The user, or the service account, that called (ids never collide: UUID4).
            None if principal is None else principal.subject_id,
            caller.ip,
            caller.user_agent,
            record.trace_id or None,
            record.reason or None,
        )
        try:
            sink(entry)
        except Exception:
            # The log is never a reason for an RPC to fail.
            logger.exception("request log sink failed")
