"""The request-log writer's ceiling: rows/s that `store.insert_entries` sustains on one thread.

`store.insert_entries` is all the writer thread does per batch (bind processors, the multi-row
INSERTs or binary COPY, the commit). The harness runs this module pinned to the server's CPU
against the backend's bench database once the product has stopped, with `request_logs` as the
run left it, so the figure is what the product's writer can do on that core when it has the
core to itself; during a GetMe run it only has to keep up with the request rate. The rows it
adds stay (the bench database is thrown away afterwards).

Prints one JSON object: {"rows": n, "seconds": s, "per_second": n / s}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import uuid

from luman.interceptors.request_logging import RequestLogEntry
from luman.server.db.session import make_engine
from luman.server.request_logs import store
from luman.server.request_logs.writer import DEFAULT_BATCH_SIZE

METHOD = "/luman.auth.v1.AuthService/GetMe"
USER_AGENT = "grpc-python/1.85.3 grpc-c/52.0.0 (linux; chttp2)"


def _batch(user_id: uuid.UUID, start: dt.datetime, size: int) -> list[RequestLogEntry]:
    """`size` entries like a GetMe run's, a microsecond apart from `start` on: times only grow,
    as they do in the product, so the indexes on time are appended to, not split."""
    return [
        RequestLogEntry(
            start + dt.timedelta(microseconds=i),
            METHOD,
            "OK",
            0.1,
            user_id,
            "127.0.0.1",
            USER_AGENT,
        )
        for i in range(size)
    ]


def measure(
    database_url: str, seconds: float, batch_size: int = DEFAULT_BATCH_SIZE
) -> dict[str, float]:
    """Insert `batch_size`-entry batches for about `seconds` of insert time. Building a batch
    is the RPC side's work, not the writer's: it happens outside the timed part."""
    engine = make_engine(database_url, pool_size=1)
    try:
        user_id = uuid.uuid4()
        start = dt.datetime.now(dt.UTC)
        step = dt.timedelta(microseconds=batch_size)
        store.insert_entries(engine, _batch(user_id, start, batch_size))  # connect, prepare
        rows = 0
        elapsed = 0.0
        while elapsed < seconds:
            start += step
            batch = _batch(user_id, start, batch_size)
            began = time.perf_counter()
            store.insert_entries(engine, batch)
            elapsed += time.perf_counter() - began
            rows += len(batch)
    finally:
        engine.dispose()
    return {"rows": rows, "seconds": elapsed, "per_second": rows / elapsed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.log_writer")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(measure(args.database_url, args.seconds)) + "\n")


if __name__ == "__main__":
    main()
