"""OpenTelemetry in tests: a provider whose spans land in memory, and ways to look at them."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

GET_ME_SPAN = "luman.auth.v1.AuthService/GetMe"
LOGIN_SPAN = "luman.auth.v1.AuthService/Login"
REGISTER_SPAN = "luman.auth.v1.AuthService/Register"


def in_memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider exporting each span as it ends (SimpleSpanProcessor): a span a server ended
    before answering is in the exporter when the client has the answer."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """A caller's traceparent: (header value, trace id, parent span id), all lowercase hex."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


def hex_trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def server_spans(spans: Iterable[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name and s.kind == SpanKind.SERVER]


def only_server_span(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = server_spans(spans, name)
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def children(spans: Iterable[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def attribute_text(spans: Iterable[ReadableSpan]) -> str:
    """Every attribute value of every span (and of its events), as one string to search."""
    values: list[str] = []
    for span in spans:
        values.extend(str(v) for v in (span.attributes or {}).values())
        for event in span.events:
            values.extend(str(v) for v in (event.attributes or {}).values())
        values.append(span.name)
    return "\n".join(values)
