"""`python -m bench` (`make bench`): run the benchmarks and rewrite the table in BENCHMARKS.md.

Examples:
    python -m bench                                   # everything, as `make bench`
    python -m bench --duration 2 --runs 1 --only getme_access --backends sqlite
    BENCH_DURATION=10 make bench                      # longer runs

A run with --only or --backends prints its block but leaves BENCHMARKS.md alone unless
--write is given: a partial run must not replace the full table.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import h2load, report
from bench.databases import DEFAULT_POSTGRES_URL
from bench.processes import CpuPlan
from bench.scenarios import BACKENDS, SCENARIOS, Bench, Options, iter_series

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("bench")


def _csv(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [i for i in items if i not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown: {', '.join(unknown) or '(none)'} (choose from {', '.join(choices)})"
            )
        return items

    return parse


def _streams(value: str) -> tuple[int, ...]:
    try:
        streams = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("streams are whole numbers, e.g. 1,16,64") from None
    if not streams or min(streams) < 1:
        raise argparse.ArgumentTypeError("give at least one stream count, each at least 1")
    return streams


def _env_pair(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    return key, val


def _redacted(argv: list[str]) -> list[str]:
    """The command line for the report, without the values of secret-looking variables."""
    secret = ("SECRET", "PASSWORD", "TOKEN", "KEY")
    out = []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        if sep and any(word in key.upper() for word in secret):
            arg = f"{key}=…"
        out.append(arg)
    return out


def parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--duration",
        type=int,
        default=int(env.get("BENCH_DURATION", "5")),
        help="seconds per measured run (whole seconds; env BENCH_DURATION; default 5)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=int(env.get("BENCH_WARMUP", "1")),
        help="seconds of the unmeasured warm-up run (env BENCH_WARMUP; default 1)",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=int(env.get("BENCH_RUNS", "3")),
        help="measured runs per configuration (env BENCH_RUNS; default 3)",
    )
    p.add_argument(
        "--streams",
        type=_streams,
        default=_streams(env.get("BENCH_STREAMS", "1,16,64")),
        help="concurrent streams on one connection (env BENCH_STREAMS; default 1,16,64)",
    )
    p.add_argument(
        "--login-streams",
        type=int,
        default=Options.login_streams,
        help="Login concurrency (3: what a one-core server admits before SERVER_BUSY)",
    )
    p.add_argument(
        "--only",
        type=_csv(tuple(SCENARIOS)),
        default=None,
        help=f"scenarios to run, comma-separated: {', '.join(SCENARIOS)} "
        "(the baseline always runs)",
    )
    p.add_argument(
        "--backends",
        type=_csv(BACKENDS),
        default=None,
        help="sqlite,postgresql (default both)",
    )
    p.add_argument(
        "--postgres-url",
        default=env.get("LUMAN_BENCH_DATABASE_URL")
        or env.get("LUMAN_TEST_DATABASE_URL")
        or DEFAULT_POSTGRES_URL,
        help="PostgreSQL server; each run uses a fresh schema and drops it "
        "(env LUMAN_BENCH_DATABASE_URL, else LUMAN_TEST_DATABASE_URL)",
    )
    p.add_argument("--bcrypt-rounds", type=int, default=None, help="default: BCRYPT_ROUNDS")
    p.add_argument(
        "--bcrypt-threads",
        type=int,
        default=Options.bcrypt_threads,
        help="threads for raw bcrypt: the product's concurrent hashes (default 1: its pinned core)",
    )
    p.add_argument(
        "--server-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the product server (repeatable)",
    )
    p.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    write = p.add_mutually_exclusive_group()
    write.add_argument("--write", action="store_true", default=None, help="rewrite --output")
    write.add_argument("--no-write", dest="write", action="store_false", help="only print")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if h2load.h2load_path() is None:
        logger.error("h2load not found: install Debian's nghttp2-client (apt-get install ...)")
        return 2
    if args.duration < 1 or args.warmup < 1 or args.runs < 1:
        logger.error("--duration, --warmup and --runs must be at least 1")
        return 2
    partial = args.only is not None or args.backends is not None
    options = Options(
        duration=args.duration,
        warmup=args.warmup,
        runs=args.runs,
        streams=args.streams,
        login_streams=args.login_streams,
        backends=args.backends or BACKENDS,
        postgres_url=args.postgres_url,
        only=frozenset(args.only or SCENARIOS),
        bcrypt_rounds=args.bcrypt_rounds,
        bcrypt_threads=args.bcrypt_threads,
        server_env=dict(args.server_env),
    )
    command = shlex.join(
        ["python", "-m", "bench", *_redacted(sys.argv[1:] if argv is None else argv)]
    )
    cpu = CpuPlan.detect()
    logger.info("bench: %s; %s", command, cpu.note)
    with tempfile.TemporaryDirectory(prefix="luman-bench-") as workdir:
        results = Bench(options, Path(workdir), cpu, command).run_all()
    block = report.render(results)
    sys.stdout.write(block)
    if args.write or (args.write is None and not partial):
        report.rewrite(args.output, block)
        logger.info("rewrote the results in %s", args.output)
    failed = [s for s in iter_series(results) if not s.ok]
    if failed:
        logger.warning("%d series FAILED verification; see the table", len(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
