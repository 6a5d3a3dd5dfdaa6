"""`luman-server backup PATH`: a consistent copy of the embedded SQLite database, taken while
the server may be serving.

The copy is SQLite's online backup API (`sqlite3.Connection.backup`) in a single step, not
`VACUUM INTO`:
- In one step the backup reads the whole database in one read transaction: a snapshot of the
  last commit, and under WAL (db/session.py) the server's writers go on meanwhile. (Copied in
  several steps, a write by another connection would restart the copy, and a busy server could
  keep it from ever finishing.)
- It copies pages as they are, where `VACUUM INTO` rebuilds every table and index into a new
  file: more CPU and I/O on the host the server runs on, for a compaction a backup does not
  need. `VACUUM INTO` also leaves the new file unsynced; we fsync either way (below).

The copy is written to a temporary file next to PATH, switched to a rollback journal (one
self-contained file, readable from a read-only directory), checked with `PRAGMA quick_check`,
synced, and only then given its name: PATH is either absent, the old file, or the whole new
copy, never a partial one. An existing PATH is kept unless `force`.

The backup holds the data only: signing keys are stored encrypted with SIGNING_KEY_SECRET
(without it, the development secrets in LUMAN_DATA_DIR/dev-secrets.json), which a restore needs
as well.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from luman.server.db.session import SQLITE_BUSY_TIMEOUT_MS


class BackupError(Exception):
    """The backup was not made; the message says why. PATH is unchanged."""


class NotSQLiteError(BackupError):
    """The database is not SQLite: PostgreSQL has its own tools."""


def sqlite_path(database_url: str) -> Path:
    """The file of the SQLite database at `database_url`.

    Raises:
        NotSQLiteError: for PostgreSQL (or any other server).
        BackupError: for an in-memory database.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise NotSQLiteError(
            f"DATABASE_URL is {url.get_backend_name()}, not the embedded SQLite database: "
            "back it up with the database's own tools (PostgreSQL: pg_dump)"
        )
    if not url.database or url.database == ":memory:":
        raise BackupError("DATABASE_URL is an in-memory SQLite database: nothing to back up")
    return Path(url.database)


def backup(database_url: str, target: Path, *, force: bool = False) -> int:
    """Copy the SQLite database at `database_url` to `target`; returns the copy's size in bytes.

    Raises:
        NotSQLiteError: the database is not SQLite.
        BackupError: no database there, `target` exists (without `force`) or is the database
            itself, or the copy failed.
    """
    source = sqlite_path(database_url)
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    if target.exists() or target.is_symlink():
        if target.resolve() == source.resolve():
            raise BackupError(f"{target} is the database itself")
        if not force:
            raise BackupError(f"{target} exists: choose another path, or replace it with --force")
        if target.is_dir():
            raise BackupError(f"{target} is a directory")
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise BackupError(f"no directory {directory}")
    handle, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        _copy(source, tmp)
        _fsync(tmp)
        _install(tmp, target, force=force)
    except BaseException:
        for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise
    _fsync_directory(directory)
    return target.stat().st_size


def _copy(source: Path, tmp: Path) -> None:
    try:
        # Opened as the server opens it; the backup only reads (a shared lock), so a server
        # in the middle of a write makes it wait at most the busy timeout.
        src = sqlite3.connect(source, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)  # pages=-1: everything in one step, one snapshot
                # The copy carries the source's WAL flag; a backup is one file on its own.
                dst.execute("PRAGMA journal_mode=DELETE")
                (result,) = dst.execute("PRAGMA quick_check").fetchone()
                if result != "ok":
                    raise BackupError(f"the copy failed its check: {result}")
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {source}: {exc}") from exc


def _install(tmp: Path, target: Path, *, force: bool) -> None:
    if force:
        os.replace(tmp, target)
        return
    # A hard link fails if `target` has appeared since the check above: never overwritten.
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise BackupError(
            f"{target} exists: choose another path, or replace it with --force"
        ) from None
    except OSError:
        # A file system without hard links: the check above is the best there is.
        if target.exists():
            raise BackupError(
                f"{target} exists: choose another path, or replace it with --force"
            ) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable once the directory is on disk (POSIX); not every platform can.
    with contextlib.suppress(OSError):
        _fsync(directory)
