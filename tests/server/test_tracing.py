"""OpenTelemetry tracing (server/luman/server/tracing.py, interceptors/tracing.py): a SERVER
span per RPC under the caller's traceparent, child spans for SQL statements and bcrypt, the
trace id in the request log and the process log; nothing at all when tracing is off; and the
spans reaching a real OTLP/HTTP receiver from `luman-server serve` configured by OTEL_*."""

from __future__ import annotations

import dataclasses
import gzip
import http.server
import io
import json
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.base import MethodInfo
from luman.interceptors.chain import InterceptorChain
from luman.interceptors.client_address import CallerResolver
from luman.interceptors.request_logging import RequestLoggingInterceptor
from luman.interceptors.tracing import TracingInterceptor
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import ConfigError, Settings
from luman.server.db.models import RequestLog
from luman.server.db.session import Sessions
from luman.server.gateway.in_process import InProcessContext
from luman.server.log_format import JsonFormatter
from luman.server.request_logs import query
from luman.server.tracing import DEFAULT_SERVICE_NAME, tracing_config
from tests.serve_process import free_port, serve_env, serving
from tests.support import PASSWORD, FakeClock, bearer, register, unique_email
from tests.tracing_support import (
    GET_ME_SPAN,
    LOGIN_SPAN,
    REGISTER_SPAN,
    attribute_text,
    children,
    hex_trace_id,
    in_memory_provider,
    only_server_span,
    traceparent,
)

CALL_TIMEOUT = 30.0


@dataclasses.dataclass
class Traced:
    app: App
    spans: InMemorySpanExporter
    auth: auth_service_pb2_grpc.AuthServiceStub
    channel: grpc.Channel


@pytest.fixture
def traced(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[Traced]:
    """The real server with tracing on, its spans kept in memory."""
    provider, exporter = in_memory_provider()
    app = build_server(settings, sessions, clock=clock, hasher=hasher, tracer_provider=provider)
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield Traced(app, exporter, auth_service_pb2_grpc.AuthServiceStub(channel), channel)
    finally:
        app.stop(None)
        provider.shutdown()


def _rows(sessions: Sessions) -> list[RequestLog]:
    with sessions.read() as session:
        return list(session.scalars(sa.select(RequestLog).order_by(RequestLog.id)))


def test_tracing_one_server_span_per_rpc_with_grpc_attributes(traced: Traced) -> None:
    token = register(traced.auth).tokens.access_token
    traced.spans.clear()
    traced.auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(token))
    with pytest.raises(grpc.RpcError) as refused:
        traced.auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer("not-a-token"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    ok, rejected = [s for s in traced.spans.get_finished_spans() if s.name == GET_ME_SPAN]
    for span in (ok, rejected):
        assert span.kind == SpanKind.SERVER
        assert span.parent is None  # no traceparent: a root span
        assert span.attributes is not None
        assert span.attributes["rpc.system"] == "grpc"
        assert span.attributes["rpc.service"] == "luman.auth.v1.AuthService"
        assert span.attributes["rpc.method"] == "GetMe"
        assert span.attributes["client.address"] == "127.0.0.1"
    assert ok.attributes is not None
    assert rejected.attributes is not None
    assert ok.attributes["rpc.grpc.status_code"] == 0
    assert ok.status.status_code == StatusCode.UNSET
    # A refusal is the server doing its job: the code is recorded, the span is no error
    # (gRPC semantic conventions, server side).
    assert rejected.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert rejected.status.status_code == StatusCode.UNSET


def test_tracing_incoming_traceparent_is_the_parent_on_grpc(traced: Traced) -> None:
    token = register(traced.auth).tokens.access_token
    header, trace_id, parent_id = traceparent()
    traced.auth.GetMe(
        auth_service_pb2.GetMeRequest(),
        metadata=(*bearer(token), ("traceparent", header), ("tracestate", "vendor=1")),
    )
    span = only_server_span(traced.spans.get_finished_spans(), GET_ME_SPAN)
    assert hex_trace_id(span) == trace_id
    assert span.parent is not None
    assert span.parent.is_remote
    assert f"{span.parent.span_id:016x}" == parent_id
    assert span.context is not None
    assert span.context.trace_state.get("vendor") == "1"


def test_tracing_malformed_traceparent_starts_a_new_trace(traced: Traced) -> None:
    register(traced.auth)
    traced.spans.clear()
    with pytest.raises(grpc.RpcError):
        traced.auth.GetMe(
            auth_service_pb2.GetMeRequest(), metadata=(("traceparent", "00-nonsense-01"),)
        )
    span = only_server_span(traced.spans.get_finished_spans(), GET_ME_SPAN)
    assert span.parent is None


def test_tracing_database_statements_are_child_spans_without_values(
    traced: Traced, sessions: Sessions
) -> None:
    email = unique_email("traced-sql")
    register(traced.auth, email=email)
    spans = traced.spans.get_finished_spans()
    register_span = only_server_span(spans, REGISTER_SPAN)
    statements = [s for s in children(spans, register_span) if s.kind == SpanKind.CLIENT]
    assert statements, [s.name for s in spans]
    inserts = []
    for span in statements:
        assert span.attributes is not None
        assert span.attributes["db.system"] == sessions.engine.dialect.name
        statement = str(span.attributes["db.statement"])
        assert span.attributes["db.operation"] == span.name == statement.split()[0].upper()
        if statement.upper().startswith("INSERT INTO USERS"):
            inserts.append(statement)
    assert len(inserts) == 1
    # Placeholders, never the bound values (qmark on SQLite, pyformat on psycopg).
    assert "?" in inserts[0] or "%(" in inserts[0]
    everything = attribute_text(spans)
    assert email not in everything
    assert PASSWORD not in everything
    assert "$2b$" not in everything  # no bcrypt hash either


def test_tracing_login_hash_check_is_a_child_span_from_the_hashing_thread(
    traced: Traced, hasher: PasswordHasher
) -> None:
    email = unique_email("traced-login")
    register(traced.auth, email=email)
    traced.spans.clear()
    header, trace_id, _ = traceparent()
    traced.auth.Login(
        auth_service_pb2.LoginRequest(email=email, password=PASSWORD),
        metadata=(("traceparent", header),),
    )
    spans = traced.spans.get_finished_spans()
    login = only_server_span(spans, LOGIN_SPAN)
    (verify,) = [s for s in children(spans, login) if s.name == "bcrypt verify"]
    assert hex_trace_id(verify) == trace_id
    assert verify.kind == SpanKind.INTERNAL
    assert verify.attributes is not None
    assert verify.attributes["luman.bcrypt.cost"] == hasher.rounds
    assert PASSWORD not in attribute_text(spans)


def test_tracing_trace_id_in_request_log_row_and_log_lines(
    traced: Traced, sessions: Sessions
) -> None:
    token = register(traced.auth).tokens.access_token
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("luman.interceptors.request_logging")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    header, trace_id, _ = traceparent()
    try:
        traced.auth.GetMe(
            auth_service_pb2.GetMeRequest(),
            metadata=(*bearer(token), ("traceparent", header), ("x-request-id", "req-trace-1")),
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)

    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["trace_id"] == trace_id
    assert line["request_id"] == "req-trace-1"
    assert f"trace={trace_id}" in line["message"]
    assert line["message"].startswith("rpc /luman.auth.v1.AuthService/GetMe OK")

    assert traced.app.request_log is not None
    assert traced.app.request_log.flush(timeout=CALL_TIMEOUT)
    rows = _rows(sessions)
    (get_me,) = [r for r in rows if r.method.endswith("/GetMe")]
    assert get_me.trace_id == trace_id
    (registered,) = [r for r in rows if r.method.endswith("/Register")]
    span = only_server_span(traced.spans.get_finished_spans(), REGISTER_SPAN)
    assert registered.trace_id == hex_trace_id(span)
    # `luman-server logs --json` shows it.
    shown = json.loads(query.render_json(query.recent(sessions.engine, query.LogFilter())))
    assert [row["trace_id"] for row in shown] == [hex_trace_id(span), trace_id]


def test_tracing_unsampled_caller_gets_no_span_and_no_trace_id(
    traced: Traced, sessions: Sessions
) -> None:
    token = register(traced.auth).tokens.access_token
    traced.spans.clear()
    header, _, _ = traceparent(sampled=False)
    # Parent-based sampling (the default) follows the caller's decision: nothing is recorded,
    # so no row points at a trace that was never exported.
    traced.auth.GetMe(
        auth_service_pb2.GetMeRequest(), metadata=(*bearer(token), ("traceparent", header))
    )
    assert traced.spans.get_finished_spans() == ()
    assert traced.app.request_log is not None
    assert traced.app.request_log.flush(timeout=CALL_TIMEOUT)
    (get_me,) = [r for r in _rows(sessions) if r.method.endswith("/GetMe")]
    assert get_me.trace_id is None


def test_tracing_health_checks_get_no_span(traced: Traced) -> None:
    health = health_pb2_grpc.HealthStub(traced.channel)
    response = health.Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert traced.spans.get_finished_spans() == ()


def test_tracing_off_adds_no_stage_no_hook_and_no_trace_id(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    assert settings.tracing is None
    hooks = _statement_hooks(sessions)
    app = build_server(settings, sessions, clock=clock, hasher=hasher)
    app.start()
    try:
        assert app.tracer_provider is None
        assert not any(isinstance(stage, TracingInterceptor) for stage in app.chain.stages)
        assert _statement_hooks(sessions) == hooks
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            auth = auth_service_pb2_grpc.AuthServiceStub(channel)
            header, _, _ = traceparent()
            token = register(auth).tokens.access_token
            auth.GetMe(
                auth_service_pb2.GetMeRequest(),
                metadata=(*bearer(token), ("traceparent", header)),
            )
        assert app.request_log is not None
        assert app.request_log.flush(timeout=CALL_TIMEOUT)
        assert all(row.trace_id is None for row in _rows(sessions))
    finally:
        app.stop(None)


def _statement_hooks(sessions: Sessions) -> int:
    """How many listeners the engine runs before each statement (tracing adds one; SQLAlchemy
    wraps each, so they are counted rather than named)."""
    return len(list(sessions.engine.dispatch.before_cursor_execute))


def test_tracing_stop_removes_the_statement_hooks(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    provider, _ = in_memory_provider()
    hooks = _statement_hooks(sessions)
    app = build_server(settings, sessions, clock=clock, hasher=hasher, tracer_provider=provider)
    assert _statement_hooks(sessions) == hooks + 1
    app.start()
    app.stop(None)
    assert _statement_hooks(sessions) == hooks
    provider.shutdown()


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INTERNAL, True),
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.NOT_FOUND, False),
        (grpc.StatusCode.PERMISSION_DENIED, False),
    ],
)
def test_tracing_span_status_is_error_for_server_failures_only(
    code: grpc.StatusCode, error: bool
) -> None:
    provider, exporter = in_memory_provider()
    chain = InterceptorChain(
        [
            RequestLoggingInterceptor(None, CallerResolver()),
            TracingInterceptor(provider.get_tracer("test"), skip=lambda _: False),
        ]
    )

    def fails(request: object, context: grpc.ServicerContext) -> object:
        context.abort(code, "no")

    behavior = chain.wrap(MethodInfo("/pkg.Service/Method", False, False), fails)
    result = InProcessContext((), "ipv4:192.0.2.1:0", 5).run(
        behavior, auth_service_pb2.GetMeRequest(), "/pkg.Service/Method"
    )
    assert result.code == code
    (span,) = exporter.get_finished_spans()
    assert span.name == "pkg.Service/Method"
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == code.value[0]
    assert span.attributes["client.address"] == "192.0.2.1"
    assert span.status.status_code == (StatusCode.ERROR if error else StatusCode.UNSET)
    # An exception that escapes every stage: UNKNOWN, an error.
    exporter.clear()

    def raises(request: object, context: grpc.ServicerContext) -> object:
        raise RuntimeError("boom")

    behavior = chain.wrap(MethodInfo("/pkg.Service/Other", False, False), raises)
    InProcessContext((), "ipv4:192.0.2.1:0", 5).run(
        behavior, auth_service_pb2.GetMeRequest(), "/pkg.Service/Other"
    )
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNKNOWN.value[0]
    assert span.status.status_code == StatusCode.ERROR
    provider.shutdown()


# --- Settings: the standard OTEL_* variables ------------------------------------------------


def test_tracing_config_off_unless_told_where_spans_go() -> None:
    assert tracing_config({}) is None
    assert tracing_config({"OTEL_SERVICE_NAME": "luman-eu"}) is None
    assert tracing_config({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert (
        tracing_config(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}
        )
        is None
    )
    assert (
        tracing_config(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}
        )
        is None
    )


def test_tracing_config_endpoints_follow_the_specification() -> None:
    general = tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert general is not None
    assert general.endpoint == "http://collector:4318/v1/traces"
    assert general.service_name == DEFAULT_SERVICE_NAME
    assert general.sampler == "parentbased_always_on"
    specific = tracing_config(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example.com/custom",
        }
    )
    assert specific is not None
    assert specific.endpoint == "https://traces.example.com/custom"
    default = tracing_config({"OTEL_TRACES_EXPORTER": "otlp"})
    assert default is not None
    assert default.endpoint == "http://localhost:4318/v1/traces"
    full = tracing_config(
        {
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_SERVICE_NAME": "luman-eu",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=id%20platform",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cr3t",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        }
    )
    assert full is not None
    assert full.exporter == "console"
    assert full.service_name == "luman-eu"
    assert dict(full.resource_attributes) == {
        "deployment.environment": "prod",
        "team": "id platform",
    }
    assert dict(full.headers) == {"api-key": "s3cr3t"}
    assert "s3cr3t" not in repr(full)
    assert (full.sampler, full.sampler_arg) == ("parentbased_traceidratio", 0.25)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "grpc://collector"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_SDK_DISABLED", "maybe"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "s3cr3t-without-a-name"),
    ],
)
def test_tracing_config_bad_variable_stops_start_up(tmp_path: Path, name: str, value: str) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path), name: value}
    if name == "OTEL_TRACES_SAMPLER_ARG":
        env["OTEL_TRACES_SAMPLER"] = "traceidratio"
    with pytest.raises(ConfigError, match=name) as failed:
        Settings.from_env(env)
    assert "s3cr3t" not in str(failed.value)


def test_tracing_config_reaches_the_settings(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"LUMAN_DATA_DIR": str(tmp_path), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    )
    assert settings.tracing is not None
    assert settings.tracing.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path)}).tracing is None


# --- A real OTLP/HTTP receiver ---------------------------------------------------------------


class _Receiver(http.server.ThreadingHTTPServer):
    """Accepts OTLP/HTTP protobuf exports on POST /v1/traces and keeps their spans."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.spans: list[tuple[dict[str, str], trace_pb2.Span]] = []
        self.paths: list[str] = []
        self.changed = threading.Condition()

    def wait_for(self, name: str, timeout: float) -> trace_pb2.Span:
        def found() -> trace_pb2.Span | None:
            return next((span for _, span in self.spans if span.name == name), None)

        with self.changed:
            assert self.changed.wait_for(lambda: found() is not None, timeout), self.paths
            span = found()
        assert span is not None
        return span


class _ReceiverHandler(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.server.changed:
            self.server.paths.append(self.path)
            if self.path == "/v1/traces":
                for resource_spans in request.resource_spans:
                    resource = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    for scope_spans in resource_spans.scope_spans:
                        self.server.spans.extend((resource, s) for s in scope_spans.spans)
            self.server.changed.notify_all()
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_tracing_spans_reach_a_real_otlp_http_receiver(
    tmp_path: Path, database_url: str, receiver: _Receiver
) -> None:
    port = free_port()
    env = serve_env(
        tmp_path,
        database_url,
        port,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_address[1]}",
        OTEL_SERVICE_NAME="luman-otlp-test",
        # The batch leaves 50 ms after its first span instead of 5 s: the test waits for the
        # export to arrive, never for a fixed time.
        OTEL_BSP_SCHEDULE_DELAY="50",
        BCRYPT_ROUNDS="4",
    )
    # Only ours: no OTEL_* of the test's environment, and no proxy for a loopback export.
    ours = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_BSP_SCHEDULE_DELAY")
    for key in list(env):
        if key.lower().endswith("_proxy") or (key.startswith("OTEL_") and key not in ours):
            del env[key]
    header, trace_id, parent_id = traceparent()
    with (
        serving(tmp_path, env) as process,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        try:
            grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
        except grpc.FutureTimeoutError:
            process.kill()
            _, stderr = process.communicate()
            raise AssertionError(f"the server did not start: {stderr}") from None
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        auth.Register(
            auth_service_pb2.RegisterRequest(
                email=unique_email("otlp"), password=PASSWORD, name="Otlp"
            ),
            metadata=(("traceparent", header),),
            timeout=CALL_TIMEOUT,
        )
        span = receiver.wait_for(REGISTER_SPAN, timeout=CALL_TIMEOUT)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=CALL_TIMEOUT)

    assert receiver.paths
    assert set(receiver.paths) == {"/v1/traces"}
    assert span.trace_id.hex() == trace_id
    assert span.parent_span_id.hex() == parent_id
    assert span.kind == trace_pb2.Span.SPAN_KIND_SERVER
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["rpc.system"].string_value == "grpc"
    assert attributes["rpc.method"].string_value == "Register"
    assert attributes["rpc.grpc.status_code"].int_value == 0
    resources = [r for r, s in receiver.spans if s.name == REGISTER_SPAN]
    assert resources[0]["service.name"] == "luman-otlp-test"
    # The statements and the hash of the same call came along, under its span.
    under = [s for _, s in receiver.spans if s.parent_span_id == span.span_id]
    assert any(s.name == "bcrypt hash" for s in under), [s.name for s in under]
    assert any(s.name == "INSERT" for s in under), [s.name for s in under]
    assert "tracing on: spans to" in stderr
