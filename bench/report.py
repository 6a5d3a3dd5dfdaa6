"""Results -> Markdown, and the rewrite of the generated block in BENCHMARKS.md.

Only the text between the two markers is generated; the prose around it is kept as written.
A series that failed verification shows FAILED and its reason, never a number.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import statistics
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench import h2load, token_verification
from bench.scenarios import (
    BASELINE,
    BENCH_RATE_LIMIT,
    HTTP_SCENARIOS,
    SCENARIOS,
    TARGET_STREAMS,
    WORKERS_CONNECTIONS,
    BackendResult,
    Results,
    Series,
)
from bench.stats import DASH, TIMES, Spread

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
MIB = 1024 * 1024

# The published targets (BENCHMARKS.md, "Targets"; issue 14), all at TARGET_STREAMS.
GETME_X_BARE = 0.62  # GetMe, access and CLI token, paired with bare
LIST_MEMBERS_X_BARE = 0.20  # ListMembers (50 members), paired with bare
HTTP_X_GRPC = 0.70  # the same call over HTTP against gRPC, paired, on the same server
LOGIN_X_RAW_BCRYPT = 0.9  # Login at 1-3 callers
OVERLOAD_X_RAW_BCRYPT = 0.8  # successful sign-ins/s with callers that retry at once
P99_MS = 10.0  # GetMe, while the overload runs

# The request-log writer's counters (bench.product_server's STATS line), in words.
_WRITER_COUNTERS = {
    "written": "written",
    "dropped": "dropped (queue full)",
    "failed": "lost to database errors",
    "after_close": "arrived after close",
}


class ReportError(Exception):
    """BENCHMARKS.md has no generated block to replace."""


def rewrite(path: Path, block: str, *, begin: str = BEGIN, end: str = END) -> None:
    """Replace what lies between the markers `begin` and `end` in `path` with `block`.

    Raises:
        ReportError: the file or a marker is missing (the prose is never regenerated).
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ReportError(f"{path} does not exist") from None
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise ReportError(f"{path} must contain exactly one {begin} … {end} block")
    path.write_text(pattern.sub(lambda _: f"{begin}\n{block.strip()}\n{end}", text))


# -- machine and versions -------------------------------------------------------------------


def machine() -> str:
    cpus = _cpu_model()
    memory = _meminfo_gib()
    return f"{os.cpu_count()} CPUs ({cpus}), {memory:.1f} GiB RAM, Linux {platform.release()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _meminfo_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for dist in ("grpcio", "protobuf", "SQLAlchemy", "psycopg", "bcrypt"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    parts.append(_h2load_version())
    return ", ".join(parts)


def _h2load_version() -> str:
    binary = h2load.h2load_path()
    if binary is None:
        return "h2load (missing)"
    # A fixed argument to the binary found on PATH.
    output = subprocess.run(  # noqa: S603
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    return output.strip() or "h2load (unknown version)"


# -- cells ----------------------------------------------------------------------------------


def _spread(spread: Spread, digits: int = 0) -> str:
    return f"{spread.median:,.{digits}f} ({spread.low:,.{digits}f}{DASH}{spread.high:,.{digits}f})"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _failed(series: Series) -> str:
    return f"FAILED: {series.reason}".replace("|", "/")


def _verified(series: Series) -> str:
    return f"✓ {len(series.runs)} runs" if series.ok else _failed(series)


def ratio(series: Series | None, reference: Series | None) -> float | None:
    """series / reference, medians of req/s."""
    if series is None or reference is None or not series.ok or not reference.ok:
        return None
    return series.rps().median / reference.rps().median


def bare_ratio(series: Series | None, baseline: Series | None) -> float | None:
    """series against the bare server: a paired series against its own bare runs, run by run
    (the median of run i / the bare run just before it); any other against `baseline`."""
    if series is not None and series.paired is not None:
        return _paired_ratio(series, series.paired)
    return ratio(series, baseline)


def _paired_ratio(series: Series, paired: Series) -> float | None:
    if not series.ok or not paired.ok or len(series.runs) != len(paired.runs):
        return None
    ratios = [
        run.summary.req_per_s / bare.summary.req_per_s
        for run, bare in zip(series.runs, paired.runs, strict=True)
        if run.summary is not None and bare.summary is not None and bare.summary.req_per_s
    ]
    return statistics.median(ratios) if len(ratios) == len(series.runs) else None


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _throughput_row(series: Series, reference: Series | None, scenario: str) -> list[str]:
    head = [series.backend, scenario, str(series.streams)]
    paired = _spread(series.paired.rps()) if series.paired and series.paired.ok else "—"
    if not series.ok:
        return [
            *head,
            "FAILED",
            "—",
            paired,
            "—",
            "—",
            str(series.response_bytes),
            _verified(series),
        ]
    return [
        *head,
        _spread(series.rps()),
        _ratio(bare_ratio(series, reference)),
        paired,
        _ms(series.p50_ms()),
        _ms(series.p99_ms()),
        str(series.response_bytes),
        _verified(series),
    ]


# -- sections -------------------------------------------------------------------------------


def render(results: Results) -> str:
    o = results.options
    s = results.settings
    lines = [
        f"Generated by `{results.command}` on {results.started:%Y-%m-%d %H:%M} UTC"
        + (
            f" ({(results.finished - results.started).total_seconds() / 60:.1f} min)."
            if results.finished
            else "."
        ),
        "",
        f"- Machine: {machine()}; {results.cpu.note}.",
        f"- Versions: {versions()}"
        + "".join(f"; {b.version}" for b in results.backends if b.version)
        + ".",
        f"- Load: h2load `-c 1 -m <streams>` (one HTTP/2 connection) for gRPC, `--h1 -c "
        f"<clients> -m 1` (one HTTP/1.1 connection per client) for HTTP; {o.duration} s per run "
        f"after a {o.warmup} s warm-up run, median of {o.runs} runs (min{DASH}max); every run "
        f"verified (DATA bytes = successes {TIMES} response; gRPC: grpc-status probe; HTTP: "
        "any non-2xx fails the run).",
        f"- Product settings: LUMAN_ENV=production, GRPC_MAX_WORKERS={s.max_workers}, "
        f"GRPC_MAX_CONCURRENT_RPCS={s.max_concurrent_rpcs}, BCRYPT_ROUNDS={s.bcrypt_rounds}, "
        f"LOG_LEVEL={s.log_level}, RATE_LIMIT_MAX_REQUESTS=AUTH_RATE_LIMIT_MAX_REQUESTS="
        f"{BENCH_RATE_LIMIT} (windows {s.rate_limit_window_ms} ms / "
        f"{s.auth_rate_limit_window_ms} ms).",
        f"- Baseline: {BASELINE} answering every call with the product's {results.response_bytes}"
        "-byte GetMe response; measured before and after the product scenarios (both passes "
        f"pooled, so its min{DASH}max shows how much the machine drifted). The GetMe series "
        "with a target are paired: each of their runs follows a bare run at the same streams, "
        f"and their {TIMES} bare is the median of the run-by-run ratios.",
    ]
    skipped = [b for b in results.backends if b.skipped]
    lines += [f"- {b.label}: skipped ({b.skipped})." for b in skipped]
    lines += ["", "### Targets", ""]
    lines += _targets(results)
    lines += ["", "### Throughput and latency", ""]
    lines += _throughput(results)
    if any(scenario in b.series for b in results.backends for scenario in HTTP_SCENARIOS):
        lines += ["", "### HTTP gateway against gRPC", ""]
        lines += _http(results)
    if any(b.login for b in results.backends):
        lines += ["", "### Login against raw bcrypt", ""]
        lines += _login(results)
    if any(b.overload for b in results.backends):
        lines += ["", "### Sign-ins under overload", ""]
        lines += _overload(results)
    if o.wants("logging") or any(b.log_rows is not None for b in results.backends):
        lines += ["", "### Request log", ""]
        lines += _logging(results)
    if any(b.workers for b in results.backends):
        lines += ["", "### Workers (serve --workers)", ""]
        lines += _workers(results)
    if any(b.observability for b in results.backends):
        lines += ["", "### What metrics and tracing cost", ""]
        lines += _observability(results)
    if results.verification:
        lines += ["", "### Access-token verification", ""]
        lines += _verification(results)
    lines += ["", "### Resources", ""]
    lines += _resources(results)
    return "\n".join(lines) + "\n"


def _throughput(results: Results) -> list[str]:
    header = [
        "Backend",
        "Scenario",
        "Streams",
        f"req/s median (min{DASH}max)",
        f"{TIMES} bare",
        "bare req/s in the pairs",
        "p50 ms",
        "p99 ms",
        "Response bytes",
        "Verified",
    ]
    rows = [
        _throughput_row(series, series, BASELINE) for _, series in sorted(results.baseline.items())
    ]
    for backend in _measured(results):
        for scenario, by_streams in backend.series.items():
            if scenario in HTTP_SCENARIOS:
                continue  # their own table: their pairs are gRPC calls, not the bare server
            for streams, series in sorted(by_streams.items()):
                rows.append(
                    _throughput_row(series, results.baseline.get(streams), SCENARIOS[scenario])
                )
    return _table(header, rows)


def _http(results: Results) -> list[str]:
    header = [
        "Backend",
        "Call",
        "Clients",
        f"HTTP req/s median (min{DASH}max)",
        "gRPC req/s in the pairs",
        "HTTP / gRPC",
        "p50 ms",
        "p99 ms",
        "Response bytes",
        "Verified",
    ]
    rows = []
    for backend in _measured(results):
        for scenario in HTTP_SCENARIOS:
            series = backend.series.get(scenario, {}).get(TARGET_STREAMS)
            if series is None:
                continue
            paired = series.paired
            rows.append(
                [
                    backend.label,
                    SCENARIOS[scenario],
                    str(series.streams),
                    _rps_cell(series),
                    _rps_cell(paired),
                    _ratio(http_ratio(series)),
                    _ms(series.p50_ms()) if series.ok else "—",
                    _ms(series.p99_ms()) if series.ok else "—",
                    str(series.response_bytes),
                    _verified(series),
                ]
            )
    return [
        *_table(header, rows),
        "",
        f"- Each HTTP run (h2load `--h1`, {TARGET_STREAMS} connections) follows a gRPC run of "
        f"the same call on the same server ({TARGET_STREAMS} streams on one connection); "
        "HTTP / gRPC is the median of the run-by-run ratios.",
    ]


def http_ratio(series: Series | None) -> float | None:
    """An HTTP series against the gRPC runs it was paired with, run by run."""
    if series is None or series.paired is None:
        return None
    return _paired_ratio(series, series.paired)


def _login(results: Results) -> list[str]:
    header = [
        "Backend",
        "bcrypt cost, threads",
        f"Login req/s (min{DASH}max)",
        f"raw bcrypt hashes/s (min{DASH}max)",
        f"{TIMES} raw",
        f"GetMe p99 ms @{TARGET_STREAMS} alone",
        f"GetMe p99 ms @{TARGET_STREAMS} during logins",
        f"Login req/s, GetMe @{TARGET_STREAMS} alongside",
        "Login p99 ms, GetMe alongside",
        "Verified",
    ]
    rows = []
    for backend in _measured(results):
        login = backend.login
        if login is None:
            continue
        alone = backend.series.get("getme_access", {}).get(TARGET_STREAMS)
        raw = Spread.of(login.raw_per_second) if login.raw_per_second else None
        login_cell = _spread(login.login.rps(), 1) if login.login.ok else "FAILED"
        x_raw = (
            login.login.rps().median / raw.median if login.login.ok and raw is not None else None
        )
        problems = [
            s for s in (login.login, login.login_with_getme, login.getme_during) if not s.ok
        ]
        verified = "; ".join(f"{s.title}: {_failed(s)}" for s in problems) or (
            f"✓ {len(login.login.runs)} runs"
        )
        if login.raw_failure:
            verified += f"; {login.raw_failure}"
        rows.append(
            [
                backend.label,
                f"{login.rounds}, {login.threads}",
                f"{login_cell} @{login.streams} streams",
                _spread(raw, 1) if raw else "—",
                _ratio(x_raw),
                _ms(alone.p99_ms()) if alone is not None and alone.ok else "—",
                _ms(login.getme_during.p99_ms()) if login.getme_during.ok else "FAILED",
                _rps_cell(login.login_with_getme, 1) if login.login_with_getme.ok else "FAILED",
                _ms(login.login_with_getme.p99_ms()) if login.login_with_getme.ok else "FAILED",
                verified,
            ]
        )
    return _table(header, rows)


def _overload(results: Results) -> list[str]:
    header = [
        "Backend",
        "Method",
        "Callers",
        f"successful sign-ins/s (min{DASH}max)",
        "refusals/s",
        "raw bcrypt hashes/s",
        f"{TIMES} raw",
        "sign-in p50 / p99 ms",
        f"GetMe p99 ms @{TARGET_STREAMS} during",
        "sign-ins/s with GetMe",
        "refusal reasons (all runs)",
        "Verified",
    ]
    rows = []
    for backend in _measured(results):
        for series in backend.overload:
            runs = series.runs
            reasons: dict[str, int] = {}
            for run in runs:
                for reason, count in run.reasons.items():
                    reasons[reason] = reasons.get(reason, 0) + count
            p50 = statistics.median([r.p50_ms for r in runs if r.p50_ms is not None] or [0])
            p99 = statistics.median([r.p99_ms for r in runs if r.p99_ms is not None] or [0])
            rows.append(
                [
                    backend.label,
                    series.method,
                    str(series.callers),
                    _spread(Spread.of([r.per_second for r in runs]), 1) if runs else "—",
                    _spread(Spread.of([r.refusals_per_second for r in runs])) if runs else "—",
                    _spread(Spread.of([r.raw_per_second for r in runs]), 1) if runs else "—",
                    _ratio(series.x_raw()),
                    f"{p50:.0f} / {p99:.0f}" if runs else "—",
                    _ms(series.getme_p99_ms()),
                    _spread(Spread.of([r.per_second_with_getme for r in runs]), 1) if runs else "—",
                    ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items())) or "none",
                    f"✓ {len(runs)} runs" if series.ok else f"FAILED: {series.reason}",
                ]
            )
    return [
        *_table(header, rows),
        "",
        f"- `python -m bench.overload`, pinned to the load CPU: each caller signs in and, on any "
        "answer but OK, tries again at once; Login with the owner's account, Register with a "
        "fresh email each attempt; counted over the run's duration after a warm-up of callers "
        "/ raw bcrypt rate seconds (the queue turns over once). Each "
        f"run: raw bcrypt on the server CPU, the flood alone ({TIMES} raw: the median of the "
        "run-by-run ratios; sign-in latency from a sign-in's first attempt to its success), "
        f"then the flood again with GetMe (h2load, {TARGET_STREAMS} streams, a closed loop "
        "that takes all the CPU it gets) alongside: GetMe's p99 and the sign-ins/s it leaves.",
    ]


def log_on_off(
    backend: BackendResult, streams: int
) -> tuple[Series | None, Series | None, float | None]:
    """(request log on, off, on / off) at `streams`: the off series' paired product runs and
    the median of the run-by-run ratios; without pairs, the GetMe series and plain medians."""
    off = backend.logging_off.get(streams)
    if off is not None and off.paired is not None:
        return off.paired, off, _paired_ratio(off.paired, off)
    on = backend.series.get("getme_access", {}).get(streams)
    return on, off, ratio(on, off)


def _workers(results: Results) -> list[str]:
    header = [
        "Backend",
        "Call",
        f"req/s @{TARGET_STREAMS}, 1 worker",
        "2 workers",
        "2 / 1",
        "p99 ms, 1 worker",
        "2 workers",
    ]
    rows = []
    for backend in _measured(results):
        for scenario, two in backend.workers.items():
            one = two.paired
            assert one is not None
            rows.append(
                [
                    backend.label,
                    SCENARIOS[scenario],
                    _rps_cell(one),
                    _rps_cell(two),
                    _ratio(_paired_ratio(two, one)),
                    _ms(one.p99_ms()),
                    _ms(two.p99_ms()),
                ]
            )
    return [
        *_table(header, rows),
        "",
        f"- `luman-server serve --workers 1` and `--workers 2`, started as an operator starts "
        "them, side by side on the same database; each 2-worker run right after a 1-worker "
        f"run; {TARGET_STREAMS} calls in flight over {WORKERS_CONNECTIONS} HTTP/2 connections "
        "(the kernel spreads connections, not calls, over the workers). **Nothing is pinned "
        "here**: the two workers and h2load share this machine's two cores, so 2 / 1 is what "
        "a second worker gains on a 2-core host that also runs the load generator, not the "
        "scaling of a dedicated host (there, expect close to one worker's figure per core). "
        "Each side is what an operator gets: `--workers 1` is the single-process server (rate "
        "limits in process, no spool), while each of two workers also checks the shared "
        "rate-limit file and writes every call to its request-log spool.",
    ]


def cost_per_call_us(series: Series, feature_on: bool) -> float | None:
    """The CPU a feature adds to one GetMe, in µs: the server is pinned to one core and kept
    busy, so a call costs 1 / (req/s) of it; the difference between the two servers of each
    pair (the variant `series` and the product's paired run just before it), median of pairs.
    `feature_on`: the variant has the feature (tracing); else the product has it (metrics)."""
    if series.paired is None or not series.ok or not series.paired.ok:
        return None
    costs = []
    for variant, product in zip(series.runs, series.paired.runs, strict=False):
        if variant.summary is None or product.summary is None:
            return None
        variant_rps, product_rps = variant.summary.req_per_s, product.summary.req_per_s
        if not variant_rps or not product_rps:
            return None
        with_it, without = (variant_rps, product_rps) if feature_on else (product_rps, variant_rps)
        costs.append(1e6 / with_it - 1e6 / without)
    return statistics.median(costs) if costs else None


def _observability(results: Results) -> list[str]:
    header = [
        "Backend",
        "Feature",
        f"GetMe req/s @{TARGET_STREAMS}, with it",
        "without it",
        "µs of CPU per call",
    ]
    rows = []
    for backend in _measured(results):
        for feature, series in backend.observability.items():
            on = feature == "tracing"
            with_it, without = (series, series.paired) if on else (series.paired, series)
            cost = cost_per_call_us(series, feature_on=on)
            rows.append(
                [
                    backend.label,
                    feature,
                    _rps_cell(with_it),
                    _rps_cell(without),
                    "—" if cost is None else f"{cost:+.1f}",
                ]
            )
    notes = [
        "Paired: a server that differs from the product only by the feature (METRICS_ENABLED="
        "false; tracing on with OTEL_EXPORTER_OTLP_ENDPOINT at a receiver in the harness, "
        "which decodes every export) ran beside it, each of its runs right after a product "
        "run. The server is pinned to one busy core, so a call's CPU is 1 / (req/s); the cost "
        "is the difference within each pair, median of the pairs (run-to-run noise is a few "
        "µs).",
    ]
    for backend in _measured(results):
        if backend.spans_exported is not None:
            notes.append(
                f"{backend.label}: the receiver got {backend.spans_exported:,} spans from the "
                "tracing-on server (one per RPC plus its database and hashing children)."
            )
    return _table(header, rows) + [""] + [f"- {n}" for n in notes]


def _verification(results: Results) -> list[str]:
    rows = [
        [c.algorithm, f"{c.microseconds:.0f}", str(c.token_bytes)] for c in results.verification
    ]
    return [
        *_table(["JWT_ALGORITHM", "µs per full check", "Token bytes"], rows),
        "",
        "One full check is TokenCodec.verify on a token the product issued (kid lookup, "
        "signature, claims), in the harness's process, the best of "
        f"{token_verification.ROUNDS} rounds of {token_verification.CHECKS_PER_ROUND:,}. A "
        "server checks a token in full once per TOKEN_CACHE_TTL (the verified-token cache), so "
        "the GetMe series, EdDSA tokens like every new install's, pay it on the first call only.",
    ]


def _logging(results: Results) -> list[str]:
    header = [
        "Backend",
        "Streams",
        "GetMe req/s, request log on",
        "request log off",
        "on / off",
        f"request_logs rows/s during the GetMe series (min{DASH}max)",
    ]
    rows = []
    for backend in _measured(results):
        on_series = backend.series.get("getme_access", {})
        for streams in sorted(set(on_series) | set(backend.logging_off)):
            on, off, on_off = log_on_off(backend, streams)
            rows.append(
                [
                    backend.label,
                    str(streams),
                    _rps_cell(on),
                    _rps_cell(off),
                    _ratio(on_off),
                    _rows_cell(on_series.get(streams)),
                ]
            )
    lines = _table(header, rows)
    notes = []
    for backend in _measured(results):
        if backend.writer:
            notes.append(f"{backend.label} writer at shutdown: {writer_counters(backend.writer)}.")
        if backend.log_statuses is not None:
            statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(backend.log_statuses.items()))
            notes.append(f"{backend.label} request_logs rows by status: {statuses or 'none'}.")
    if not any(backend.logging_off for backend in _measured(results)):
        notes.append("The writer-off server was not run (`--only` without `logging`).")
    elif any(off.paired for b in _measured(results) for off in b.logging_off.values()):
        notes.insert(
            0,
            "On / off is paired: the request-log-off server ran beside the product, each of "
            "its runs right after a product run at the same streams; the ratio is the median "
            "of the run-by-run ratios, and the on column shows those product runs.",
        )
    return lines + [""] + [f"- {n}" for n in notes]


def writer_counters(counters: Mapping[str, Any]) -> str:
    """'1,000 written, 0 dropped (queue full), ...': every counter the writer reported, in
    words where this module knows the name."""
    return ", ".join(
        f"{value:,} {_WRITER_COUNTERS.get(name, name.replace('_', ' '))}"
        for name, value in counters.items()
    )


def _rps_cell(series: Series | None, digits: int = 0) -> str:
    if series is None:
        return "—"
    return _spread(series.rps(), digits) if series.ok else _failed(series)


def _rows_cell(series: Series | None) -> str:
    if series is None or not series.ok or not series.log_rows_per_s:
        return "—"
    return _spread(Spread.of(series.log_rows_per_s))


def _resources(results: Results) -> list[str]:
    header = [
        "Server",
        "peak RSS MiB (VmHWM)",
        "request_logs rows written",
        "request_logs growth",
        "per 100k logged requests",
    ]
    rows = [
        [
            BASELINE,
            _mib(results.bare_peak_rss_bytes),
            "—",
            "—",
            "—",
        ]
    ]
    for backend in _measured(results):
        per_100k = (
            backend.log_bytes / backend.log_rows * 100_000
            if backend.log_rows and backend.log_bytes is not None
            else None
        )
        rows.append(
            [
                f"{backend.label} (product)",
                _mib(backend.peak_rss_bytes),
                "—" if backend.log_rows is None else f"{backend.log_rows:,}",
                _mib(backend.log_bytes) + " MiB" if backend.log_bytes is not None else "—",
                _mib(per_100k) + " MiB" if per_100k is not None else "—",
            ]
        )
    return _table(header, rows)


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / MIB:.1f}"


def _targets(results: Results) -> list[str]:
    """Exactly the published targets (issue 14), per backend."""
    rows: list[list[str]] = []
    at = f"@{TARGET_STREAMS}"
    for backend in _measured(results):
        baseline = results.baseline.get(TARGET_STREAMS)
        for scenario, title, floor in (
            ("getme_access", SCENARIOS["getme_access"], GETME_X_BARE),
            ("getme_cli", SCENARIOS["getme_cli"], GETME_X_BARE),
            ("list_members", "ListMembers, 50 members", LIST_MEMBERS_X_BARE),
        ):
            by_streams = backend.series.get(scenario)
            if by_streams:
                r = bare_ratio(by_streams.get(TARGET_STREAMS), baseline)
                rows.append(
                    _at_least(f"{title} ≥ {floor} {TIMES} bare {at} streams", backend, r, floor)
                )
        for scenario in HTTP_SCENARIOS:
            by_streams = backend.series.get(scenario)
            if by_streams:
                r = http_ratio(by_streams.get(TARGET_STREAMS))
                title = f"{SCENARIOS[scenario]} ≥ {HTTP_X_GRPC} {TIMES} gRPC {at} clients"
                rows.append(_at_least(title, backend, r, HTTP_X_GRPC))
        login = backend.login
        if login is not None:
            raw = Spread.of(login.raw_per_second).median if login.raw_per_second else None
            x = login.login.rps().median / raw if login.login.ok and raw else None
            title = f"Login ≥ {LOGIN_X_RAW_BCRYPT} {TIMES} raw bcrypt @{login.streams} callers"
            rows.append(_at_least(title, backend, x, LOGIN_X_RAW_BCRYPT))
        for series in backend.overload:
            title = (
                f"{series.method.capitalize()} under overload, {series.callers} callers "
                f"retrying at once: successes ≥ {OVERLOAD_X_RAW_BCRYPT} {TIMES} raw bcrypt"
            )
            rows.append(_at_least(title, backend, series.x_raw(), OVERLOAD_X_RAW_BCRYPT))
        if backend.overload:
            p99s = [s.getme_p99_ms() for s in backend.overload]
            worst = (
                None
                if None in p99s or not all(s.ok for s in backend.overload)
                else max(p for p in p99s if p is not None)
            )
            rows.append(
                [
                    f"GetMe p99 {at} streams during the overload < {P99_MS:g} ms (highest)",
                    backend.label,
                    f"{_ms(worst)} ms",
                    _met(worst is not None and worst < P99_MS, worst is None),
                ]
            )
    return _table(["Target", "Backend", "Measured", "Met"], rows)


def _at_least(
    title: str, backend: BackendResult, measured: float | None, floor: float
) -> list[str]:
    ok = measured is not None and measured >= floor
    return [title, backend.label, _ratio(measured), _met(ok, measured is None)]


def _met(ok: bool, unknown: bool = False) -> str:
    if unknown:
        return "not measured / FAILED"
    return "yes" if ok else "**no**"


def _measured(results: Results) -> list[BackendResult]:
    return [b for b in results.backends if not b.skipped]
