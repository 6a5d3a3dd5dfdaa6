"""The product under test: the real App from `luman.server.app.build_server`, in its own process.

Configured from the environment exactly like `luman-server serve` (Settings.from_env, the same
engine pool size, the HTTP gateway on HTTP_PORT, the same graceful stop that flushes the
request log), with two additions the harness needs: it prints `READY <port> <http port>` once
serving, and `STATS <json>` with the request-log writer's counters after stopping. The request
log is switched off as in production, with REQUEST_LOG_ENABLED=false.

The database must already be migrated (the harness does it). Run from a directory without a
`.env` so that only the harness's environment applies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading

from luman.server.app import build_server, wait_for_stop
from luman.server.config import Settings
from luman.server.db import migrate
from luman.server.db.session import make_engine, make_sessions
from luman.server.gateway import build_gateway

READY = "READY"
STATS = "STATS"


def _emit(tag: str, payload: str) -> None:
    sys.stdout.write(f"{tag} {payload}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m bench.product_server").parse_args(argv)
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
        app = build_server(settings, sessions)
        gateway = build_gateway(settings, sessions, app)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        app.start()
        gateway.start()
        _emit(READY, f"{app.port} {gateway.port}")
        wait_for_stop(stop)
        gateway.stop(settings.shutdown_grace_seconds)
        app.stop(settings.shutdown_grace_seconds)
        # The writer's counters as it names them (written, dropped, ...); none when it is off.
        stats = app.request_log.stats if app.request_log is not None else None
        _emit(STATS, json.dumps(dataclasses.asdict(stats) if stats is not None else {}))
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
