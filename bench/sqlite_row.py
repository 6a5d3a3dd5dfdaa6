"""The least a request_logs row costs on SQLite: plain sqlite3, nothing of Luman's or SQLAlchemy's.

`python -m bench.sqlite_row --rows N` migrates a fresh SQLite database (the real request_logs
table with its two indexes, WAL, synchronous=NORMAL, as the product connects), then inserts N
rows in 500-row transactions with `sqlite3.executemany`, the values already text as the ORM
stores them. It prints {"rows": n, "seconds": s, "per_second": n / s}.

Under callgrind, the difference of two runs (say 12,000 and 2,000 rows) divided by the
difference in rows is the instructions one row costs SQLite and the sqlite3 module: what any
in-process request log on SQLite pays per call, however its writer is written. BENCHMARKS.md
sets it beside the writer's own cost per row ("What no chain can avoid").
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.dialects import sqlite

from bench.databases import sqlite_database
from bench.log_writer import METHOD, USER_AGENT
from luman.server.db.session import SQLITE_BUSY_TIMEOUT_MS
from luman.server.request_logs.store import COLUMNS, TABLE
from luman.server.request_logs.writer import DEFAULT_BATCH_SIZE

# The statement SQLAlchemy compiles for these columns: "INSERT INTO request_logs (…) VALUES (?, …)".
_INSERT = str(insert(TABLE).compile(dialect=sqlite.dialect(), column_keys=list(COLUMNS)))


def measure(path: Path, rows: int, batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, float]:
    """Insert `rows` rows into the migrated database at `path`; time the inserts only."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        # One row as the ORM stores a GetMe's entry (UUIDs as 32 hex digits, times as text).
        # Equal times append to the time indexes as growing times do (the rowid breaks ties).
        row = ("2026-12-06 12:00:00.000001", METHOD, "OK", 0.1, uuid.uuid4().hex, "127.0.0.1")
        batch = [(*row, USER_AGENT)] * batch_size
        done, elapsed = 0, 0.0
        while done < rows:
            chunk = batch[: rows - done]
            began = time.perf_counter()
            connection.execute("BEGIN")
            connection.executemany(_INSERT, chunk)
            connection.execute("COMMIT")
            elapsed += time.perf_counter() - began
            done += len(chunk)
    finally:
        connection.close()
    return {"rows": done, "seconds": elapsed, "per_second": done / elapsed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sqlite_row")
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="luman-sqlite-row-") as directory:
        with sqlite_database(Path(directory)) as db:
            path = Path(db.url.removeprefix("sqlite:///"))
        result = measure(path, args.rows)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
