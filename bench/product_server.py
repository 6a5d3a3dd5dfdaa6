"""The product under test: the real App from `luman.server.app.build_server`, in its own process.

Configured from the environment exactly like `luman-server serve` (Settings.from_env, the same
engine pool size, the start-up heap frozen, the same graceful stop that flushes the request
log), with three additions
the harness needs: it prints `READY <port>` once serving, prints `STATS <json>` with the
request-log writer's counters after stopping, and `--request-log off` swaps the request-log
writer for one that discards entries, to price the log writes.

The database must already be migrated (the harness does it). Run from a directory without a
`.env` so that only the harness's environment applies.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from luman.interceptors.request_logging import RequestLogEntry
from luman.server.app import build_server, freeze_startup_heap, wait_for_stop
from luman.server.config import Settings
from luman.server.db import migrate
from luman.server.db.session import make_engine, make_sessions
from luman.server.request_logs.writer import RequestLogWriter

READY = "READY"
STATS = "STATS"


class DiscardingRequestLog(RequestLogWriter):
    """Takes every entry and writes none: the chain without request-log database writes.

    The RequestLoggingInterceptor still runs (building the entry). The harness prices the
    whole feature with REQUEST_LOG_ENABLED=false instead (scenarios.LOGGING_OFF_ENV), which
    leaves interceptor and writer out and makes build_server ignore this writer.
    """

    def submit(self, entry: RequestLogEntry) -> None:
        return


def _emit(tag: str, payload: str) -> None:
    sys.stdout.write(f"{tag} {payload}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.product_server")
    parser.add_argument("--request-log", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    # Same format as `luman-server serve`.
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    engine = make_engine(settings.database_url, pool_size=settings.max_workers)
    try:
        current, head = migrate.pending(engine)
        if current != head:
            raise SystemExit(f"database schema is at {current}, expected {head}")
        sessions = make_sessions(engine)
        request_log = (
            DiscardingRequestLog(engine, retention_days=0) if args.request_log == "off" else None
        )
        app = build_server(settings, sessions, request_log=request_log)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        freeze_startup_heap()  # as `luman-server serve` does
        app.start()
        _emit(READY, str(app.port))
        wait_for_stop(stop)
        app.stop(settings.shutdown_grace_seconds)
        stats = app.request_log.stats if app.request_log is not None else None
        _emit(
            STATS,
            json.dumps(
                {
                    "request_log_written": stats.written if stats else None,
                    "request_log_dropped": stats.dropped if stats else None,
                    "request_log_failed": stats.failed if stats else None,
                    "request_log_after_close": stats.after_close if stats else None,
                }
            ),
        )
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
