"""The measurement plan behind `python -m bench`, and the results it keeps.

Order of a full run:
1. Per backend (SQLite, then PostgreSQL): a fresh migrated database and the product server
   (`bench.product_server`, pinned to the server CPU). The scenario data is created through the
   API (`bench.workload`).
2. The first backend's GetMe response becomes the bare server's response, and the baseline
   (bare grpcio, thread pool) is measured at every stream count. A second bare server then
   stays up (idle between its runs) for the paired series.
3. GetMe (EdDSA access token), GetMe (read-only CLI token), ListMembers: at every stream
   count, paired: each run follows a bare run at the same streams (PAIRED_SCENARIOS). Then
   GetMe and ListMembers through the HTTP gateway (h2load --h1) at TARGET_STREAMS clients,
   each run following a gRPC run of the same call on the same server (HTTP_SCENARIOS).
4. Login against raw bcrypt; GetMe at 16 streams while logins run.
5. Request log on/off: the same server with the request log off (no interceptor, no writer),
   started beside the product, which stays up; each of its GetMe runs follows a product run
   at the same streams (paired, like the bare server's pairs). Then, after a graceful stop
   (which flushes the request log): request_logs growth, statuses, the writer's counters.
6. The baseline again: a drifting machine shows up as a wide min-max.
7. One full access-token check per JWT_ALGORITHM, in the harness's process
   (bench/token_verification.py).

Every series: one nghttp probe (grpc-status must be 0), one unmeasured warm-up run, then
`runs` measured runs, each verified by DATA bytes. A failed check ends the series as FAILED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import grpc

from bench import h2load, token_verification, trailers
from bench.databases import (
    DEFAULT_POSTGRES_URL,
    LOGIN_SESSIONS,
    REQUEST_LOGS,
    USERS,
    BenchDatabase,
    DatabaseUnavailableError,
    postgres_database,
    sqlite_database,
)
from bench.h2load import Call, GrpcCall, Load, Run, Verdict, load_for
from bench.mail_sink import MailSink
from bench.otlp_sink import OtlpSink
from bench.processes import (
    CpuPlan,
    ServerProcess,
    harness_env,
    python_server,
    served_with_workers,
    settle,
)
from bench.stats import Spread
from bench.token_verification import VerificationCost
from bench.workload import GET_ME, OWNER_EMAIL, PASSWORD, Workload, prepare
from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.config import Settings

logger = logging.getLogger("bench")

SCENARIOS: dict[str, str] = {
    "getme_access": "GetMe, EdDSA access token",
    "getme_cli": "GetMe, read-only CLI token",
    "list_members": "ListMembers, 50 members",
    "getme_http": "GET /auth/me (HTTP), access token",
    "list_members_http": "GET /organizations/{slug}/members (HTTP), 50 members",
    "login": "Login vs raw bcrypt",
    "overload": "sign-ins under overload (callers that retry at once)",
    "logging": "request log on/off",
    "observability": "the cost per call of metrics and of tracing (paired on/off)",
    "workers": "GetMe and ListMembers with 1 and 2 workers (serve --workers)",
}
CHAIN_SCENARIOS = ("getme_access", "getme_cli", "list_members")
# Series with a target ratio to the bare server: each of their runs comes right after a bare
# run at the same streams, and the ratio is the median of those pairs (report.bare_ratio).
PAIRED_SCENARIOS = frozenset(("getme_access", "getme_cli", "list_members"))
# The gateway's calls, each paired with the same call over gRPC on the same server: its target
# is a ratio to that (HTTP / gRPC), at TARGET_STREAMS concurrent clients.
HTTP_SCENARIOS = {"getme_http": "getme_access", "list_members_http": "list_members"}
BACKENDS = ("sqlite", "postgresql")
TARGET_STREAMS = 16  # the GetMe ratio and p99 targets are read at 16 streams
LOGGING_OFF_STREAMS = (16, 64)
# The overload scenario: each sign-in method with this many callers that retry at once.
OVERLOAD_METHODS = ("login", "register")
OVERLOAD_CALLERS = (16, 64)
# The longest a Login behind a full queue of sign-ins may take (64 callers x ~70 ms hashes).
SETTLE_SIGN_INS_SECONDS = 60
# High enough never to reject a benchmark call, low enough for the settings' upper bound.
BENCH_RATE_LIMIT = str(10**9)
# The server setting that leaves request logging out of the chain altogether, for the "off"
# server: no RequestLoggingInterceptor and no writer, so on/off prices the whole feature.
LOGGING_OFF_ENV: dict[str, str] = {"REQUEST_LOG_ENABLED": "false"}
BASELINE = "bare grpcio, thread pool"
LOGGING_ON = "GetMe, access token, request log on"
# The "workers" scenario: `serve --workers 2` against `--workers 1`, both unpinned, at
# TARGET_STREAMS calls in flight over this many connections (SO_REUSEPORT spreads connections
# over the workers, not streams).
WORKERS_CONNECTIONS = 4
WORKERS_CALLS = ("getme_access", "list_members")
# What the "observability" scenario prices: a feature -> (the environment of a server beside
# the product that differs from it only by that feature, which way it differs). The product
# runs with metrics on (the default) and tracing off (no OTEL_* variable: the default).
# "{otlp}" is replaced by the harness's OTLP/HTTP receiver (otlp_sink.py).
OBSERVABILITY: dict[str, tuple[dict[str, str], str]] = {
    "metrics": ({"METRICS_ENABLED": "false"}, "off"),
    "tracing": (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{otlp}", "OTEL_SERVICE_NAME": "luman-bench"},
        "on",
    ),
}


@dataclasses.dataclass(frozen=True)
class Options:
    duration: int = 5
    warmup: int = 1
    runs: int = 3
    streams: tuple[int, ...] = (1, 16, 64)
    # The server is pinned to one core, so PasswordHasher admits 1 hash + 2 waiting callers and
    # answers SERVER_BUSY beyond that (load shedding, by design): measure Login at the load it
    # admits, so every call is a real login and the sign-in count check holds.
    login_streams: int = 3
    backends: tuple[str, ...] = BACKENDS
    postgres_url: str = DEFAULT_POSTGRES_URL
    only: frozenset[str] = frozenset(SCENARIOS)
    bcrypt_rounds: int | None = None  # None: whatever BCRYPT_ROUNDS/the product default says
    # The product's PasswordHasher hashes on as many threads as it has cores (its CPU affinity);
    # pinned to one core, that is one.
    bcrypt_threads: int = 1
    server_env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def wants(self, scenario: str) -> bool:
        # Logging on/off compares against the getme_access figures.
        return scenario in self.only or (scenario == "getme_access" and "logging" in self.only)


@dataclasses.dataclass
class Series:
    """Repeated verified runs of one call at one stream count."""

    backend: str
    title: str
    streams: int
    response_bytes: int
    runs: list[Run] = dataclasses.field(default_factory=list)
    failure: str = ""
    # request_logs rows per second of wall-clock time across each run (only where counted).
    log_rows_per_s: list[float] = dataclasses.field(default_factory=list)
    # The bare server measured run by run right before this series' runs (PAIRED_SCENARIOS).
    paired: Series | None = None

    @property
    def ok(self) -> bool:
        return not self.failure and bool(self.runs) and all(r.ok for r in self.runs)

    @property
    def reason(self) -> str:
        if self.failure:
            return self.failure
        for run in self.runs:
            if not run.ok:
                return run.verdict.reason
        return "no runs" if not self.runs else ""

    def rps(self) -> Spread:
        return Spread.of([r.summary.req_per_s for r in self.runs if r.summary is not None])

    def p50_ms(self) -> float | None:
        values = [r.latency.p50_ms for r in self.runs if r.latency is not None]
        return statistics.median(values) if values else None

    def p99_ms(self) -> float | None:
        values = [r.latency.p99_ms for r in self.runs if r.latency is not None]
        return statistics.median(values) if values else None

    def merge(self, other: Series) -> None:
        """Fold a later pass of the same configuration into this one."""
        self.runs += other.runs
        self.failure = self.failure or other.failure


@dataclasses.dataclass
class LoginResult:
    rounds: int
    threads: int
    streams: int
    login: Series
    login_with_getme: Series
    getme_during: Series
    raw_per_second: list[float] = dataclasses.field(default_factory=list)
    raw_failure: str = ""


@dataclasses.dataclass
class OverloadRun:
    """One flood (bench.overload's counts for its measured window) and what came with it."""

    per_second: float  # successful sign-ins per second
    refusals_per_second: float
    reasons: dict[str, int]
    p50_ms: float | None  # a success's latency, first attempt to success
    p99_ms: float | None
    raw_per_second: float  # raw bcrypt on the server's core, just before the flood
    per_second_with_getme: float  # successful sign-ins/s of the flood with GetMe alongside
    getme: Run | None  # GetMe at TARGET_STREAMS streams during that flood


@dataclasses.dataclass
class OverloadSeries:
    backend: str
    method: str  # "login" or "register"
    callers: int
    runs: list[OverloadRun] = dataclasses.field(default_factory=list)
    failure: str = ""

    @property
    def ok(self) -> bool:
        return (
            not self.failure
            and bool(self.runs)
            and all(r.getme is not None and r.getme.ok for r in self.runs)
        )

    @property
    def reason(self) -> str:
        if self.failure:
            return self.failure
        for run in self.runs:
            if run.getme is not None and not run.getme.ok:
                return f"GetMe during the flood: {run.getme.verdict.reason}"
        return "no runs" if not self.runs else ""

    def x_raw(self) -> float | None:
        """Median of the run-by-run ratios of successful sign-ins/s to raw bcrypt hashes/s."""
        ratios = [r.per_second / r.raw_per_second for r in self.runs if r.raw_per_second]
        return statistics.median(ratios) if self.ok and ratios else None

    def getme_p99_ms(self) -> float | None:
        values = [
            r.getme.latency.p99_ms
            for r in self.runs
            if r.getme is not None and r.getme.latency is not None
        ]
        return statistics.median(values) if values else None


@dataclasses.dataclass
class BackendResult:
    label: str
    skipped: str = ""
    version: str = ""
    series: dict[str, dict[int, Series]] = dataclasses.field(default_factory=dict)
    login: LoginResult | None = None
    overload: list[OverloadSeries] = dataclasses.field(default_factory=list)
    logging_off: dict[int, Series] = dataclasses.field(default_factory=dict)
    # "metrics"/"tracing" -> GetMe at TARGET_STREAMS on the server beside the product that
    # differs by that feature, paired with product runs (OBSERVABILITY).
    observability: dict[str, Series] = dataclasses.field(default_factory=dict)
    # Spans the OTLP receiver got from the tracing-on server.
    spans_exported: int | None = None
    # WORKERS_CALLS -> the call on `serve --workers 2`, paired with `--workers 1`.
    workers: dict[str, Series] = dataclasses.field(default_factory=dict)
    peak_rss_bytes: int | None = None
    log_rows: int | None = None  # request_logs rows written while the server ran
    log_bytes: int | None = None  # growth of request_logs (table and indexes) meanwhile
    log_statuses: dict[str, int] | None = None
    # The request-log writer's counters at shutdown, as it names them (written, dropped, ...).
    writer: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Results:
    options: Options
    cpu: CpuPlan
    settings: Settings
    command: str
    started: dt.datetime
    finished: dt.datetime | None = None
    response_bytes: int = 0
    baseline: dict[int, Series] = dataclasses.field(default_factory=dict)
    backends: list[BackendResult] = dataclasses.field(default_factory=list)
    bare_peak_rss_bytes: int | None = None
    verification: list[VerificationCost] = dataclasses.field(default_factory=list)


def product_env(
    options: Options, database_url: str, data_dir: Path, smtp_url: str
) -> dict[str, str]:
    """Environment for the product server: production mode, bench database, limits that never
    reject a benchmark call, tokens that outlive the run, mail to `smtp_url` (a MailSink);
    then the caller's overrides."""
    env = harness_env()
    env.update(
        {
            "LUMAN_ENV": "production",
            "HOST": "127.0.0.1",
            "PORT": "0",
            "HTTP_PORT": "0",
            "DATABASE_URL": database_url,
            "LUMAN_DATA_DIR": str(data_dir),
            "JWT_SECRET": secrets.token_urlsafe(48),
            "JWT_REFRESH_SECRET": secrets.token_urlsafe(48),
            # Access tokens are EdDSA, the default: the signing key is made on first start.
            "SIGNING_KEY_SECRET": secrets.token_urlsafe(48),
            "JWT_EXPIRES_IN": "12h",
            "RATE_LIMIT_MAX_REQUESTS": BENCH_RATE_LIMIT,
            "AUTH_RATE_LIMIT_MAX_REQUESTS": BENCH_RATE_LIMIT,
            "SMTP_URL": smtp_url,
            # Links in emails (none is followed here).
            "PUBLIC_URL": "http://127.0.0.1",
        }
    )
    if options.bcrypt_rounds is not None:
        env["BCRYPT_ROUNDS"] = str(options.bcrypt_rounds)
    env.update(options.server_env)
    return env


class Bench:
    def __init__(self, options: Options, workdir: Path, cpu: CpuPlan, command: str) -> None:
        self.options = options
        self.workdir = workdir
        self.cpu = cpu
        self._load_pin = CpuPlan.pin(cpu.load)
        # What the product runs with (reported); the mail sink's address comes with the run.
        settings = Settings.from_env(
            product_env(options, "sqlite://", workdir / "data", "smtp://127.0.0.1")
        )
        self.results = Results(
            options, cpu, settings, command, dt.datetime.now(dt.UTC).replace(microsecond=0)
        )
        # The bare server that paired series alternate with, and where it listens: started
        # after the first pass and kept (idle between its runs) until every backend is done.
        self._stack = contextlib.ExitStack()
        self._paired: tuple[GrpcCall, int] | None = None
        self._mail: MailSink | None = None

    # -- plan ------------------------------------------------------------------------------

    def run_all(self) -> Results:
        options = self.options
        # The mail sink runs in this (the load) process, off the server's core.
        with MailSink() as self._mail, self._stack:  # and stops the paired bare server
            for backend in options.backends:
                self.results.backends.append(self._backend(backend))
        self._paired = None
        if self.results.response_bytes:
            self._baseline_pass()  # the second pass: see the module docstring
        if options.wants("getme_access"):
            logger.info("access-token verification: one full check per algorithm, in process")
            self.results.verification = token_verification.measure(self.workdir)
        self.results.finished = dt.datetime.now(dt.UTC).replace(microsecond=0)
        return self.results

    def _backend(self, backend: str) -> BackendResult:
        database: AbstractContextManager[BenchDatabase]
        if backend == "sqlite":
            database = sqlite_database(self.workdir)
        else:
            database = postgres_database(self.options.postgres_url)
        result = BackendResult("SQLite" if backend == "sqlite" else "PostgreSQL")
        try:
            with database as db:
                result.version = db.server_version()
                self._measure_backend(db, result)
        except DatabaseUnavailableError as exc:
            result.skipped = str(exc)
            logger.warning("%s skipped: %s", result.label, exc)
        return result

    def _measure_backend(self, db: BenchDatabase, result: BackendResult) -> None:
        options = self.options
        assert self._mail is not None
        env = product_env(options, db.url, self.workdir / "data", self._mail.url)
        logs_before = bytes_before = None
        with self._product(env, result.label) as server:
            logger.info("%s: creating the scenario data through the API", result.label)
            workload = prepare(server.port, server.http_port)
            if not self.results.response_bytes:
                self._start_baseline(workload)
            logs_before = db.count_rows(REQUEST_LOGS)
            bytes_before = db.table_bytes(REQUEST_LOGS)
            for scenario in CHAIN_SCENARIOS:
                if not options.wants(scenario):
                    continue
                call: GrpcCall = getattr(workload, scenario)
                count = None
                if scenario == "getme_access":
                    count = functools.partial(db.count_rows, REQUEST_LOGS)
                result.series[scenario] = {
                    streams: self.series(
                        call,
                        port=server.port,
                        backend=result.label,
                        title=SCENARIOS[scenario],
                        streams=streams,
                        count_rows=count,
                        paired=self._paired if scenario in PAIRED_SCENARIOS else None,
                    )
                    for streams in options.streams
                }
            for scenario, grpc_scenario in HTTP_SCENARIOS.items():
                http_call = getattr(workload, scenario)
                if not options.wants(scenario) or http_call is None:
                    continue
                result.series[scenario] = {
                    TARGET_STREAMS: self.series(
                        http_call,
                        port=server.http_port,
                        backend=result.label,
                        title=SCENARIOS[scenario],
                        streams=TARGET_STREAMS,
                        paired=(getattr(workload, grpc_scenario), server.port),
                        paired_title=f"{SCENARIOS[grpc_scenario]} (gRPC)",
                        grpc_port=server.port,
                    )
                }
            if options.wants("login"):
                result.login = self._login(db, server, workload, result.label)
            if options.wants("overload"):
                result.overload = [
                    self._overload(db, server.port, workload, result.label, method, callers)
                    for method in OVERLOAD_METHODS
                    for callers in OVERLOAD_CALLERS
                ]
            if options.wants("logging"):
                result.logging_off = self._logging_off(env, result.label, workload, server.port)
            if options.wants("observability"):
                self._observability(env, result, workload, server.port)
            if options.wants("workers"):
                self._workers(env, result, workload)
            result.peak_rss_bytes = server.peak_rss_bytes()
        # Stopped gracefully: the request log is flushed.
        result.writer = server.stats
        logs_after = db.count_rows(REQUEST_LOGS)
        bytes_after = db.table_bytes(REQUEST_LOGS)
        if logs_before is not None and logs_after is not None:
            result.log_rows = logs_after - logs_before
        if bytes_before is not None and bytes_after is not None:
            result.log_bytes = bytes_after - bytes_before
        result.log_statuses = db.count_by(REQUEST_LOGS, "status")

    # -- pieces ----------------------------------------------------------------------------

    def _logging_off(
        self, env: Mapping[str, str], label: str, workload: Workload, on_port: int
    ) -> dict[int, Series]:
        """GetMe on the same server with the request log off (LOGGING_OFF_ENV), started beside
        the product, which stays up: each off run is paired with a product run just before it
        (request log on), so on / off compares the same minutes of the machine."""
        env_off = {**env, **LOGGING_OFF_ENV}
        on_call = workload.getme_access
        call = dataclasses.replace(on_call, name="getme_access_log_off")
        streams_off = [s for s in self.options.streams if s in LOGGING_OFF_STREAMS] or [
            max(self.options.streams)
        ]
        with self._product(env_off, f"{label}, request log off") as server:
            return {
                streams: self.series(
                    call,
                    port=server.port,
                    backend=label,
                    title="GetMe, access token, request log off",
                    streams=streams,
                    paired=(on_call, on_port),
                    paired_title=LOGGING_ON,
                )
                for streams in streams_off
            }

    def _observability(
        self, env: Mapping[str, str], result: BackendResult, workload: Workload, on_port: int
    ) -> None:
        """GetMe at TARGET_STREAMS on a server beside the product that differs from it by one
        feature (OBSERVABILITY), each run right after a product run: what metrics and what
        tracing cost per call, measured on the same minutes of the machine."""
        product_call = workload.getme_access
        with OtlpSink() as sink:
            for feature, (changes, way) in OBSERVABILITY.items():
                variant = {key: value.format(otlp=sink.endpoint) for key, value in changes.items()}
                title = f"GetMe, access token, {feature} {way}"
                call = dataclasses.replace(product_call, name=f"getme_access_{feature}_{way}")
                with self._product({**env, **variant}, f"{result.label}, {feature} {way}") as srv:
                    result.observability[feature] = self.series(
                        call,
                        port=srv.port,
                        backend=result.label,
                        title=title,
                        streams=TARGET_STREAMS,
                        paired=(product_call, on_port),
                        paired_title="GetMe, access token, as the product runs",
                    )
            # The server flushed its last spans when it stopped.
            result.spans_exported = sink.received()

    def _workers(self, env: Mapping[str, str], result: BackendResult, workload: Workload) -> None:
        """GetMe and ListMembers on `serve --workers 2`, each run right after one on
        `serve --workers 1`, both as an operator starts them and neither pinned: two workers
        need both cores, which h2load then shares with them (the product server beside them
        stays idle meanwhile)."""
        name = result.label.lower()
        with (
            served_with_workers(f"{name}-1-worker", 1, env=env, workdir=self.workdir) as one,
            served_with_workers(f"{name}-2-workers", 2, env=env, workdir=self.workdir) as two,
        ):
            for scenario in WORKERS_CALLS:
                call: GrpcCall = getattr(workload, scenario)
                result.workers[scenario] = self.series(
                    dataclasses.replace(call, name=f"{scenario}_2_workers"),
                    port=two.port,
                    backend=result.label,
                    title=f"{SCENARIOS[scenario]}, 2 workers",
                    streams=TARGET_STREAMS,
                    paired=(call, one.port),
                    paired_title=f"{SCENARIOS[scenario]}, 1 worker",
                    connections=WORKERS_CONNECTIONS,
                    pinned=False,
                )

    def _product(self, env: Mapping[str, str], name: str) -> AbstractContextManager[ServerProcess]:
        return python_server(
            name.replace(", ", "-").replace(" ", "-").lower(),
            "bench.product_server",
            [],
            env=env,
            cpu=self.cpu.server,
            workdir=self.workdir,
        )

    def _start_baseline(self, workload: Workload) -> None:
        response = workload.getme_access.expected_response
        self.results.response_bytes = len(response)
        (self.workdir / "bare-response.bin").write_bytes(response)
        self._baseline_pass()
        if any(self.options.wants(scenario) for scenario in PAIRED_SCENARIOS):
            call, command = self._bare_command()
            command["name"] = "bare-paired"
            server = self._stack.enter_context(python_server(**command))
            self._paired = (call, server.port)

    def _baseline_pass(self) -> None:
        for streams, series in self._bare_pass().items():
            if streams in self.results.baseline:
                self.results.baseline[streams].merge(series)
            else:
                self.results.baseline[streams] = series

    def _bare_command(self) -> tuple[GrpcCall, dict[str, Any]]:
        """The bare server's call and its python_server() arguments."""
        response_file = self.workdir / "bare-response.bin"
        response = response_file.read_bytes()
        settings = self.results.settings
        args = [
            "--response-file",
            str(response_file),
            "--max-workers",
            str(settings.max_workers),
            "--max-concurrent-rpcs",
            str(settings.max_concurrent_rpcs),
        ]
        command = {
            "name": "bare",
            "module": "bench.bare_server",
            "args": args,
            "env": harness_env(),
            "cpu": self.cpu.server,
            "workdir": self.workdir,
        }
        return GrpcCall("bare", GET_ME, b"", response), command

    def _bare_pass(self) -> dict[int, Series]:
        call, command = self._bare_command()
        with python_server(**command) as server:
            measured = {
                streams: self.series(
                    call, port=server.port, backend="—", title=BASELINE, streams=streams
                )
                for streams in self.options.streams
            }
            rss = server.peak_rss_bytes()
            previous = self.results.bare_peak_rss_bytes
            self.results.bare_peak_rss_bytes = max(rss or 0, previous or 0) or None
            return measured

    def series(
        self,
        call: Call,
        *,
        port: int,
        backend: str,
        title: str,
        streams: int,
        count_rows: Callable[[], int | None] | None = None,
        paired: tuple[Call, int] | None = None,
        paired_title: str = BASELINE,
        grpc_port: int | None = None,
        connections: int = 1,
        pinned: bool = True,
    ) -> Series:
        """Probe, warm up, then measure `call` with `streams` calls in flight (HTTP: clients,
        each on its own connection) `runs` times.

        With `paired` (a call and port: the bare server's, unless `paired_title` says what
        else), each run comes right after a run of that server, kept in `series.paired`: the
        two halves of a pair see the same machine. `grpc_port` is where the server of an HTTP
        `call` answers gRPC, for settle() between runs (HTTP and gRPC share its workers).
        `connections`: gRPC calls spread over that many HTTP/2 connections; `pinned`: h2load
        on its own CPU (False: wherever the kernel puts it).
        """
        series = Series(backend, title, streams, len(call.expected_response))
        targets = [(call, port, series, grpc_port or port)]
        if paired is not None:
            paired_backend = "—" if paired_title == BASELINE else backend
            series.paired = Series(
                paired_backend, paired_title, streams, len(paired[0].expected_response)
            )
            targets.insert(0, (*paired, series.paired, paired[1]))
        for target_call, target_port, target, settle_port in targets:
            if isinstance(target_call, GrpcCall):  # HTTP has its status line in every count
                probe = trailers.probe(target_call, port=target_port, workdir=self.workdir)
                if probe is not None and not probe.ok:
                    target.failure = probe.reason
                    return self._failed(series, target)
            warm_load = load_for(
                target_call, streams, duration=self.options.warmup, connections=connections
            )
            warm = self._h2load(target_call, warm_load, target_port, pinned=pinned)
            settle(settle_port)
            if not warm.ok:
                target.failure = f"warm-up: {warm.verdict.reason}"
                return self._failed(series, target)
        for _ in range(self.options.runs):
            for target_call, target_port, target, settle_port in targets:
                counted = count_rows if target is series else None
                before = counted() if counted else None
                began = time.monotonic()
                run = self._h2load(
                    target_call,
                    load_for(
                        target_call,
                        streams,
                        duration=self.options.duration,
                        connections=connections,
                    ),
                    target_port,
                    pinned=pinned,
                )
                after = counted() if counted else None
                settle(settle_port)
                target.runs.append(run)
                if before is not None and after is not None:
                    target.log_rows_per_s.append((after - before) / (time.monotonic() - began))
                if not run.ok:
                    return self._failed(series, target)  # more load proves nothing
        if series.paired is not None:
            self._report(series.paired)
        return self._report(series)

    def _h2load(
        self, call: Call, load: Load, port: int, tag: str = "", *, pinned: bool = True
    ) -> Run:
        return h2load.start(
            call,
            load,
            port=port,
            workdir=self.workdir,
            pin=self._load_pin if pinned else (),
            tag=tag,
        ).finish()

    def _login(
        self, db: BenchDatabase, server: ServerProcess, workload: Workload, backend: str
    ) -> LoginResult:
        """Login throughput against raw bcrypt, then GetMe at 16 streams while logins run.

        Each round: raw bcrypt (pinned to the server CPU), Login alone, then Login together
        with GetMe. Logins run by count, not by time: a timed run would end with
        `login_streams` logins abandoned in flight that the server still hashes (seconds of
        backlog), and with every login completed the sign-in count can be checked exactly.
        """
        options = self.options
        login_call, getme_call = workload.login, workload.getme_access
        streams = options.login_streams
        result = LoginResult(
            rounds=self.results.settings.bcrypt_rounds,
            threads=options.bcrypt_threads,
            streams=streams,
            login=Series(backend, "Login", streams, len(login_call.expected_response)),
            login_with_getme=Series(
                backend, "Login, during GetMe", streams, len(login_call.expected_response)
            ),
            getme_during=Series(
                backend,
                "GetMe, access token, during logins",
                TARGET_STREAMS,
                len(getme_call.expected_response),
            ),
        )
        series_list = (result.login, result.login_with_getme, result.getme_during)
        for series, call in zip(series_list, (login_call, login_call, getme_call), strict=True):
            probe = trailers.probe(call, port=server.port, workdir=self.workdir)
            if probe is not None and not probe.ok:
                series.failure = probe.reason
        if any(series.failure for series in series_list):
            return result
        warm = self._h2load(login_call, Load(streams, requests=2 * streams), server.port)
        settle(server.port)
        if not warm.ok or warm.summary is None:
            result.login.failure = f"warm-up: {warm.verdict.reason}"
            return result
        requests = max(2 * streams, round(warm.summary.req_per_s * options.duration))
        login_load = Load(streams, requests=requests)
        for _ in range(options.runs):
            try:
                result.raw_per_second.append(self._raw_bcrypt(result.rounds, result.threads))
            except (subprocess.SubprocessError, ValueError, KeyError) as exc:
                result.raw_failure = f"raw bcrypt: {exc}"
            alone, _ = self._logins(db, server.port, login_call, login_load)
            result.login.runs.append(alone)
            together, getme = self._logins(db, server.port, login_call, login_load, getme_call)
            result.login_with_getme.runs.append(together)
            if getme is not None:
                result.getme_during.runs.append(getme)
            if not all(series.ok for series in series_list):
                break
        for series in series_list:
            self._report(series)
        if result.raw_per_second:
            logger.info(
                "%s raw bcrypt (cost %d, %d threads): %.1f hashes/s",
                backend,
                result.rounds,
                result.threads,
                statistics.median(result.raw_per_second),
            )
        return result

    def _logins(
        self,
        db: BenchDatabase,
        port: int,
        login_call: GrpcCall,
        load: Load,
        getme_call: GrpcCall | None = None,
    ) -> tuple[Run, Run | None]:
        """One Login run (with GetMe at 16 streams alongside when `getme_call` is given)."""
        sessions_before = db.count_rows(LOGIN_SESSIONS) or 0
        logins = h2load.start(
            login_call,
            load,
            port=port,
            workdir=self.workdir,
            pin=self._load_pin,
            timeout=10 * self.options.duration + 120,
        )
        getmes = None
        if getme_call is not None:
            getmes = h2load.start(
                getme_call,
                Load(TARGET_STREAMS, duration=self.options.duration),
                port=port,
                workdir=self.workdir,
                pin=self._load_pin,
                tag="-during-login",
            )
        login_run = logins.finish()
        getme_run = getmes.finish() if getmes is not None else None
        settle(port)
        sessions = (db.count_rows(LOGIN_SESSIONS) or 0) - sessions_before
        # The server-side count: each successful Login creates exactly one sign-in.
        if login_run.ok and login_run.summary and sessions != login_run.summary.succeeded:
            login_run = dataclasses.replace(
                login_run,
                verdict=Verdict(
                    False, f"{login_run.summary.succeeded} logins counted, {sessions} sign-ins made"
                ),
            )
        return login_run, getme_run

    def _overload(
        self,
        db: BenchDatabase,
        port: int,
        workload: Workload,
        backend: str,
        method: str,
        callers: int,
    ) -> OverloadSeries:
        """Sign-ins from `callers` callers that retry at once on any refusal (bench.overload,
        pinned to the load CPU). Each run: raw bcrypt on the server CPU, the flood alone (its
        successes against raw bcrypt: the goodput target), then the flood again with GetMe at
        TARGET_STREAMS streams alongside once its warm-up is over (GetMe's p99 target; a
        closed loop of 16 GetMe streams takes the whole core it can, so the sign-ins of that
        flood are reported but not held to the goodput target).

        Checked on the server: every sign-in a flood counted made its row (a sign-in for
        Login, a user for Register). More rows than counted are expected: the warm-up's, and
        those of calls the flood cancelled when its time was up but the server finished.
        """
        series = OverloadSeries(backend, method, callers)
        rounds = self.results.settings.bcrypt_rounds
        for _ in range(self.options.runs):
            try:
                raw = self._raw_bcrypt(rounds, self.options.bcrypt_threads)
                # Until every caller's first sign-in could have been served once (the queue
                # has turned over), latency would only show the first, shorter waits.
                warmup = max(1, math.ceil(callers / raw))
                alone = self._flood(db, port, method, callers, warmup)
                together = self._flood(db, port, method, callers, warmup, workload.getme_access)
            except (subprocess.SubprocessError, ValueError, KeyError) as exc:
                series.failure = str(exc)
                break
            counted, getme = together
            series.runs.append(
                OverloadRun(
                    per_second=alone[0]["per_second"],
                    refusals_per_second=alone[0]["refusals_per_second"],
                    reasons=alone[0]["reasons"],
                    p50_ms=alone[0]["p50_ms"],
                    p99_ms=alone[0]["p99_ms"],
                    raw_per_second=raw,
                    per_second_with_getme=counted["per_second"],
                    getme=getme,
                )
            )
            if getme is None or not getme.ok:
                break
        where = f"{backend} {method} x {callers} callers under overload"
        if series.ok:
            logger.info("%s: %.2f x raw bcrypt", where, series.x_raw() or 0.0)
        else:
            logger.warning("%s: FAILED: %s", where, series.reason)
        return series

    def _flood(
        self,
        db: BenchDatabase,
        port: int,
        method: str,
        callers: int,
        warmup: int,
        getme_call: GrpcCall | None = None,
    ) -> tuple[dict[str, Any], Run | None]:
        """One flood (with `getme_call` at TARGET_STREAMS alongside after its warm-up): its
        counts, and GetMe's run.

        Raises:
            subprocess.SubprocessError: the flood failed or ran over its time.
            ValueError: it printed no counts, or fewer rows were made than it counted.
        """
        table = LOGIN_SESSIONS if method == "login" else USERS
        rows_before = db.count_rows(table) or 0
        flood = self._start_flood(port, method, callers, warmup)
        getme = None
        try:
            if getme_call is not None:
                time.sleep(warmup)  # measured while the flood is at full load
                getme = h2load.start(
                    getme_call,
                    Load(TARGET_STREAMS, duration=self.options.duration),
                    port=port,
                    workdir=self.workdir,
                    pin=self._load_pin,
                    tag="-during-overload",
                ).finish()
            output, _ = flood.communicate(timeout=self.options.duration + 120)
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
        if flood.returncode != 0:
            raise subprocess.SubprocessError(f"flood exited {flood.returncode}")
        counted: dict[str, Any] = json.loads(output)
        self._settle_sign_ins(port)
        rows = (db.count_rows(table) or 0) - rows_before
        if rows < counted["successes"]:
            raise ValueError(f"flood: {counted['successes']} sign-ins counted, {rows} {table} rows")
        return counted, getme

    def _start_flood(
        self, port: int, method: str, callers: int, warmup: int
    ) -> subprocess.Popen[str]:
        command = [
            *self._load_pin,
            sys.executable,
            "-m",
            "bench.overload",
            "--port",
            str(port),
            "--method",
            method,
            "--callers",
            str(callers),
            "--warmup",
            str(warmup),
            "--duration",
            str(self.options.duration),
            "--json",
        ]
        if method == "login":
            command += ["--email", OWNER_EMAIL, "--password", PASSWORD]
        # Our interpreter and module, fixed arguments; no shell.
        return subprocess.Popen(  # noqa: S603
            command, stdout=subprocess.PIPE, text=True, env=harness_env()
        )

    def _settle_sign_ins(self, port: int) -> None:
        """Wait until the sign-ins the flood left behind are hashed: one more Login queues
        behind them for a hash slot (first come, first served), so its answer means they are
        done, and the next raw bcrypt run has the core to itself."""
        deadline = time.monotonic() + SETTLE_SIGN_INS_SECONDS
        request = auth_service_pb2.LoginRequest(email=OWNER_EMAIL, password=PASSWORD)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            login = auth_service_pb2_grpc.AuthServiceStub(channel).Login
            while True:
                try:
                    login(request, timeout=max(1.0, deadline - time.monotonic()))
                    return
                except grpc.RpcError as exc:
                    # A queue still full of the flood's sign-ins: as the server says, retry.
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)

    def _raw_bcrypt(self, rounds: int, threads: int) -> float:
        """Hashes/s of `python -m bench.raw_bcrypt`, pinned to the server's CPU.

        Raises:
            subprocess.SubprocessError: it failed or timed out.
            ValueError, KeyError: it printed no such object.
        """
        command = [
            *CpuPlan.pin(self.cpu.server),
            sys.executable,
            "-m",
            "bench.raw_bcrypt",
            "--rounds",
            str(rounds),
            "--threads",
            str(threads),
            "--seconds",
            str(self.options.duration),
        ]
        # Our interpreter and module; no shell.
        result = subprocess.run(  # noqa: S603
            command,
            capture_output=True,
            text=True,
            check=True,
            timeout=self.options.duration + 60,
            env=harness_env(),
        )
        return float(json.loads(result.stdout)["per_second"])

    def _failed(self, series: Series, part: Series) -> Series:
        """End `series` as FAILED because `part` (itself, or its paired baseline) failed."""
        if part is not series:
            self._report(part)
            series.failure = f"paired baseline run: {part.reason}"
        return self._report(series)

    def _report(self, series: Series) -> Series:
        where = f"{series.backend} {series.title} @{series.streams}"
        if not series.ok:
            logger.warning("%s: FAILED: %s", where, series.reason)
        else:
            rps = series.rps()
            logger.info(
                "%s: %.0f req/s (%.0f-%.0f), p50 %.2f ms, p99 %.2f ms",
                where,
                rps.median,
                rps.low,
                rps.high,
                series.p50_ms() or 0,
                series.p99_ms() or 0,
            )
        return series


def iter_series(results: Results) -> Iterator[Series]:
    """Every series in a run, for checks that apply to all of them."""
    yield from results.baseline.values()
    for backend in results.backends:
        for by_streams in backend.series.values():
            yield from by_streams.values()
        yield from backend.logging_off.values()
        if backend.login is not None:
            yield backend.login.login
            yield backend.login.login_with_getme
            yield backend.login.getme_during
