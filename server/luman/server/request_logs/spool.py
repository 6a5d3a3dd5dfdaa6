"""The request log's spool: what a worker of `serve --workers N` has queued survives SIGKILL.

The writer (writer.py) queues entries in memory and inserts them in batches, so a worker that
is killed (SIGKILL, the OOM killer) would lose up to a second of calls that had answered OK.
In a supervised worker each accepted entry is also appended to a spool file, one write(2)
while the call is still in its handler, i.e. before its response is sent. The data is then in
the kernel's page cache, which outlives the process (not the machine: no fsync; a host crash
loses the page cache and the database's own unsynced tail alike).

Exactly once. Each entry carries a sequence number, one series per worker process (its spool
`name`). The transaction that inserts a batch also records, in `request_log_spools`, the
number of the last entry written: the rows and the mark commit together or not at all. The
worker that starts next in the same slot (a single `serve`, or worker 0, takes the slots no
worker runs) replays the entries after the mark, in one transaction that moves the mark to
the end, then deletes the files and the mark. Killed between commit and unlink, the next start
finds the mark at the end and replays nothing: no loss, no duplicate.

A live spool is locked: its process holds an flock on `<name>.lock` for as long as it runs
(the kernel releases it when the process dies, however it dies). Recovery skips a spool whose
lock it cannot take, so a second `serve` sharing LUMAN_DATA_DIR never replays the spool of a
worker that is still writing it.

Files rotate at ROTATE_BYTES; a file all of whose entries are written is deleted. A graceful
stop that wrote everything deletes the whole spool; one that could not (the database away past
the close timeout) leaves it for the next start.

Cost: one json.dumps and one write(2) per call, under the writer's lock (so that the spool's
order is the queue's): 8.5-13 µs per entry (three runs of 50,000 appends of a GetMe entry on
this 2-core machine while other tests ran).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import functools
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from luman.interceptors.request_logging import RequestLogEntry
from luman.server.db.models import RequestLogSpool as SpoolMark
from luman.server.request_logs import store

logger = logging.getLogger(__name__)

DIRECTORY = "request-log-spool"  # in LUMAN_DATA_DIR
ROTATE_BYTES = 16 * 1024 * 1024
_MARKS = cast(sa.Table, SpoolMark.__table__)
_FIELDS = RequestLogEntry._fields


def spool_directory(data_dir: Path) -> Path:
    return data_dir / DIRECTORY


def slots_to_recover(worker_slot: int | None, workers: int) -> Callable[[int], bool]:
    """Whose spools this process replays at start: its own slot's; worker 0 and a single
    `serve` also those of slots no worker runs now."""
    if worker_slot is None:
        return lambda _slot: True
    if worker_slot == 0:
        return lambda slot: slot == 0 or slot >= workers
    return lambda slot: slot == worker_slot


@dataclasses.dataclass
class _File:
    path: Path
    fd: int | None
    last: int  # the sequence number of its last entry (0: none yet)
    size: int = 0


class RequestLogSpool:
    """The spool of one worker process in `slot`, under `directory` (made if missing).

    `append` runs on the RPC threads, under the writer's lock; `marker` and `advance` on the
    writer's thread; `close` once the writer has stopped.
    """

    def __init__(self, directory: Path, slot: int, *, rotate_bytes: int = ROTATE_BYTES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.name = f"{slot}.{time.time_ns()}.{secrets.token_hex(4)}"
        self._directory = directory
        self._rotate_bytes = rotate_bytes
        self._lock = threading.Lock()
        self._files: list[_File] = []
        self._appended = 0  # sequence number of the last entry appended
        self._consumed = 0  # ... and of the last one the writer is done with
        self._failures = 0
        # Held until close() or the process's end: recovery leaves a locked spool alone.
        self._lock_fd: int | None = _lock_spool(directory, self.name)
        if self._lock_fd is None:
            raise OSError(f"cannot lock the new request-log spool {self.name}")
        self._open_file()

    @property
    def failures(self) -> int:
        """Entries that could not be spooled (a full disk): a SIGKILL would lose them."""
        return self._failures

    def _open_file(self) -> None:
        path = self._directory / f"{self.name}.{len(self._files):06d}.spool"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        header = json.dumps({"fields": _FIELDS}).encode() + b"\n"
        os.write(fd, header)
        self._files.append(_File(path, fd, self._appended, len(header)))

    def append(self, entry: RequestLogEntry) -> None:
        """Spool `entry`, the next one queued. Never raises."""
        with self._lock:
            self._appended += 1
            line = json.dumps((self._appended, *entry), default=_plain).encode() + b"\n"
            current = self._files[-1]
            try:
                assert current.fd is not None
                written = os.write(current.fd, line)
                if written != len(line):
                    # A full disk took part of the line. It stays torn (replay skips it); the
                    # next entries go to a fresh file rather than after it.
                    self._open_file()
                    raise OSError(f"wrote {written} of {len(line)} bytes")
            except OSError as exc:
                self._failures += 1
                if self._failures == 1:
                    logger.error("request log spool %s: cannot write (%s)", current.path, exc)
                return
            current.last = self._appended
            current.size += len(line)

    def marker(self, count: int) -> Callable[[Connection], None]:
        """What the batch of the next `count` entries runs in its transaction: their mark."""
        value = self._consumed + count

        def mark(connection: Connection) -> None:
            _set_mark(connection, self.name, value)

        return mark

    def advance(self, count: int) -> None:
        """The writer is done with the next `count` entries (written, or lost for good)."""
        with self._lock:
            self._consumed += count
            if self._files[-1].size >= self._rotate_bytes:
                self._close_fd(self._files[-1])
                self._open_file()
            while len(self._files) > 1 and self._files[0].last <= self._consumed:
                _unlink(self._files.pop(0).path)

    def close(self, engine: Engine) -> None:
        """The writer has stopped: drop the spool if everything in it is written."""
        with self._lock:
            for file in self._files:
                self._close_fd(file)
            if self._consumed < self._appended:
                logger.warning(
                    "request log: %d entries left in the spool %s for the next start",
                    self._appended - self._consumed,
                    self._directory,
                )
                return
            for file in self._files:
                _unlink(file.path)
            self._files.clear()
            self._release()
        try:
            with engine.begin() as connection:
                connection.execute(sa.delete(_MARKS).where(_MARKS.c.name == self.name))
        except Exception as exc:  # a leftover mark is a few bytes, never replayed from
            logger.debug("request log spool: mark not deleted (%s)", type(exc).__name__)

    def _release(self) -> None:
        """Holding the lock, everything written: the spool's lock file goes."""
        if self._lock_fd is not None:
            _unlink(_lock_path(self._directory, self.name))
            os.close(self._lock_fd)
            self._lock_fd = None

    @staticmethod
    def _close_fd(file: _File) -> None:
        if file.fd is not None:
            os.close(file.fd)
            file.fd = None


def recover(engine: Engine, data_dir: Path, slots: Callable[[int], bool]) -> int:
    """Write what the spools of `slots` hold past their marks; return how many entries.

    A spool whose entries the database refuses (not because it is away) is logged and kept.
    """
    directory = spool_directory(data_dir)
    if not directory.is_dir():
        return 0
    spools: dict[str, list[Path]] = {}
    for path in sorted(directory.glob("*.spool")):
        name = path.name.rsplit(".", 2)[0]
        slot = name.split(".", 1)[0]
        if slot.isdigit() and slots(int(slot)):
            spools.setdefault(name, []).append(path)
    total = 0
    for name, paths in spools.items():
        held = _lock_spool(directory, name)
        if held is None:
            logger.info(
                "request log: the spool %s is in use by a running process; left alone", name
            )
            continue
        try:
            total += _replay(engine, directory, name, paths)
        finally:
            os.close(held)
    return total


def _replay(engine: Engine, directory: Path, name: str, paths: list[Path]) -> int:
    """Replay one spool whose lock this process holds; the number of entries written."""
    with engine.connect() as connection:
        done = connection.execute(sa.select(_MARKS.c.written).where(_MARKS.c.name == name)).scalar()
    try:
        entries, last = _read(paths, done or 0)
        if entries:
            store.insert_entries(engine, entries, also=functools.partial(_mark, name, last))
    except Exception:
        # Kept for the next start; this one serves meanwhile.
        logger.exception("request log: cannot replay the spool %s; kept", name)
        return 0
    if entries:
        logger.info("request log: replayed %d entries from the spool %s", len(entries), name)
    for path in paths:
        _unlink(path)
    _unlink(_lock_path(directory, name))
    with engine.begin() as connection:
        connection.execute(sa.delete(_MARKS).where(_MARKS.c.name == name))
    return len(entries)


def _lock_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.lock"


def _lock_spool(directory: Path, name: str) -> int | None:
    """An open descriptor holding the spool's exclusive flock; None when another process
    holds it (the spool is live)."""
    fd = os.open(_lock_path(directory, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _read(paths: list[Path], done: int) -> tuple[list[RequestLogEntry], int]:
    """The entries after sequence number `done`, and the last sequence number seen."""
    entries: list[RequestLogEntry] = []
    last = done
    for path in paths:
        for number, fields, values in _records(path):
            if number <= done:
                continue
            known = dict(zip(fields, values, strict=False))
            entries.append(RequestLogEntry(*(_parse(f, known.get(f)) for f in _FIELDS)))
            last = max(last, number)
    return entries, last


def _records(path: Path) -> Iterator[tuple[int, list[str], list[Any]]]:
    with path.open("rb") as file:
        fields: list[str] = json.loads(file.readline())["fields"]
        for line in file:
            if not line.endswith(b"\n"):
                return  # cut short by the kill: that call never answered
            try:
                number, *values = json.loads(line)
            except ValueError:
                # Torn by a full disk (append() said so then): skipped, not fatal to a start.
                logger.warning("request log spool %s: skipping an unreadable entry", path)
                continue
            yield number, fields, values


def _plain(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return value.hex
    raise TypeError(f"cannot spool {type(value).__name__}")


def _parse(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field == "time":
        return dt.datetime.fromisoformat(value)
    if field == "user_id":
        return uuid.UUID(value)
    return value


def _mark(name: str, value: int, connection: Connection) -> None:
    _set_mark(connection, name, value)


def _set_mark(connection: Connection, name: str, value: int) -> None:
    updated = connection.execute(
        sa.update(_MARKS).where(_MARKS.c.name == name).values(written=value)
    ).rowcount
    if not updated:
        connection.execute(sa.insert(_MARKS).values(name=name, written=value))


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
