"""Prometheus metrics: GET /metrics on the HTTP port, or on METRICS_PORT of its own.

Per call, one place counts: the request-logging stage, which sees every call (the HTTP
gateway's too: it calls the same chain in process) with its final status and duration. It
tells the call's MethodMetrics, resolved once per method when the chain wraps it, so a call
pays no label lookup: `grpc_server_started_total`, `grpc_server_handled_total` and the
`grpc_server_handling_seconds` histogram, named and labelled as go-grpc-prometheus names them
(so its Grafana dashboards work), plus, for a failed call only, its ErrorInfo reason read back
from the trailing metadata: authentication failures by reason, rate-limit refusals by policy.

Everything else is read when Prometheus scrapes (_StateCollector), from counters the parts
keep anyway: the request-log writer's queue and losses, the database pool, the password
hasher's slots and refusals, the token cache's hits and misses. Nothing is added to a call.

Each App has a registry of its own (not prometheus_client's global REGISTRY): the tests run
many servers in one process.
"""

from __future__ import annotations

import http.server
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import grpc
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from luman.interceptors import metadata_keys
from luman.interceptors.base import MethodInfo
from luman.interceptors.rate_limit import Policy

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from luman.server.auth.passwords import PasswordHasher
    from luman.server.auth.token_cache import TokenCache
    from luman.server.request_logs.writer import RequestLogWriter

logger = logging.getLogger(__name__)

# No `*_created` series beside each counter and histogram (go-grpc-prometheus has none): they
# doubled the series and the scrape. prometheus_client's switch is process-wide.
disable_created_metrics()  # type: ignore[no-untyped-call]

METRICS_PATH = "/metrics"
# What generate_latest writes. (prometheus_client 0.26's CONTENT_TYPE_LATEST names 1.0.0, the
# UTF-8 names format, which it writes only when asked through content negotiation.)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# go-grpc-prometheus's grpc_type values, by (request streaming, response streaming).
_GRPC_TYPES = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}
_UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.name
_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.name
# RESOURCE_EXHAUSTED reasons that are rate-limit refusals -> their policy label (None: the
# method's own policy). Others (SERVER_BUSY: load shed, counted by the hasher; SLOW_DOWN,
# EMAIL_RECENTLY_SENT, invitation caps: the product's rules) are not.
_REFUSALS: dict[str, str | None] = {"RATE_LIMITED": None, "TOO_MANY_CODE_ATTEMPTS": "device_code"}


class Metrics:
    """The registry of one App, and the per-call metrics the request-logging stage feeds.

    Args:
        policy_of: method name -> its rate-limit policy (the label of a refusal).
    """

    def __init__(self, policy_of: Callable[[str], Policy | None]) -> None:
        self.registry = CollectorRegistry()
        self._policy_of = policy_of
        self._started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            _GRPC_LABELS,
            registry=self.registry,
        )
        self._handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_GRPC_LABELS, "grpc_code"),
            registry=self.registry,
        )
        # prometheus_client's default buckets are Prometheus's DefBuckets, go-grpc-prometheus's.
        self._seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            _GRPC_LABELS,
            registry=self.registry,
        )
        self._auth_failures = Counter(
            "luman_authentication_failures_total",
            "Calls answered UNAUTHENTICATED, by ErrorInfo reason (TOKEN_EXPIRED, "
            "INVALID_CREDENTIALS, ...).",
            ("reason",),
            registry=self.registry,
        )
        self._refusals = Counter(
            "luman_rate_limit_refusals_total",
            "Calls refused by a rate limit (RESOURCE_EXHAUSTED), by policy.",
            ("policy",),
            registry=self.registry,
        )

    def method(self, method: MethodInfo) -> MethodMetrics:
        """The metrics of one method (RequestLoggingInterceptor's `observe`)."""
        return MethodMetrics(self, method)

    def watch(
        self,
        *,
        request_log: RequestLogWriter | None,
        engine: Engine,
        hasher: PasswordHasher,
        token_cache: TokenCache,
    ) -> None:
        """Report these parts' own counters at each scrape."""
        self.registry.register(_StateCollector(request_log, engine, hasher, token_cache))

    def exposition(self) -> tuple[bytes, str]:
        """The body and content type of a scrape (the Prometheus text format)."""
        return generate_latest(self.registry), CONTENT_TYPE

    def _count_failure(self, status: str, method_name: str, context: grpc.ServicerContext) -> None:
        reason = _reason(context)
        if status == _UNAUTHENTICATED:
            self._auth_failures.labels(reason or "UNSPECIFIED").inc()
        elif reason in _REFUSALS:
            policy = _REFUSALS[reason] or _policy_name(self._policy_of(method_name))
            self._refusals.labels(policy).inc()


class MethodMetrics:
    """One method's children of the per-call metrics, looked up once."""

    __slots__ = (
        "_handled",
        "_handled_by_status",
        "_labels",
        "_metrics",
        "_name",
        "_observe",
        "_started",
    )

    def __init__(self, metrics: Metrics, method: MethodInfo) -> None:
        service, _, name = method.name.lstrip("/").partition("/")
        labels = (_GRPC_TYPES[method.request_streaming, method.response_streaming], service, name)
        self._metrics = metrics
        self._name = method.name
        self._labels = labels
        self._started = metrics._started.labels(*labels).inc
        self._observe = metrics._seconds.labels(*labels).observe
        self._handled = metrics._handled
        # status name -> its handled_total child's inc (the few codes a method answers).
        self._handled_by_status: dict[str, Callable[[], None]] = {}

    # Per call, started() + finished(): 1.4 µs (timeit, 2026-12-07, this 2-core machine), the
    # histogram 0.55 µs of it. GetMe (token cached) through app.behavior() in process, paired
    # runs, METRICS_ENABLED true against false: 14.2 against 11.9 µs a call, +2.3 µs, ~1.5 % of
    # the ~155 µs a GetMe costs at 16 streams (BENCHMARKS.md, 2026-12-07 05:42). An UNAUTHENTICATED
    # or RESOURCE_EXHAUSTED call takes 7 µs here: its ErrorInfo reason is parsed back.
    def started(self) -> None:
        self._started()

    def finished(self, status: str, seconds: float, context: grpc.ServicerContext) -> None:
        inc = self._handled_by_status.get(status)
        if inc is None:
            inc = self._handled.labels(*self._labels, status).inc
            self._handled_by_status[status] = inc
        inc()
        self._observe(seconds)
        if status in (_UNAUTHENTICATED, _RESOURCE_EXHAUSTED):
            self._metrics._count_failure(status, self._name, context)


def _reason(context: grpc.ServicerContext) -> str:
    """The ErrorInfo reason of a failed call's status details ("" without one)."""
    try:
        trailing = context.trailing_metadata()
        for key, value in trailing or ():
            if key == metadata_keys.STATUS_DETAILS and isinstance(value, bytes):
                for detail in status_pb2.Status.FromString(value).details:
                    if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                        info = error_details_pb2.ErrorInfo()
                        detail.Unpack(info)
                        return str(info.reason)
    except Exception:  # a metric is never a reason for a call to fail
        logger.debug("cannot read a failed call's reason", exc_info=True)
    return ""


def _policy_name(policy: Policy | None) -> str:
    return "none" if policy is None else policy.value


class _StateCollector(Collector):
    """Reads the parts' own counters at scrape time."""

    def __init__(
        self,
        request_log: RequestLogWriter | None,
        engine: Engine,
        hasher: PasswordHasher,
        token_cache: TokenCache,
    ) -> None:
        self._request_log = request_log
        self._engine = engine
        self._hasher = hasher
        self._token_cache = token_cache

    def collect(self) -> Iterable[Metric]:
        log = self._request_log
        if log is not None:
            stats = log.stats
            yield GaugeMetricFamily(
                "luman_request_log_queue_depth",
                "Request-log entries waiting to be written.",
                value=log.queued,
            )
            yield CounterMetricFamily(
                "luman_request_log_written",
                "Request-log entries written.",
                value=stats.written,
            )
            yield CounterMetricFamily(
                "luman_request_log_dropped",
                "Request-log entries dropped because the queue was full.",
                value=stats.dropped,
            )
            yield CounterMetricFamily(
                "luman_request_log_failed",
                "Request-log entries lost because the database write failed.",
                value=stats.failed,
            )
        checkedout = getattr(self._engine.pool, "checkedout", None)
        if checkedout is not None:
            yield GaugeMetricFamily(
                "luman_database_connections_in_use",
                "Database connections checked out of the pool.",
                value=checkedout(),
            )
        hasher = self._hasher
        yield GaugeMetricFamily(
            "luman_password_hash_slots", "Password hashes that may run at once.", value=hasher.slots
        )
        yield GaugeMetricFamily(
            "luman_password_hash_slots_busy",
            "Password-hash slots hashing right now.",
            value=hasher.busy,
        )
        yield GaugeMetricFamily(
            "luman_password_hash_waiting",
            "Calls waiting for a password-hash slot.",
            value=hasher.waiting,
        )
        yield CounterMetricFamily(
            "luman_password_hash_shed",
            "Calls turned away with SERVER_BUSY because every hash slot and queue place was "
            "taken (or the call ended while waiting).",
            value=hasher.shed,
        )
        cache = self._token_cache
        yield CounterMetricFamily(
            "luman_token_cache_hits", "Token verifications answered from the cache.", cache.hits
        )
        yield CounterMetricFamily(
            "luman_token_cache_misses",
            "Token verifications the cache could not answer (absent or expired entry).",
            value=cache.misses,
        )
        yield GaugeMetricFamily(
            "luman_token_cache_entries", "Verified tokens in the cache.", value=len(cache)
        )


class MetricsListener:
    """GET /metrics on a port of its own (METRICS_PORT), bound on construction and served on a
    thread of its own from start() until stop()."""

    def __init__(self, host: str, port: int, exposition: Callable[[], tuple[bytes, str]]) -> None:
        """Raises:
        OSError: the address cannot be bound.
        """
        handler = _handler(exposition)
        server_class = _IPv6Server if ":" in host else _IPv4Server
        self._server = server_class((host.strip("[]"), port), handler)
        self.port: int = self._server.server_address[1]
        bare = host.strip("[]")
        shown = f"[{bare}]" if ":" in bare else bare
        # For the log: where a scraper finds them.
        self.address = f"http://{shown}:{self.port}{METRICS_PATH}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


class _IPv4Server(http.server.ThreadingHTTPServer):
    # SO_REUSEADDR (the default here, as socket.create_server sets for the gateway): a restart
    # binds despite scrapes' connections in TIME_WAIT; a second live listener still fails.
    daemon_threads = True


class _IPv6Server(_IPv4Server):
    address_family = socket.AF_INET6


def _handler(
    exposition: Callable[[], tuple[bytes, str]],
) -> type[http.server.BaseHTTPRequestHandler]:
    class _MetricsHandler(http.server.BaseHTTPRequestHandler):
        # A connection that sends nothing gives its thread back after this long.
        timeout = 10

        def do_GET(self) -> None:
            if self.path.partition("?")[0] != METRICS_PATH:
                self._reply(404, b"not found\n", "text/plain; charset=utf-8")
                return
            body, content_type = exposition()
            self._reply(200, body, content_type)

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape every few seconds is not worth a log line

    return _MetricsHandler
