"""Tracing through the HTTP gateway: a call's traceparent header makes its span a child of
the caller's trace, as gRPC metadata does, and the trace id reaches the request log."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.models import RequestLog
from luman.server.db.session import Sessions
from tests.gateway.helpers import register
from tests.support import PASSWORD, FakeClock, unique_email
from tests.tracing_support import (
    GET_ME_SPAN,
    LOGIN_SPAN,
    attribute_text,
    children,
    hex_trace_id,
    in_memory_provider,
    only_server_span,
    traceparent,
)


@pytest.fixture
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider, exporter = in_memory_provider()
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def spans(tracing: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    return tracing[1]


@pytest.fixture
def app(
    settings: Settings,
    sessions: Sessions,
    clock: FakeClock,
    hasher: PasswordHasher,
    tracing: tuple[TracerProvider, InMemorySpanExporter],
) -> Iterator[App]:
    """The conftest's `app` with tracing on; the gateway fixtures stand in front of it."""
    server = build_server(
        settings, sessions, clock=clock, hasher=hasher, tracer_provider=tracing[0]
    )
    server.start()
    yield server
    server.stop(None)


def test_gateway_traceparent_header_is_the_parent(
    http: httpx.Client, spans: InMemorySpanExporter, sessions: Sessions, app: App
) -> None:
    email = unique_email("traced-http")
    register(http, email=email)
    header, trace_id, parent_id = traceparent()
    login = http.post(
        "/auth/login",
        json={"email": email, "password": PASSWORD},
        headers={"traceparent": header, "tracestate": "vendor=http"},
    )
    assert login.status_code == 200
    token = login.json()["tokens"]["accessToken"]
    me = http.get("/auth/me", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 200

    finished = spans.get_finished_spans()
    span = only_server_span(finished, LOGIN_SPAN)
    assert hex_trace_id(span) == trace_id
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == parent_id
    assert span.context is not None
    assert span.context.trace_state.get("vendor") == "http"
    assert span.attributes is not None
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["client.address"] == "127.0.0.1"
    # The hash and the statements of the HTTP call hang under its span too.
    under = children(finished, span)
    assert any(s.name == "bcrypt verify" for s in under)
    assert any(s.kind == SpanKind.CLIENT for s in under)
    assert PASSWORD not in attribute_text(finished)
    assert email not in attribute_text(finished)
    # Without a traceparent: a trace of its own.
    me_span = only_server_span(finished, GET_ME_SPAN)
    assert me_span.parent is None
    assert hex_trace_id(me_span) != trace_id

    assert app.request_log is not None
    assert app.request_log.flush(timeout=30)
    with sessions.read() as session:
        rows = {
            row.method.rsplit("/", 1)[1]: row.trace_id
            for row in session.scalars(sa.select(RequestLog))
        }
    assert rows["Login"] == trace_id
    assert rows["GetMe"] == hex_trace_id(me_span)
