"""The request-log spool of supervised workers (request_logs/spool.py): what a killed worker
had queued is written once by the next start, never twice."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa

from luman.interceptors.request_logging import RequestLogEntry
from luman.server.db.session import make_engine
from luman.server.request_logs import spool
from luman.server.request_logs.writer import RequestLogWriter

_NOW = dt.datetime.now(dt.UTC)


def _entry(index: int) -> RequestLogEntry:
    return RequestLogEntry(
        _NOW + dt.timedelta(milliseconds=index),  # recent: the writer prunes old rows
        f"/luman.auth.v1.AuthService/Call{index}",
        "OK",
        1.5,
        uuid.uuid4() if index % 2 else None,
        "127.0.0.1",
        "test",
    )


def _methods(database_url: str) -> list[str]:
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(sa.text("SELECT method FROM request_logs ORDER BY time")).scalars()
            )
    finally:
        engine.dispose()


# A worker's writer in a process of its own: 3 entries written (their batch committed its
# mark), 2 more queued behind a batch delay that never comes, then READY; the test SIGKILLs it.
_KILLED_WRITER = """
import datetime as dt, sys, threading
from pathlib import Path
from luman.interceptors.request_logging import RequestLogEntry
from luman.server.db.session import make_engine
from luman.server.request_logs import spool
from luman.server.request_logs.writer import RequestLogWriter

database_url, data_dir, now = sys.argv[1], Path(sys.argv[2]), dt.datetime.fromisoformat(sys.argv[3])
def entry(index):
    return RequestLogEntry(now + dt.timedelta(milliseconds=index),
        f"/luman.auth.v1.AuthService/Call{index}", "OK", 1.5, None, "127.0.0.1", "test")
writer = RequestLogWriter(make_engine(database_url, pool_size=1), max_delay=3600,
    spool=spool.RequestLogSpool(spool.spool_directory(data_dir), 1))
writer.start()
for index in range(3):
    writer.submit(entry(index))
assert writer.flush(10)
for index in range(5, 7):
    writer.submit(entry(index))
print("READY", flush=True)
threading.Event().wait()
"""


def test_a_killed_writer_s_queue_is_replayed_once(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url, pool_size=2)
    data_dir = tmp_path / "data"
    try:
        killed = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, database_url, str(data_dir), _NOW.isoformat()],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert killed.stdout is not None
            assert killed.stdout.readline().strip() == "READY"
        finally:
            killed.kill()
            killed.wait(10)
        # A second generation in the same slot, never started: both of its entries queued.
        abandoned = RequestLogWriter(
            engine, spool=spool.RequestLogSpool(spool.spool_directory(data_dir), 1)
        )
        for index in range(3, 5):
            abandoned.submit(_entry(index))
        assert _methods(database_url) == [_entry(i).method for i in range(3)]

        # Another slot's spool is not this worker's to replay.
        assert spool.recover(engine, data_dir, spool.slots_to_recover(0, 2)) == 0
        assert spool.recover(engine, data_dir, spool.slots_to_recover(1, 2)) == 4
        assert sorted(_methods(database_url)) == sorted(_entry(i).method for i in range(7))
        assert not list(spool.spool_directory(data_dir).glob("*.spool"))
        # Nothing left to replay twice.
        assert spool.recover(engine, data_dir, spool.slots_to_recover(None, 1)) == 0
        assert len(_methods(database_url)) == 7
    finally:
        engine.dispose()


def test_a_spool_whose_batch_committed_replays_nothing(database_url: str, tmp_path: Path) -> None:
    """Killed after the batch's commit, before the files were removed: the mark says all."""
    engine = make_engine(database_url, pool_size=2)
    data_dir = tmp_path / "data"
    try:
        writer = RequestLogWriter(
            engine, spool=spool.RequestLogSpool(spool.spool_directory(data_dir), 0)
        )
        writer.start()
        for index in range(5):
            writer.submit(_entry(index))
        assert writer.flush(10)
        assert list(spool.spool_directory(data_dir).glob("*.spool"))
        assert spool.recover(engine, data_dir, spool.slots_to_recover(0, 1)) == 0
        assert len(_methods(database_url)) == 5
        writer.close()
    finally:
        engine.dispose()


def test_a_graceful_close_removes_the_spool_and_its_mark(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url, pool_size=2)
    data_dir = tmp_path / "data"
    try:
        # Rotating after every batch: written files go as soon as their entries are written.
        writer = RequestLogWriter(
            engine,
            batch_size=2,
            spool=spool.RequestLogSpool(spool.spool_directory(data_dir), 0, rotate_bytes=1),
        )
        writer.start()
        for index in range(9):
            writer.submit(_entry(index))
        assert writer.flush(10)
        assert len(list(spool.spool_directory(data_dir).glob("*.spool"))) == 1
        writer.close()
        assert not list(spool.spool_directory(data_dir).glob("*.spool"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM request_log_spools")).scalar() == 0
        assert len(_methods(database_url)) == 9
    finally:
        engine.dispose()


def test_a_record_cut_short_by_the_kill_is_ignored(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url, pool_size=2)
    data_dir = tmp_path / "data"
    try:
        writer = RequestLogWriter(
            engine, spool=spool.RequestLogSpool(spool.spool_directory(data_dir), 0)
        )
        for index in range(2):
            writer.submit(_entry(index))
        (path,) = spool.spool_directory(data_dir).glob("*.spool")
        with path.open("ab") as file:
            file.write(b'[3, "2026-01-01T00:00:\n')  # torn by a full disk: skipped, not fatal
            file.write(b'[4, "2026-01-01T00:00:')  # the write that SIGKILL interrupted
        assert spool.recover(engine, data_dir, spool.slots_to_recover(None, 1)) == 2
    finally:
        engine.dispose()
