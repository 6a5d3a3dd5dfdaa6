"""TracingInterceptor: one OpenTelemetry SERVER span per RPC, and the helpers that hang child
spans (database statements, password hashes) under it.

The stage sits just inside RequestLoggingInterceptor, so every call it traces has a record
(call_context.py): it reads the client's address from it and writes the trace id on it, which
the request log row, the `rpc …` log line and LOG_FORMAT=json lines then carry. It is in the
chain only when tracing is on (server/luman/server/tracing.py): off, a call pays nothing.

Spans follow the gRPC semantic conventions: named "package.Service/Method", kind SERVER,
`rpc.system` "grpc", `rpc.service`, `rpc.method`, `rpc.grpc.status_code`, `client.address`.
Their status is ERROR only for the codes the conventions count as a server's own failure
(UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS); a refusal such
as NOT_FOUND or UNAUTHENTICATED is the server working, its code is in `rpc.grpc.status_code`.

A W3C `traceparent` (and `tracestate`) in the call's metadata makes the span its child: the
HTTP gateway passes those headers on as metadata, so both ports honour them. Health checks and
reflection get no span.

The span's context also carries the stage's tracer (`traced_context()`): code below the chain
(the database hooks, the password hasher, whose work runs on threads of its own) starts child
spans with it, and does nothing at all outside a traced call, so background threads make no
orphan root spans, and one process may hold servers with different tracer providers (tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextvars import Token
from typing import Any, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from luman.interceptors import call_context, metadata_keys
from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor

_T = TypeVar("_T")

PROPAGATION_KEYS = (metadata_keys.TRACEPARENT, metadata_keys.TRACESTATE)

# The gRPC semantic conventions' server-side errors; every other code leaves the status unset.
SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

_TRACER_KEY = otel_context.create_key("luman-tracer")
_PROPAGATOR = TraceContextTextMapPropagator()


def trace_id_hex(span_context: trace.SpanContext) -> str:
    """The trace id as W3C trace-context writes it: 32 lowercase hex digits."""
    return trace.format_trace_id(span_context.trace_id)


class TracingInterceptor(MethodInterceptor):
    """Opens a SERVER span around every call of the methods `skip` does not name.

    Args:
        tracer: makes the spans (one from the server's TracerProvider).
        skip: methods left untraced (health checks and reflection).
    """

    def __init__(self, tracer: trace.Tracer, *, skip: Callable[[str], bool]) -> None:
        self._tracer = tracer
        self._skip = skip

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        if self._skip(method.name):
            return behavior
        span_name = method.name.lstrip("/")
        service, _, rpc_method = span_name.partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc_method}
        if method.response_streaming:

            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                span, token = self._start(span_name, attributes, context)
                failed = True
                try:
                    yield from behavior(request, context)
                    failed = False
                finally:
                    _end(span, token, context, failed)

            return streamed

        def traced(request: Any, context: grpc.ServicerContext) -> Any:
            span, token = self._start(span_name, attributes, context)
            failed = True
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                _end(span, token, context, failed)

        return traced

    def _start(
        self, name: str, attributes: Mapping[str, str], context: grpc.ServicerContext
    ) -> tuple[trace.Span, Token[otel_context.Context]]:
        carrier = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if key in PROPAGATION_KEYS and isinstance(value, str)
        }
        # From an empty context: a worker thread carries nothing of an earlier call.
        parent = _PROPAGATOR.extract(carrier, context=otel_context.Context())
        parent = otel_context.set_value(_TRACER_KEY, self._tracer, parent)
        record = call_context.optional_call()
        if record is not None and record.caller.ip:
            attributes = {**attributes, "client.address": record.caller.ip}
        span = self._tracer.start_span(name, parent, SpanKind.SERVER, attributes)
        span_context = span.get_span_context()
        # Only a sampled span is exported: a trace id elsewhere would point at nothing.
        if record is not None and span_context.trace_flags.sampled:
            record.trace_id = trace_id_hex(span_context)
        return span, otel_context.attach(trace.set_span_in_context(span, parent))


def _end(
    span: trace.Span,
    token: Token[otel_context.Context],
    context: grpc.ServicerContext,
    failed: bool,
) -> None:
    try:
        code = context.code()  # type: ignore[attr-defined]  # grpc-stubs predates code()
        if not isinstance(code, grpc.StatusCode):
            # As RequestLoggingInterceptor: grpcio answers a returned response with OK, an
            # escaped exception with UNKNOWN.
            code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in SERVER_ERROR_CODES:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()
    finally:
        otel_context.detach(token)


def traced_context() -> otel_context.Context | None:
    """The current context when it belongs to a traced call whose span is recording, else
    None. Hand it to `child_span` on another thread."""
    current = otel_context.get_current()
    if otel_context.get_value(_TRACER_KEY, current) is None:
        return None
    if not trace.get_current_span(current).is_recording():
        return None
    return current


def start_child_span(
    name: str,
    attributes: Mapping[str, str | int],
    parent: otel_context.Context | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
) -> trace.Span | None:
    """A child of the traced call's span (of `parent`'s, from `traced_context()`, or of the
    current one's); None outside a traced call. The caller ends it."""
    if parent is None:
        parent = traced_context()
        if parent is None:
            return None
    tracer = otel_context.get_value(_TRACER_KEY, parent)
    if not isinstance(tracer, trace.Tracer):
        return None
    return tracer.start_span(name, parent, kind, attributes)


def run_in_child_span(
    parent: otel_context.Context,
    name: str,
    attributes: Mapping[str, str | int],
    work: Callable[..., _T],
    *args: Any,
) -> _T:
    """Run `work(*args)` in a child span of `parent`'s (on whichever thread this runs on:
    the context is passed in, not inherited)."""
    span = start_child_span(name, attributes, parent)
    if span is None:
        return work(*args)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        return work(*args)
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()
        otel_context.detach(token)
