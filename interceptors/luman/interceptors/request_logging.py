"""RequestLoggingInterceptor: one entry per RPC, handed to a sink that must never block.

It is the outermost interceptor, so it sees the final status of every call, including those
that rate limiting or token auth rejected. It opens the call's CallRecord (client IP, user
agent) for the inner interceptors and reads back the user that token verification recorded.

An entry holds the time, full method name, status code name ("OK", "UNAUTHENTICATED", …),
duration, user id, client IP and user agent: never a request or response body, and never
metadata values such as tokens.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import grpc
from grpc_interceptor import ServerInterceptor

from luman.interceptors.caller import CallRecord, ResolveCaller, call_scope

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RequestLogEntry:
    time: dt.datetime
    method: str
    status: str
    duration_ms: float
    user_id: uuid.UUID | None
    client_ip: str
    user_agent: str


Sink = Callable[[RequestLogEntry], None]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RequestLoggingInterceptor(ServerInterceptor):
    """Records every call to `sink` and as one log line.

    Args:
        sink: receives each entry; it must return at once (the server passes a bounded queue).
        caller_of: resolves the client IP and user agent.
        clock: wall-clock time of the call (aware UTC).
        timer: monotonic seconds for the duration.
        skip: method names kept out of the sink (health checks and reflection, which would
            bury the calls an operator is looking for); they still get a DEBUG log line.
    """

    def __init__(
        self,
        sink: Sink,
        caller_of: ResolveCaller,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        timer: Callable[[], float] = time.perf_counter,
        skip: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self._sink = sink
        self._caller_of = caller_of
        self._clock = clock
        self._timer = timer
        self._skip = skip

    def intercept(
        self,
        method: Callable[[Any, grpc.ServicerContext], Any],
        request_or_iterator: Any,
        context: grpc.ServicerContext,
        method_name: str,
    ) -> Any:
        record = CallRecord(caller=self._caller_of(context))
        started_at = self._clock()
        started = self._timer()
        with call_scope(record):
            try:
                response = method(request_or_iterator, context)
            except BaseException:
                self._finish(record, method_name, context, started_at, started, failed=True)
                raise
        if isinstance(response, Iterator):
            # A streaming response runs while grpcio iterates it, after this method returned.
            return self._streamed(response, record, method_name, context, started_at, started)
        self._finish(record, method_name, context, started_at, started, failed=False)
        return response

    def _streamed(
        self,
        responses: Iterator[Any],
        record: CallRecord,
        method_name: str,
        context: grpc.ServicerContext,
        started_at: dt.datetime,
        started: float,
    ) -> Iterator[Any]:
        failed = True
        try:
            with call_scope(record):
                yield from responses
            failed = False
        finally:
            self._finish(record, method_name, context, started_at, started, failed=failed)

    def _finish(
        self,
        record: CallRecord,
        method_name: str,
        context: grpc.ServicerContext,
        started_at: dt.datetime,
        started: float,
        *,
        failed: bool,
    ) -> None:
        duration_ms = (self._timer() - started) * 1000
        status = _status_name(context, failed=failed)
        skipped = self._skip(method_name)
        logger.log(
            logging.DEBUG if skipped else logging.INFO,
            "rpc %s %s %.1fms ip=%s",
            method_name,
            status,
            duration_ms,
            record.caller.ip,
        )
        if skipped:
            return
        entry = RequestLogEntry(
            time=started_at,
            method=method_name,
            status=status,
            duration_ms=duration_ms,
            user_id=record.user_id,
            client_ip=record.caller.ip,
            user_agent=record.caller.user_agent,
        )
        try:
            self._sink(entry)
        except Exception:
            # The log is never a reason for an RPC to fail.
            logger.exception("request log sink failed")


def _status_name(context: grpc.ServicerContext, *, failed: bool) -> str:
    code = cast(Any, context).code()  # grpc-stubs predates ServicerContext.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    # No status was set: grpcio answers a returned response with OK and an escaped
    # exception with UNKNOWN.
    return grpc.StatusCode.UNKNOWN.name if failed else grpc.StatusCode.OK.name
