"""OpenTelemetry tracing: the TracerProvider built from the standard OTEL_* variables, and the
spans of database statements.

Off unless the environment names somewhere to send spans: OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (OTLP over HTTP/protobuf), or OTEL_TRACES_EXPORTER=otlp
(to http://localhost:4318) or =console. OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none
keep it off whatever else is set. Off, no provider exists, no stage is added to the chain and
no hook to the engine: a call costs what it did before tracing existed.

On, build_server adds interceptors/tracing.py's stage (a SERVER span per RPC), hooks the
engine (`trace_statements`: a CLIENT span per statement) and the password hasher makes a span
per hash; spans leave in batches (BatchSpanProcessor) from a thread of the SDK's own.

Read here, from the settings (so ./.env counts, like every other setting): the endpoints,
OTEL_EXPORTER_OTLP_[TRACES_]HEADERS, OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL (http/protobuf only),
OTEL_SERVICE_NAME (default "luman"), OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and
OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on: a caller's sampling decision, in its
traceparent, is followed). The SDK itself reads the rest from the process environment: the
exporter's timeout, compression and certificates, the batch processor's OTEL_BSP_* sizes.
Propagation is W3C trace-context (`traceparent`, `tracestate`) only.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import Engine, event

from luman.interceptors import tracing as call_tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "luman"
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
TRACES_PATH = "/v1/traces"
EXPORTERS = ("otlp", "console", "none")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
# Longer statements are cut in their span (an IN list of thousands of placeholders).
MAX_STATEMENT_CHARS = 4096
_SPANS_KEY = "luman_trace_spans"


class TracingConfigError(ValueError):
    """An OTEL_* variable is malformed; the message names it (and never repeats a header)."""


@dataclasses.dataclass(frozen=True)
class TracingConfig:
    """Where spans go and how they are sampled (Settings.tracing; None: tracing is off)."""

    exporter: str = "otlp"  # "otlp" or "console"
    endpoint: str = DEFAULT_OTLP_ENDPOINT + TRACES_PATH  # the full URL spans are POSTed to
    # Sent with every export; often an API key, so kept out of repr() and error messages.
    headers: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: tuple[tuple[str, str], ...] = ()
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0


def tracing_config(env: Mapping[str, str]) -> TracingConfig | None:
    """The tracing configuration the OTEL_* variables in `env` describe; None: tracing off.

    Raises:
        TracingConfigError: naming the first malformed variable.
    """

    def get(name: str) -> str:
        return env.get(name, "").strip()

    disabled = get("OTEL_SDK_DISABLED").lower()
    if disabled not in ("", "true", "false"):
        raise TracingConfigError(f"OTEL_SDK_DISABLED must be true or false, got {disabled!r}")
    exporters = [e.strip().lower() for e in get("OTEL_TRACES_EXPORTER").split(",") if e.strip()]
    for exporter in exporters:
        if exporter not in EXPORTERS:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER must be one of {', '.join(EXPORTERS)}, got {exporter!r}"
            )
    traces_endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base_endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT")
    for name, value in (
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_endpoint),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", base_endpoint),
    ):
        parts = urllib.parse.urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise TracingConfigError(
                f"{name} must be an http:// or https:// URL, got one with scheme "
                f"{parts.scheme!r} and host {parts.hostname!r}"
            )
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = get(name)
        if protocol and protocol != "http/protobuf":
            raise TracingConfigError(
                f"{name} must be http/protobuf (the one OTLP exporter installed), got {protocol!r}"
            )
    sampler = get("OTEL_TRACES_SAMPLER").lower() or "parentbased_always_on"
    if sampler not in SAMPLERS:
        raise TracingConfigError(
            f"OTEL_TRACES_SAMPLER must be one of {', '.join(SAMPLERS)}, got {sampler!r}"
        )
    sampler_arg = 1.0
    if "traceidratio" in sampler and get("OTEL_TRACES_SAMPLER_ARG"):
        try:
            sampler_arg = float(get("OTEL_TRACES_SAMPLER_ARG"))
        except ValueError:
            sampler_arg = -1.0
        if not 0.0 <= sampler_arg <= 1.0:
            raise TracingConfigError(
                "OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, "
                f"got {get('OTEL_TRACES_SAMPLER_ARG')!r}"
            )
    headers = _pairs(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
        if get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        else "OTEL_EXPORTER_OTLP_HEADERS",
        env,
        secret=True,
    )
    resource_attributes = _pairs("OTEL_RESOURCE_ATTRIBUTES", env, secret=False)

    if disabled == "true" or "none" in exporters:
        return None
    if not (exporters or traces_endpoint or base_endpoint):
        return None  # nothing says where spans should go: off
    # The specification's rule: a signal-specific endpoint is used as it is, the general one
    # gets the signal's path.
    endpoint = traces_endpoint or (base_endpoint or DEFAULT_OTLP_ENDPOINT).rstrip("/") + TRACES_PATH
    return TracingConfig(
        exporter="console" if exporters == ["console"] else "otlp",
        endpoint=endpoint,
        headers=headers,
        service_name=get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME,
        resource_attributes=resource_attributes,
        sampler=sampler,
        sampler_arg=sampler_arg,
    )


def _pairs(name: str, env: Mapping[str, str], *, secret: bool) -> tuple[tuple[str, str], ...]:
    """ "key1=value1,key2=value2" with percent-encoded values (W3C baggage's shape, which the
    OTEL_* lists use)."""
    pairs = []
    for item in env.get(name, "").split(","):
        if not item.strip():
            continue
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            shown = "an entry" if secret else repr(item.strip())
            raise TracingConfigError(f"{name} must be key=value pairs separated by commas: {shown}")
        pairs.append((key.strip(), urllib.parse.unquote(value.strip())))
    return tuple(pairs)


def build_tracer_provider(config: TracingConfig) -> TracerProvider:
    """A TracerProvider exporting in batches as `config` says. The SDK is imported only here:
    with tracing off it is never loaded."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    resource = Resource.create(
        {**dict(config.resource_attributes), "service.name": config.service_name}
    )
    provider = TracerProvider(resource=resource, sampler=_sampler(config))
    exporter: SpanExporter
    if config.exporter == "console":
        exporter = ConsoleSpanExporter(service_name=config.service_name)
    else:
        exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=dict(config.headers))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _sampler(config: TracingConfig) -> Sampler:
    from opentelemetry.sdk.trace import sampling

    ratio = sampling.TraceIdRatioBased(config.sampler_arg)
    root: sampling.Sampler = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio,
    }.get(config.sampler.removeprefix("parentbased_"), ratio)
    if config.sampler.startswith("parentbased_"):
        return sampling.ParentBased(root)
    return root


def trace_statements(engine: Engine) -> Callable[[], None]:
    """Give every statement `engine` runs for a traced call a CLIENT span (`db.system`,
    `db.operation`, `db.statement`); return the function that removes the hooks again.

    The statement is the SQL text with its placeholders (`?`, `%(email)s`), never the bound
    values: an email, a password hash or a token digest must not reach a span. A statement
    that fails gets status ERROR with the exception's type only, for the same reason (a
    PostgreSQL unique violation's message quotes the value). Statements outside a traced call
    (the request-log writer, the audit and mail workers, start-up) get no span.
    """
    system = engine.dialect.name  # "sqlite", "postgresql": the semantic conventions' names

    def before(
        connection: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = call_tracing.start_child_span(
            operation,
            {
                "db.system": system,
                "db.operation": operation,
                "db.statement": statement[:MAX_STATEMENT_CHARS],
            },
            kind=SpanKind.CLIENT,
        )
        if span is not None:
            connection.info.setdefault(_SPANS_KEY, []).append(span)

    def after(
        connection: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        spans = connection.info.get(_SPANS_KEY)
        if spans:
            spans.pop().end()

    def failed(exception_context: Any) -> None:
        connection = exception_context.connection
        spans = None if connection is None else connection.info.get(_SPANS_KEY)
        if spans:
            span = spans.pop()
            error = exception_context.original_exception
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()

    hooks: tuple[tuple[str, Callable[..., None]], ...] = (
        ("before_cursor_execute", before),
        ("after_cursor_execute", after),
        ("handle_error", failed),
    )
    for name, hook in hooks:
        event.listen(engine, name, hook)

    def remove() -> None:
        for name, hook in hooks:
            if event.contains(engine, name, hook):
                event.remove(engine, name, hook)

    return remove


def without_credentials(url: str) -> str:
    """`url` without a user:password@ part, for the log (an endpoint may carry credentials)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
