"""Requests whose bytes do not decode into the method's message.

grpcio's own answer to such a request is INTERNAL "Exception deserializing request!" with an
ERROR traceback in the process log, before any interceptor runs: anyone could fill the log,
unauthenticated and unlimited, and the call left no request-log row. The chain instead installs
a deserializer that hands a `MalformedRequest` on instead of raising, so the call goes through
the stages like any other (logged as a row, counted per client IP by the rate limiter) and is
refused innermost, just before the servicer, with INVALID_ARGUMENT reason MALFORMED_REQUEST.
The process log gets at most one warning a minute with the count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from luman.interceptors.base import Behavior, MethodInfo
from luman.interceptors.errors import FieldViolation, InvalidArgumentError

logger = logging.getLogger(__name__)

REASON = "MALFORMED_REQUEST"
WARN_INTERVAL_SECONDS = 60.0

Deserializer = Callable[[bytes], Any]


class MalformedRequest:
    """Stands in for a request message that could not be decoded."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error  # the decoder's exception class name, for the warning


def tolerant(deserializer: Deserializer | None) -> Deserializer | None:
    """`deserializer`, answering undecodable bytes with a MalformedRequest instead of raising."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf's DecodeError, invalid UTF-8 in a string field, ...
            return MalformedRequest(type(exc).__name__)

    return deserialize


def refuse_malformed(method: MethodInfo, behavior: Behavior) -> Behavior:
    """`behavior`, refusing a MalformedRequest (or, for a request stream, the first one in it)."""
    name = method.name
    if method.request_streaming:

        def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            return behavior(_checked_stream(requests, name), context)

        return checked

    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, MalformedRequest):
            raise _refusal(name, request)
        return behavior(request, context)

    return guarded


def _checked_stream(requests: Iterator[Any], method_name: str) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, MalformedRequest):
            raise _refusal(method_name, request)
        yield request


class _Throttle:
    """Counts refusals and lets one warning through per interval."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._last: float | None = None

    def note(self) -> int:
        """Count one; the number to report when a warning is due now, else 0."""
        with self._lock:
            self._count += 1
            now = self._clock()
            if self._last is not None and now - self._last < self._interval:
                return 0
            self._last, count, self._count = now, self._count, 0
            return count


_warnings = _Throttle(WARN_INTERVAL_SECONDS)


def _refusal(method_name: str, request: MalformedRequest) -> InvalidArgumentError:
    count = _warnings.note()
    if count:
        logger.warning(
            "refused %d undecodable request(s) since the last report (latest: %s, %s)",
            count,
            method_name,
            request.error,
        )
    return InvalidArgumentError(
        [FieldViolation("request", "the request body is not a valid message of this method")],
        reason=REASON,
    )
