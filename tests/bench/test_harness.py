"""Smoke tests for the benchmark harness: a real (tiny) h2load run against the real server
passes verification, and a run full of gRPC errors does not, although h2load counts every
one of them as a success. Counts only, never timings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import h2load, report, token_verification, trailers
from bench.databases import REQUEST_LOGS, sqlite_database
from bench.h2load import GrpcCall, HttpCall, Load
from bench.mail_sink import MailSink
from bench.processes import CpuPlan, python_server
from bench.scenarios import (
    LOGGING_OFF_ENV,
    BackendResult,
    Options,
    OverloadRun,
    OverloadSeries,
    Results,
    Series,
    product_env,
)
from bench.stats import TIMES, percentile
from bench.workload import GET_ME, bearer, http_call, prepare
from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.gateway import build_gateway
from tests.support import register

REQUESTS = 40
STREAMS = 4


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def need_h2load() -> None:
    if h2load.h2load_path() is None:
        message = "h2load not installed (Debian package nghttp2-client)"
        if _in_ci():
            pytest.fail(f"{message}; CI=true requires it")
        pytest.skip(message)


def _getme_call(
    auth: auth_service_pb2_grpc.AuthServiceStub, token: str, expected_token: str | None = None
) -> GrpcCall:
    """GetMe as h2load sends it, expecting the response `expected_token`'s user gets."""
    request = auth_service_pb2.GetMeRequest()
    expected = auth.GetMe(request, metadata=bearer(expected_token or token))
    return GrpcCall(
        "getme",
        GET_ME,
        request.SerializeToString(),
        expected.SerializeToString(),
        bearer(token),
    )


@pytest.mark.usefixtures("need_h2load")
def test_h2load_run_of_getme_passes_verification(
    app: App, auth: auth_service_pb2_grpc.AuthServiceStub, tmp_path: Path
) -> None:
    token = register(auth).tokens.access_token
    call = _getme_call(auth, token)

    run = h2load.run(call, Load(STREAMS, requests=REQUESTS), port=app.port, workdir=tmp_path)

    assert run.verdict.ok, run.verdict.reason
    assert run.summary is not None
    assert run.summary.succeeded == REQUESTS
    assert run.summary.data_bytes == REQUESTS * (5 + len(call.expected_response))
    assert run.latency is not None
    assert run.latency.samples == REQUESTS
    probe = trailers.probe(call, port=app.port, workdir=tmp_path)
    assert probe is None or probe.ok, probe


@pytest.mark.usefixtures("need_h2load")
def test_verification_fails_a_run_of_unauthenticated_calls(
    app: App, auth: auth_service_pb2_grpc.AuthServiceStub, tmp_path: Path
) -> None:
    real_token = register(auth).tokens.access_token
    call = _getme_call(auth, "not-a-valid-token", expected_token=real_token)

    run = h2load.run(call, Load(STREAMS, requests=REQUESTS), port=app.port, workdir=tmp_path)

    # h2load itself sees nothing wrong: every UNAUTHENTICATED answer is an HTTP 200 ...
    assert run.summary is not None
    assert run.summary.succeeded == REQUESTS
    assert run.summary.status_2xx == REQUESTS
    # ... but none carried a response message, and the harness says so.
    assert run.summary.data_bytes == 0
    assert not run.verdict.ok
    assert "DATA bytes 0" in run.verdict.reason
    probe = trailers.probe(call, port=app.port, workdir=tmp_path)
    if probe is not None:
        assert not probe.ok
        assert "grpc-status 16" in probe.reason  # UNAUTHENTICATED


@pytest.mark.usefixtures("need_h2load")
def test_bare_server_answers_every_call_with_its_response(tmp_path: Path) -> None:
    response = b"\x0a\x05bench" * 10
    (tmp_path / "response.bin").write_bytes(response)
    call = GrpcCall("bare", GET_ME, b"", response)
    with python_server(
        "bare",
        "bench.bare_server",
        ["--response-file", str(tmp_path / "response.bin")],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        cpu=None,
        workdir=tmp_path,
    ) as server:
        run = h2load.run(call, Load(STREAMS, requests=REQUESTS), port=server.port, workdir=tmp_path)
    assert run.verdict.ok, run.verdict.reason
    assert run.summary is not None
    assert run.summary.succeeded == REQUESTS


@pytest.fixture
def gateway_port(settings: Settings, sessions: Sessions, app: App) -> Iterator[int]:
    server = build_gateway(dataclasses.replace(settings, http_port=0), sessions, app)
    server.start()
    yield server.port
    server.stop(None)


@pytest.mark.usefixtures("need_h2load")
def test_h2load_http_run_of_auth_me_passes_verification_and_a_401_run_does_not(
    auth: auth_service_pb2_grpc.AuthServiceStub, gateway_port: int, tmp_path: Path
) -> None:
    token = register(auth).tokens.access_token
    workload_call = _http_me(gateway_port, token)
    load = Load(1, clients=STREAMS, requests=REQUESTS)

    run = h2load.run(workload_call, load, port=gateway_port, workdir=tmp_path)

    assert run.verdict.ok, run.verdict.reason
    assert run.summary is not None
    assert run.summary.status_2xx == REQUESTS
    assert run.summary.data_bytes == REQUESTS * len(workload_call.expected_response)
    assert "--h1" in run.command

    # 401s have bodies too, but h2load counts them failed, and a failed request fails the run.
    forged = dataclasses.replace(workload_call, metadata=bearer("not-a-valid-token"))
    failed = h2load.run(forged, load, port=gateway_port, workdir=tmp_path)
    assert not failed.verdict.ok
    assert f"{REQUESTS} failed" in failed.verdict.reason


def _http_me(port: int, token: str) -> HttpCall:
    """GET /auth/me as the workload records it: made once, its body what every run expects."""
    return http_call("getme_http", port, "/auth/me", bearer(token))


def test_verify_accepts_http_bodies_of_requests_in_flight_when_time_was_up() -> None:
    call = HttpCall("c", "/auth/me", b"x" * 30)
    good = h2load.parse_summary(H2LOAD_OUTPUT)  # 353700 = 11790 * 30
    two_late = dataclasses.replace(good, data_bytes=good.data_bytes + 2 * 30)
    part_of_one = dataclasses.replace(good, data_bytes=good.data_bytes + 29)

    assert h2load.verify(two_late, call, in_flight=16).ok
    assert not h2load.verify(two_late, call, in_flight=1).ok
    assert not h2load.verify(part_of_one, call, in_flight=16).ok
    # gRPC keeps the exact equality.
    assert not h2load.verify(two_late, GrpcCall("c", GET_ME, b"", b"x" * 25), in_flight=16).ok


H2LOAD_OUTPUT = (
    "finished in 2.00s, 5894.42 req/s, 475.64KB/s\n"
    "requests: 11790 total, 11790 started, 11790 done, 11790 succeeded, 0 failed, "
    "0 errored, 0 timeout\n"
    "status codes: 11790 2xx, 0 3xx, 0 4xx, 0 5xx\n"
    "traffic: 951.28KB (974108) total, 51.68KB (52923) headers (space savings 96.29%), "
    "345.41KB (353700) data\n"
)


def test_parse_summary_reads_h2load_counts() -> None:
    summary = h2load.parse_summary(H2LOAD_OUTPUT)

    assert summary.succeeded == 11790
    assert summary.status_2xx == 11790
    assert summary.data_bytes == 353700
    assert summary.req_per_s == pytest.approx(5894.42)


def test_verify_requires_data_bytes_to_match_successes_exactly() -> None:
    call = GrpcCall("c", GET_ME, b"", b"x" * 25)  # 30-byte frames
    good = h2load.parse_summary(H2LOAD_OUTPUT)  # 353700 = 11790 * 30
    one_short = dataclasses.replace(good, data_bytes=good.data_bytes - 30)

    assert h2load.verify(good, call).ok
    assert not h2load.verify(one_short, call).ok


def test_parse_summary_rejects_output_without_a_summary() -> None:
    with pytest.raises(h2load.H2loadError):
        h2load.parse_summary("connect to 127.0.0.1:1 failed\n")


def test_check_trailers_reads_grpc_status() -> None:
    call = GrpcCall("c", GET_ME, b"", b"x" * 25)
    ok = (
        "recv DATA frame <length=30, flags=0x00, stream_id=13>\n"
        "recv (stream_id=13) grpc-status: 0\n"
    )
    denied = (
        "recv (stream_id=13) grpc-status: 16\nrecv (stream_id=13) grpc-message: invalid token\n"
    )

    assert trailers.check_trailers(ok, call).ok
    verdict = trailers.check_trailers(denied, call)
    assert not verdict.ok
    assert "grpc-status 16 (invalid token)" in verdict.reason


def test_grpc_frame_is_length_prefixed() -> None:
    assert h2load.grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]

    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7


def test_rewrite_replaces_only_the_generated_block(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Prose\n\n{report.BEGIN}\nold table\n{report.END}\n\nMore prose.\n")

    report.rewrite(path, "new table")

    assert path.read_text() == (
        f"# Prose\n\n{report.BEGIN}\nnew table\n{report.END}\n\nMore prose.\n"
    )


def test_rewrite_refuses_a_file_without_markers(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Prose only\n")

    with pytest.raises(report.ReportError):
        report.rewrite(path, "table")
    assert path.read_text() == "# Prose only\n"


def test_logging_off_server_leaves_the_request_log_out(tmp_path: Path) -> None:
    settings = Settings.from_env({**LOGGING_OFF_ENV, "LUMAN_DATA_DIR": str(tmp_path)})
    assert not settings.request_log_enabled


def _series_of(rates: list[float]) -> Series:
    call = GrpcCall("c", GET_ME, b"", b"x" * 25)
    summary = h2load.parse_summary(H2LOAD_OUTPUT)
    series = Series("—", "s", 16, 25)
    series.runs = [
        h2load.Run(
            call,
            Load(16, duration=5),
            dataclasses.replace(summary, req_per_s=rate),
            h2load.PASSED,
            None,
            (),
        )
        for rate in rates
    ]
    return series


def test_a_paired_series_is_compared_with_its_own_bare_runs_run_by_run() -> None:
    # The machine slows down between the pairs: each pair still says 0.9 (the middle one
    # 0.8), where the pooled medians would say 1000 / 2000 = 0.5.
    product = _series_of([1800.0, 1000.0, 900.0])
    product.paired = _series_of([2000.0, 1250.0, 1000.0])
    pooled_baseline = _series_of([2000.0, 2000.0, 2000.0])

    assert report.bare_ratio(product, pooled_baseline) == pytest.approx(0.9)
    # Comparisons with anything else (request log on / off) stay plain medians.
    assert report.ratio(product, pooled_baseline) == pytest.approx(0.5)
    product.paired.runs.pop()  # pairs must be complete
    assert report.bare_ratio(product, pooled_baseline) is None
    product.paired = None
    assert report.bare_ratio(product, pooled_baseline) == pytest.approx(0.5)


def test_request_log_on_off_uses_the_product_runs_paired_with_the_off_runs() -> None:
    backend = BackendResult("SQLite")
    # The GetMe series ran minutes earlier, on a faster machine: 2000 against 1000 would read
    # "logging halves throughput".
    backend.series["getme_access"] = {16: _series_of([2000.0, 2000.0, 2000.0])}
    off = _series_of([1000.0, 1100.0, 1000.0])
    off.paired = _series_of([950.0, 990.0, 800.0])  # the product, right before each off run
    backend.logging_off[16] = off

    on, measured_off, on_off = report.log_on_off(backend, 16)
    assert on is off.paired
    assert measured_off is off
    assert on_off == pytest.approx(0.9)  # median of 0.95, 0.9, 0.8
    off.paired = None  # an unpaired run falls back to plain medians
    assert report.log_on_off(backend, 16)[2] == pytest.approx(2.0)


def _empty_results() -> Results:
    """The results of a run that measured nothing yet; tests fill in the series."""
    return Results(
        Options(),
        CpuPlan(None, None, "not pinned"),
        Settings(),
        "python -m bench",
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


def test_the_getme_targets_are_read_at_16_streams_against_the_paired_bare_runs() -> None:
    results = _empty_results()
    results.baseline = {s: _series_of([2000.0, 2000.0, 2000.0]) for s in (1, 16)}
    backend = BackendResult("SQLite")
    # The machine slows down between the pairs: run by run the access token holds 0.65 (the
    # pooled medians would say 700 / 2000), the CLI token 0.60.
    access = _series_of([1300.0, 700.0, 650.0])
    access.paired = _series_of([2000.0, 1000.0, 1000.0])
    cli = _series_of([1200.0, 600.0, 600.0])
    cli.paired = _series_of([2000.0, 1000.0, 1000.0])
    slow_at_one = _series_of([100.0, 100.0, 100.0])  # no target at 1 stream
    slow_at_one.paired = _series_of([2000.0, 2000.0, 2000.0])
    backend.series = {"getme_access": {1: slow_at_one, 16: access}, "getme_cli": {16: cli}}
    results.backends.append(backend)

    rendered = report.render(results)

    assert (
        f"| GetMe, EdDSA access token ≥ 0.62 {TIMES} bare @16 streams | SQLite | 0.65 | yes |"
        in (rendered)
    )
    assert (
        f"| GetMe, read-only CLI token ≥ 0.62 {TIMES} bare @16 streams | SQLite | 0.60 | **no** |"
        in (rendered)
    )


@pytest.mark.usefixtures("need_h2load")
def test_product_server_serves_the_workload_and_reports_its_writer(tmp_path: Path) -> None:
    # The harness's product process end to end: scenario data through the API, a verified
    # h2load run, and a graceful stop whose writer counters match the rows it wrote.
    with sqlite_database(tmp_path) as db, MailSink() as mail:
        env = product_env(Options(bcrypt_rounds=4), db.url, tmp_path / "data", mail.url)
        with python_server(
            "product", "bench.product_server", [], env=env, cpu=None, workdir=tmp_path
        ) as server:
            workload = prepare(server.port, server.http_port)
            call = workload.getme_cli
            run = h2load.run(
                call, Load(STREAMS, requests=REQUESTS), port=server.port, workdir=tmp_path
            )
            assert workload.list_members_http is not None  # the gateway is served too
            http_run = h2load.run(
                workload.list_members_http,
                Load(1, clients=STREAMS, requests=REQUESTS),
                port=server.http_port,
                workdir=tmp_path,
            )
        rows = db.count_rows(REQUEST_LOGS)

    assert run.verdict.ok, run.verdict.reason
    assert http_run.verdict.ok, http_run.verdict.reason
    assert b'"members":[' in workload.list_members_http.expected_response
    assert server.stats["written"] == rows
    counters = report.writer_counters(server.stats)
    assert f"{rows:,} written" in counters
    assert "0 dropped (queue full)" in counters


def _overload_run(per_second: float, raw: float, getme_p99_ms: float) -> OverloadRun:
    getme = dataclasses.replace(
        _series_of([1000.0]).runs[0], latency=h2load.Latency(1.0, getme_p99_ms, 100)
    )
    return OverloadRun(per_second, 0.0, {}, 100.0, 900.0, raw, per_second / 2, getme)


def test_the_issue_14_targets_pair_http_with_grpc_and_sign_ins_with_raw_bcrypt() -> None:
    results = _empty_results()
    backend = BackendResult("PostgreSQL")
    http = _series_of([1400.0, 900.0, 700.0])
    http.paired = _series_of([2000.0, 1000.0, 1000.0])  # gRPC, run by run: 0.70, 0.90, 0.70
    backend.series = {"getme_http": {16: http}}
    flooded = OverloadSeries("PostgreSQL", "register", 64)
    # Run by run 0.85, 0.75, 0.90 of raw bcrypt; GetMe's p99 medians 8, 9, 12 ms.
    flooded.runs = [
        _overload_run(12.75, 15.0, 8.0),
        _overload_run(9.0, 12.0, 12.0),
        _overload_run(13.5, 15.0, 9.0),
    ]
    backend.overload = [flooded]
    results.backends.append(backend)

    rendered = report.render(results)

    assert (
        f"| GET /auth/me (HTTP), access token ≥ 0.7 {TIMES} gRPC @16 clients | PostgreSQL "
        "| 0.70 | yes |"
    ) in rendered
    assert (
        "| Register under overload, 64 callers retrying at once: successes ≥ 0.8 "
        f"{TIMES} raw bcrypt | PostgreSQL | 0.85 | yes |"
    ) in rendered
    assert (
        "| GetMe p99 @16 streams during the overload < 10 ms (highest) | PostgreSQL "
        "| 9.00 ms | yes |"
    ) in rendered


def test_token_verification_times_a_real_full_check_per_algorithm(tmp_path: Path) -> None:
    costs = token_verification.measure(tmp_path, checks=20, rounds=2)
    assert [c.algorithm for c in costs] == list(token_verification.ALGORITHMS)
    assert all(c.microseconds > 0 for c in costs)
    by_algorithm = {c.algorithm: c for c in costs}
    # Signed with a key of the product's key ring: a kid header makes the token longer.
    assert by_algorithm["EdDSA"].token_bytes > by_algorithm["HS256"].token_bytes
