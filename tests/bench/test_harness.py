"""Smoke tests for the benchmark harness: a real (tiny) h2load run against the real server
passes verification, and a run full of gRPC errors does not, although h2load counts every
one of them as a success. Counts only, never timings."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench import bare_server, h2load, instructions, log_writer, report, sqlite_row, trailers
from bench.databases import sqlite_database
from bench.h2load import GrpcCall, Load
from bench.processes import CpuPlan, python_server
from bench.scenarios import (
    BENCH_RATE_LIMIT,
    FLOOR,
    LEAN,
    LOGGING_OFF_ENV,
    BackendResult,
    Options,
    Results,
    Series,
)
from bench.stats import percentile
from bench.workload import GET_ME, bearer
from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App, server_options
from luman.server.config import Settings
from luman.server.db.models import RequestLog
from luman.server.db.session import make_engine
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
@pytest.mark.parametrize("model", ["thread-pool", "aio"])
def test_bare_server_answers_every_call_with_its_response(model: str, tmp_path: Path) -> None:
    response = b"\x0a\x05bench" * 10
    (tmp_path / "response.bin").write_bytes(response)
    args = ["--response-file", str(tmp_path / "response.bin")]
    call = GrpcCall("bare", GET_ME, b"", response)
    with python_server(
        "bare",
        "bench.bare_server",
        [*args, "--aio"] if model == "aio" else args,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        cpu=None,
        workdir=tmp_path,
    ) as server:
        run = h2load.run(call, Load(STREAMS, requests=REQUESTS), port=server.port, workdir=tmp_path)
    assert run.verdict.ok, run.verdict.reason
    assert run.summary is not None
    assert run.summary.succeeded == REQUESTS


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


def test_bare_server_uses_the_product_server_options() -> None:
    # One definition: the baseline cannot drift from the product (SO_REUSEPORT off included).
    assert bare_server.server_options is server_options  # type: ignore[attr-defined]
    assert ("grpc.so_reuseport", 0) in server_options(Settings())


@contextlib.contextmanager
def _bare_server_stub(
    tmp_path: Path, response: bytes, *flags: str
) -> Iterator[auth_service_pb2_grpc.AuthServiceStub]:
    """`python -m bench.bare_server` answering with `response` (with `flags`), and a stub."""
    (tmp_path / "response.bin").write_bytes(response)
    with (
        python_server(
            "bare-" + "-".join(flag.lstrip("-") for flag in flags),
            "bench.bare_server",
            ["--response-file", str(tmp_path / "response.bin"), *flags],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            cpu=None,
            workdir=tmp_path,
        ) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


def test_floor_server_answers_with_the_product_shaped_response_and_trailers(
    tmp_path: Path,
) -> None:
    # The instructions baseline: a real protobuf response and the product's trailers.
    response = instructions._sample_response()
    with _bare_server_stub(tmp_path, response, "--floor") as stub:
        reply, call = stub.GetMe.with_call(auth_service_pb2.GetMeRequest(), timeout=10)
    assert reply.SerializeToString() == response
    trailers = dict(call.trailing_metadata() or ())
    assert set(trailers) >= {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}


def test_lean_server_counts_each_callers_window_and_reports_it_in_the_trailers(
    tmp_path: Path,
) -> None:
    # The lower bound must do the work it stands for: a window per token, counted per call,
    # at the product's benchmark limit and default window.
    assert int(BENCH_RATE_LIMIT) == bare_server._LIMIT
    assert Settings().rate_limit_window_ms == bare_server._WINDOW_SECONDS * 1000
    response = instructions._sample_response()
    with _bare_server_stub(tmp_path, response, "--lean") as stub:

        def remaining(token: str) -> int:
            reply, call = stub.GetMe.with_call(
                auth_service_pb2.GetMeRequest(), metadata=bearer(token), timeout=10
            )
            assert reply.SerializeToString() == response
            trailers = dict(call.trailing_metadata() or ())
            assert trailers["x-ratelimit-limit"] == str(bare_server._LIMIT)
            assert 899 <= int(trailers["x-ratelimit-reset"]) <= 900
            return int(trailers["x-ratelimit-remaining"])

        first = [remaining("token-a") for _ in range(3)]
        other = remaining("token-b")
    assert first == [bare_server._LIMIT - 1, bare_server._LIMIT - 2, bare_server._LIMIT - 3]
    assert other == bare_server._LIMIT - 1


def test_instructions_reads_callgrinds_summary_and_rewrites_its_own_block(
    tmp_path: Path,
) -> None:
    out = tmp_path / "callgrind.out"
    out.write_text("events: Ir\nsummary: 123456789\ntotals: 123456789\n")
    assert instructions.total_instructions(out) == 123_456_789
    (tmp_path / "empty.out").write_text("events: Ir\n")
    with pytest.raises(instructions.InstructionsError):
        instructions.total_instructions(tmp_path / "empty.out")

    counts = [
        instructions.Count("bare", "—", 350_000, 1, 2),
        instructions.Count("product", "sqlite", 525_000, 1, 2),
    ]
    block = instructions.render(counts, "python -m bench.instructions", 2500, 16)
    assert "| product | sqlite | 525,000 | 1.50 |" in block
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(
        f"{report.BEGIN}\nkept\n{report.END}\n{instructions.BEGIN}\nold\n{instructions.END}\n"
    )
    report.rewrite(path, block, begin=instructions.BEGIN, end=instructions.END)
    text = path.read_text()
    assert "kept" in text
    assert "old" not in text
    assert "| bare | — | 350,000 | 1.00 |" in text


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


@pytest.mark.parametrize("bound", ["floor", "lean"])
def test_each_lower_bound_is_reported_against_its_own_bare_runs(bound: str) -> None:
    results = Results(
        Options(),
        CpuPlan(None, None, "not pinned"),
        Settings(),
        "python -m bench",
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    results.baseline[16] = _series_of([2000.0, 2000.0, 2000.0])
    series = _series_of([1800.0, 900.0, 900.0])
    series.paired = _series_of([2000.0, 1000.0, 1000.0])
    getattr(results, bound)[16] = series
    title = {"floor": FLOOR, "lean": LEAN}[bound]

    rendered = report.render(results).splitlines()
    rows = [line for line in rendered if line.startswith("|") and title in line]
    # One throughput row, at 16 streams, 0.90 of the bare runs it was paired with (pooled
    # medians would say 900 / 2000).
    assert len(rows) == 1
    assert rows[0].startswith(f"| — | {title} | 16 | 900 ")
    assert "| 0.90 |" in rows[0]


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


def test_the_writer_ceiling_counts_the_rows_it_inserted(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        result = log_writer.measure(database_url, seconds=0.05, batch_size=20)
        with engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT count(*) FROM request_logs").scalar_one()
            latest = conn.exec_driver_sql(
                "SELECT count(DISTINCT time) FROM request_logs"
            ).scalar_one()
    finally:
        engine.dispose()
    assert result["rows"] >= 20
    assert result["rows"] % 20 == 0
    # The untimed first batch, then exactly the rows it counted, every one with its own time.
    assert stored == result["rows"] + 20
    assert latest == stored
    assert result["per_second"] == pytest.approx(result["rows"] / result["seconds"])


def test_plain_sqlite_rows_are_stored_as_the_orm_stores_them(tmp_path: Path) -> None:
    # The SQLite lower bound must insert the very rows the product's writer does: what it
    # stores reads back through the ORM model as a GetMe entry.
    with sqlite_database(tmp_path) as db:
        result = sqlite_row.measure(Path(db.url.removeprefix("sqlite:///")), rows=1200)
        with Session(db.engine) as session:
            stored = session.scalars(select(RequestLog)).all()
    assert result["rows"] == 1200  # two full 500-row transactions and one of 200
    assert len(stored) == 1200
    row = stored[-1]
    assert row.time == dt.datetime(2026, 12, 6, 12, 0, 0, 1, tzinfo=dt.UTC)
    assert (row.method, row.status, row.client_ip) == (log_writer.METHOD, "OK", "127.0.0.1")
    assert isinstance(row.user_id, uuid.UUID)
    assert row.user_agent == log_writer.USER_AGENT
