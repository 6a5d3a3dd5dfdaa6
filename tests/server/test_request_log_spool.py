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


# What a worker process runs before it is killed: `program` with `writer(slot, **options)`
# and `entry(index)` at hand, then READY; the test SIGKILLs it there.
_PRELUDE = """
import datetime as dt, sys, threading
from pathlib import Path
from luman.interceptors.request_logging import RequestLogEntry
from luman.server.db.session import make_engine
from luman.server.request_logs import spool
from luman.server.request_logs.writer import RequestLogWriter

database_url, data_dir, now = sys.argv[1], Path(sys.argv[2]), dt.datetime.fromisoformat(sys.argv[3])
engine = make_engine(database_url, pool_size=1)
def entry(index):
    return RequestLogEntry(now + dt.timedelta(milliseconds=index),
        f"/luman.auth.v1.AuthService/Call{index}", "OK", 1.5, None, "127.0.0.1", "test")
def writer(slot, **options):
    spooled = spool.RequestLogSpool(spool.spool_directory(data_dir), slot)
    return RequestLogWriter(engine, spool=spooled, **options)
"""


def _killed(database_url: str, data_dir: Path, program: str) -> None:
    """Run `program` in a process of its own (see _PRELUDE), then SIGKILL it."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _PRELUDE + program + '\nprint("READY", flush=True)\nthreading.Event().wait()\n',
            database_url,
            str(data_dir),
            _NOW.isoformat(),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "READY"
    finally:
        process.kill()
        process.wait(10)


def test_a_killed_writer_s_queue_is_replayed_once(database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # 3 entries written (their batch committed its mark), 2 more queued behind a batch delay
    # that never comes; and a second generation in the same slot, never started, with 2.
    _killed(
        database_url,
        data_dir,
        """
first = writer(1, max_delay=3600)
first.start()
for index in range(3):
    first.submit(entry(index))
assert first.flush(10)
for index in range(5, 7):
    first.submit(entry(index))
second = writer(1)
for index in range(3, 5):
    second.submit(entry(index))
""",
    )
    engine = make_engine(database_url, pool_size=2)
    try:
        assert _methods(database_url) == [_entry(i).method for i in range(3)]
        # Another slot's spool is not this worker's to replay.
        assert spool.recover(engine, data_dir, spool.slots_to_recover(0, 2)) == 0
        assert spool.recover(engine, data_dir, spool.slots_to_recover(1, 2)) == 4
        assert sorted(_methods(database_url)) == sorted(_entry(i).method for i in range(7))
        assert not list(spool.spool_directory(data_dir).iterdir())
        # Nothing left to replay twice.
        assert spool.recover(engine, data_dir, spool.slots_to_recover(None, 1)) == 0
        assert len(_methods(database_url)) == 7
    finally:
        engine.dispose()


def test_a_spool_whose_batch_committed_replays_nothing(database_url: str, tmp_path: Path) -> None:
    """Killed after the batch's commit, before the files were removed: the mark says all."""
    data_dir = tmp_path / "data"
    _killed(
        database_url,
        data_dir,
        """
only = writer(0)
only.start()
for index in range(5):
    only.submit(entry(index))
assert only.flush(10)
""",
    )
    engine = make_engine(database_url, pool_size=2)
    try:
        assert list(spool.spool_directory(data_dir).glob("*.spool"))
        assert spool.recover(engine, data_dir, spool.slots_to_recover(0, 1)) == 0
        assert not list(spool.spool_directory(data_dir).glob("*.spool"))
        assert len(_methods(database_url)) == 5
    finally:
        engine.dispose()


def test_a_live_spool_is_left_to_its_writer(database_url: str, tmp_path: Path) -> None:
    """A second serve sharing LUMAN_DATA_DIR does not replay a running worker's spool."""
    engine = make_engine(database_url, pool_size=2)
    data_dir = tmp_path / "data"
    try:
        writer = RequestLogWriter(
            engine, spool=spool.RequestLogSpool(spool.spool_directory(data_dir), 0)
        )
        for index in range(2):
            writer.submit(_entry(index))
        assert spool.recover(engine, data_dir, spool.slots_to_recover(None, 1)) == 0
        assert _methods(database_url) == []
        writer.start()
        writer.close()
        assert len(_methods(database_url)) == 2
        assert not list(spool.spool_directory(data_dir).iterdir())
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
    data_dir = tmp_path / "data"
    _killed(
        database_url,
        data_dir,
        """
only = writer(0)
for index in range(2):
    only.submit(entry(index))
""",
    )
    (path,) = spool.spool_directory(data_dir).glob("*.spool")
    with path.open("ab") as file:
        file.write(b'[3, "2026-01-01T00:00:\n')  # torn by a full disk: skipped, not fatal
        file.write(b'[4, "2026-01-01T00:00:')  # the write that SIGKILL interrupted
    engine = make_engine(database_url, pool_size=2)
    try:
        assert spool.recover(engine, data_dir, spool.slots_to_recover(None, 1)) == 2
    finally:
        engine.dispose()
