"""Instructions per call: where the server's CPU goes, counted instead of timed.

`python -m bench.instructions` runs each server under valgrind's callgrind and sends it a fixed
number of GetMe calls with h2load. Callgrind counts the instructions every thread of the
process executes (the gRPC core's threads, the workers, the request-log writer), and the count
is the same from run to run whatever else the machine is doing, so differences of a few
percent that a timed run on a shared 2-core machine cannot show are visible here.

Each configuration is run twice, with a short and a long series of calls and otherwise
identically (start-up, scenario data, warm-up); the difference of the two totals divided by the
difference in calls is the cost of one call, with start-up and shutdown cancelled out. It counts
only the server process: a PostgreSQL server's own work is not in it (SQLite's is, in-process).
The two runs of a configuration go in parallel, one per CPU; valgrind slows a process down
about fiftyfold, so a configuration takes about a minute.

Configurations (a comma-separated `--only` picks some):

- `bare`: the baseline server of `python -m bench` (bytes in, bytes out).
- `floor`: the baseline server doing, at grpcio's level, what every product call must: a
  protobuf request and response, an access-token-sized authorization header received, the
  peer address and metadata read, three trailers set, the status read, one interceptor
  (`bench.bare_server --floor`). No Luman code at all.
- `lean`: the floor plus the least Python a GetMe through the chain must run on a token-cache
  hit, as one function (`bench.bare_server --lean`): token hash and expiry, the sliding-window
  count, the trailers from it, a request-log entry queued. A lower bound for the product's
  chain without the log's database write.
- `product`: the product (`bench.product_server`), GetMe with an access token, full chain.
- `product-log-discarded`: the same with the request-log writer discarding entries (the
  logging interceptor still runs): the difference to `product` is the database writes.
- `product-log-off`: REQUEST_LOG_ENABLED=false (no logging interceptor, no writer).

bcrypt runs at cost 4 (`BCRYPT_ROUNDS`): creating the scenario data hashes 51 passwords, which
at the product's cost 10 would take minutes under valgrind, and GetMe hashes nothing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

from bench import h2load, report
from bench.databases import postgres_database, sqlite_database
from bench.h2load import GrpcCall, Load
from bench.processes import START_TIMEOUT_SECONDS, harness_env, settle
from bench.scenarios import Options, product_env
from bench.stats import TIMES
from bench.workload import OWNER_EMAIL, prepare
from luman.auth.v1 import auth_service_pb2
from luman.server.auth.tokens import TokenCodec
from luman.server.clock import system_clock
from luman.server.config import Settings

logger = logging.getLogger("bench.instructions")

BEGIN = "<!-- instructions:begin -->"
END = "<!-- instructions:end -->"
CONFIGS = ("bare", "floor", "lean", "product", "product-log-discarded", "product-log-off")
WARMUP_CALLS = 200
STOP_TIMEOUT_SECONDS = 300.0  # valgrind writes its output at exit, after the product's flush
H2LOAD_TIMEOUT_SECONDS = 900.0


# Alembic's migration context is process-global: the two runs' databases are migrated in turn.
_MIGRATING = threading.Lock()


class InstructionsError(Exception):
    """valgrind is missing, a server did not start, or a run failed verification."""


@dataclasses.dataclass(frozen=True)
class Count:
    config: str
    backend: str
    per_call: int
    short_total: int
    long_total: int


def valgrind_prefix(out_file: Path) -> list[str]:
    if shutil.which("valgrind") is None:
        raise InstructionsError("valgrind not found: install Debian's valgrind")
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]


def total_instructions(out_file: Path) -> int:
    """The `summary:` line callgrind writes at exit: all instructions of all threads."""
    for line in out_file.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise InstructionsError(f"no summary line in {out_file}")


@contextlib.contextmanager
def _server(command: list[str], env: Mapping[str, str], workdir: Path, log: Path) -> Iterator[int]:
    """Start `command`, wait for `READY <port>`, and stop it with SIGTERM at the end."""
    with log.open("w") as stderr:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our modules, no shell
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=dict(env), cwd=workdir
        )
    try:
        assert process.stdout is not None
        line = _readline(process, START_TIMEOUT_SECONDS * 10)
        tag, _, port = line.partition(" ")
        if tag != "READY":
            raise InstructionsError(f"{command[-1]} did not start: {log.read_text()[-800:]}")
        yield int(port)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert process.stdout is not None
        return pool.submit(process.stdout.readline).result(timeout).strip()


def _calls(call: GrpcCall, port: int, workdir: Path, streams: int, count: int) -> None:
    run = h2load.start(
        call,
        Load(streams=streams, requests=count),
        port=port,
        workdir=workdir,
        tag=f"-{count}",
        timeout=H2LOAD_TIMEOUT_SECONDS,
    ).finish()
    if not run.ok:
        raise InstructionsError(f"{call.name}: {run.verdict.reason}")


def _product_run(
    config: str, backend: str, calls: int, streams: int, workdir: Path, postgres_url: str
) -> tuple[int, bytes]:
    """Total instructions of one product run with `calls` GetMe calls, and the response."""
    database = sqlite_database(workdir) if backend == "sqlite" else postgres_database(postgres_url)
    extra = {"BCRYPT_ROUNDS": "4"}
    if config == "product-log-off":
        extra["REQUEST_LOG_ENABLED"] = "false"
    options = Options(server_env=extra)
    out_file = workdir / "callgrind.out"
    with contextlib.ExitStack() as stack:
        with _MIGRATING:
            db = stack.enter_context(database)
        env = product_env(options, db.url, workdir / "data")
        log_arg = "off" if config == "product-log-discarded" else "on"
        command = [
            *valgrind_prefix(out_file),
            sys.executable,
            "-m",
            "bench.product_server",
            "--request-log",
            log_arg,
        ]
        with _server(command, env, workdir, workdir / "server.log") as port:
            call = prepare(port).getme_access
            _calls(call, port, workdir, streams, WARMUP_CALLS)
            settle(port)
            _calls(call, port, workdir, streams, calls)
            settle(port)
    return total_instructions(out_file), call.expected_response


def _bare_run(
    config: str, response: bytes, calls: int, streams: int, workdir: Path
) -> tuple[int, bytes]:
    response_file = workdir / "response.bin"
    response_file.write_bytes(response)
    out_file = workdir / "callgrind.out"
    command = [
        *valgrind_prefix(out_file),
        sys.executable,
        "-m",
        "bench.bare_server",
        "--response-file",
        str(response_file),
        *([f"--{config}"] if config in ("floor", "lean") else []),
    ]
    with _server(command, harness_env(), workdir, workdir / "server.log") as port:
        call = GrpcCall(
            name=config,
            method="/luman.auth.v1.AuthService/GetMe",
            request=b"",
            expected_response=response,
            metadata=(("authorization", _authorization(config)),),
        )
        _calls(call, port, workdir, streams, WARMUP_CALLS)
        settle(port)
        _calls(call, port, workdir, streams, calls)
        settle(port)
    return total_instructions(out_file), response


def measure(
    config: str,
    backend: str,
    *,
    calls: int,
    streams: int,
    response: bytes,
    postgres_url: str,
    keep: Path | None = None,
) -> tuple[Count, bytes]:
    """Per-call instructions of `config`: a run of calls/5 and one of `calls`, in parallel.
    With `keep`, each run's callgrind output is copied there (for callgrind_annotate)."""
    short = max(1, calls // 5)

    def one(count: int) -> tuple[int, bytes]:
        with tempfile.TemporaryDirectory(prefix="luman-instructions-") as workdir:
            if config.startswith("product"):
                result = _product_run(config, backend, count, streams, Path(workdir), postgres_url)
            else:
                result = _bare_run(config, response, count, streams, Path(workdir))
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                name = f"{config}-{backend}-{count}.callgrind.out"
                shutil.copy(Path(workdir) / "callgrind.out", keep / name)
            return result

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        short_run, long_run = pool.map(one, (short, calls))
    per_call = (long_run[0] - short_run[0]) // (calls - short)
    label = backend if config.startswith("product") else "—"
    return Count(config, label, per_call, short_run[0], long_run[0]), long_run[1]


def _authorization(config: str) -> str:
    """The floor and the lean chain receive a bearer token as long as the product's access
    tokens (grpcio reads every byte of it, the lean chain hashes it); the bare server a short
    one."""
    if config not in ("floor", "lean"):
        return "Bearer bench"
    settings = Settings.from_env(product_env(Options(), "sqlite://", Path(".")))
    issued = TokenCodec(settings, system_clock).issue("access", uuid.uuid4(), uuid.uuid4())
    return f"Bearer {issued.token}"


def _sample_response() -> bytes:
    """A GetMe response like the product's (same fields, same sizes)."""
    message = auth_service_pb2.GetMeResponse()
    message.user.id = str(uuid.UUID(int=0))
    message.user.email = OWNER_EMAIL
    message.user.name = "Bench Owner"
    message.user.create_time.FromSeconds(1_795_000_000)
    return message.SerializeToString()


def render(counts: list[Count], command: str, calls: int, streams: int) -> str:
    lines = [
        f"Generated by `{command}`: {calls} GetMe calls at {streams} streams against "
        f"{calls // 5}, per-call difference of callgrind totals (all threads of the server).",
        "",
        f"| Server | Backend | instructions per call | {TIMES} bare |",
        "|---|---|---|---|",
    ]
    bare = next((c.per_call for c in counts if c.config == "bare"), None)
    for c in counts:
        ratio = f"{c.per_call / bare:.2f}" if bare else "—"
        lines.append(f"| {c.config} | {c.backend} | {c.per_call:,} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--calls", type=int, default=2500, help="calls in the long run")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--only", default=",".join(CONFIGS), help=f"of {', '.join(CONFIGS)}")
    parser.add_argument("--backends", default="sqlite", help="sqlite and/or postgresql")
    parser.add_argument(
        "--postgres-url", default=Options.postgres_url, help="as for python -m bench"
    )
    parser.add_argument("--write", type=Path, help="rewrite the instructions block of this file")
    parser.add_argument("--keep", type=Path, help="copy every callgrind output into this folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    configs = [c for c in CONFIGS if c in args.only.split(",")]
    backends = args.backends.split(",")
    if args.calls < 10:
        parser.error("--calls must be at least 10")
    counts: list[Count] = []
    response = b""
    try:
        # Products first: the bare servers answer with the product's real GetMe response.
        for config in sorted(configs, key=lambda c: not c.startswith("product")):
            for backend in backends if config.startswith("product") else ["sqlite"]:
                if not config.startswith("product") and not response:
                    response = _sample_response()  # no product run to take it from
                logger.info("%s (%s): two runs under callgrind", config, backend)
                count, got = measure(
                    config,
                    backend,
                    calls=args.calls,
                    streams=args.streams,
                    response=response,
                    postgres_url=args.postgres_url,
                    keep=args.keep,
                )
                response = response or got
                counts.append(count)
    except InstructionsError as exc:
        logger.error("%s", exc)
        return 1
    counts.sort(key=lambda c: CONFIGS.index(c.config))
    command = (
        "python -m bench.instructions"
        + (" " + " ".join(sys.argv[1:] if argv is None else argv)).rstrip()
    )
    block = render(counts, command, args.calls, args.streams)
    sys.stdout.write(block)
    if args.write:
        report.rewrite(args.write, block, begin=BEGIN, end=END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
