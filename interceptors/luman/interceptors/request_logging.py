"""RequestLoggingInterceptor: one entry per RPC, handed to a sink that must never block.

It is the outermost interceptor, so it sees the final status of every call, including those
that rate limiting or token auth rejected. It opens the call's CallRecord (client IP, user
agent) for the inner interceptors and reads back the user that token verification recorded.

An entry holds the time, full method name, status code name ("OK", "UNAUTHENTICATED", …),
duration, user id, client IP and user agent: never a request or response body, and never
metadata values such as tokens.

The request log itself is the record of every call; the `rpc …` log line is only written at
DEBUG. At INFO it cost a formatted line and the logging handler's lock on every call, which
the server's worker threads then queued for.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import grpc

from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor
from luman.interceptors.caller import CallerResolver, CallRecord, close_call, open_call

logger = logging.getLogger(__name__)


class RequestLogEntry(NamedTuple):
    time: dt.datetime
    method: str
    status: str
    duration_ms: float
    user_id: uuid.UUID | None
    client_ip: str
    user_agent: str


Sink = Callable[[RequestLogEntry], None]

# tuple.__new__(RequestLogEntry, fields): the NamedTuple without its Python-level __new__.
_new_entry = tuple.__new__
_OK = grpc.StatusCode.OK.name
_UNKNOWN = grpc.StatusCode.UNKNOWN.name


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RequestLoggingInterceptor(MethodInterceptor):
    """Records every call to `sink` (and, at DEBUG, as one log line).

    Args:
        sink: receives each entry; it must return at once (the server passes a bounded queue).
        resolver: opens each call's record (client IP, user agent, authorization).
        clock: wall-clock time of the call (aware UTC).
        timer: monotonic seconds for the duration.
        skip: method names kept out of the sink (health checks and reflection, which would
            bury the calls an operator is looking for); they still get the DEBUG log line.
    """

    def __init__(
        self,
        sink: Sink,
        resolver: CallerResolver,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        timer: Callable[[], float] = time.perf_counter,
        skip: Callable[[str], bool] = lambda _: False,
    ) -> None:
        super().__init__()
        self._sink = sink
        self._resolver = resolver
        self._clock = clock
        self._timer = timer
        self._skip = skip

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        name = method.name
        sink = None if self._skip(name) else self._sink
        open_record, clock, timer = self._resolver.open_record, self._clock, self._timer
        finish = self._finish
        if method.response_streaming:

            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                # Runs while grpcio iterates the responses: the call ends with the stream.
                record = open_record(context)
                started_at, started = clock(), timer()
                failed = True
                token = open_call(record)
                try:
                    yield from behavior(request, context)
                    failed = False
                finally:
                    close_call(token)
                    finish(sink, name, record, context, started_at, started, failed)

            return streamed

        def logged(request: Any, context: grpc.ServicerContext) -> Any:
            record = open_record(context)
            started_at, started = clock(), timer()
            token = open_call(record)
            try:
                response = behavior(request, context)
            except BaseException:
                finish(sink, name, record, context, started_at, started, True)
                raise
            finally:
                close_call(token)
            finish(sink, name, record, context, started_at, started, False)
            return response

        return logged

    def _finish(
        self,
        sink: Sink | None,
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
        status = code.name if isinstance(code, grpc.StatusCode) else _UNKNOWN if failed else _OK
        caller = record.caller
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("rpc %s %s %.1fms ip=%s", method_name, status, duration_ms, caller.ip)
        if sink is None:
            return
        entry = _new_entry(
            RequestLogEntry,
            (
                started_at,
                method_name,
                status,
                duration_ms,
                record.user_id,
                caller.ip,
                caller.user_agent,
            ),
        )
        try:
            sink(entry)
        except Exception:
            # The log is never a reason for an RPC to fail.
            logger.exception("request log sink failed")
