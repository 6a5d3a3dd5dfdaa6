"""`luman-server backup PATH` (server/luman/server/backup.py): a consistent copy of the embedded
SQLite database while the server is serving and writing, and the cases it refuses."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select, text

from luman.auth.v1 import auth_service_pb2_grpc
from luman.server.app import App
from luman.server.db.models import User
from luman.server.db.session import make_engine
from tests.serve_process import serve_env
from tests.support import register, unique_email

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _backup(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`luman-server backup ARGS…` with DATABASE_URL, run in `tmp_path` (no stray .env)."""
    return subprocess.run(
        [sys.executable, "-m", "luman.server", "backup", *args],
        env=serve_env(tmp_path, database_url, 0),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _emails(path: Path) -> set[str]:
    engine = make_engine(f"sqlite:///{path}", pool_size=1)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
            return set(conn.execute(select(User.email)).scalars())
    finally:
        engine.dispose()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".tmp", "-journal")))


@SQLITE_ONLY
def test_backup_while_serving_holds_every_committed_user(
    app: App, database_url: str, tmp_path: Path
) -> None:
    before = set()
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        for _ in range(5):
            before.add(register(auth, email=unique_email("before")).user.email)
        # The server goes on writing (sign-ups, their request-log rows and mail) through the
        # backup.
        stop = threading.Event()
        during: list[str] = []

        def keep_registering() -> None:
            while not stop.is_set():
                during.append(register(auth, email=unique_email("during")).user.email)

        writer = threading.Thread(target=keep_registering)
        writer.start()
        try:
            while len(during) < 3:  # the writer is under way before the copy starts
                time.sleep(0.01)
            target = tmp_path / "backups" / "luman-backup.db"
            target.parent.mkdir()
            done = _backup(tmp_path, database_url, str(target))
        finally:
            stop.set()
            writer.join()
    assert done.returncode == 0, done.stderr
    assert "luman-backup.db" in done.stdout

    copied = _emails(target)
    assert before <= copied
    # A snapshot: the sign-ups in it are a prefix of those made during the copy.
    later = [email for email in during if email in copied]
    assert later == during[: len(later)]
    assert len(later) >= 3
    # One self-contained file, readable by its owner only (it holds password hashes).
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not Path(f"{target}-wal").exists()
    assert _leftovers(target.parent) == []
    # And the live database is unharmed: everything the server committed is there.
    live = make_engine(database_url, pool_size=1)
    try:
        with live.connect() as conn:
            assert conn.execute(select(func.count()).select_from(User)).scalar_one() == len(
                before
            ) + len(during)
    finally:
        live.dispose()


@SQLITE_ONLY
def test_backup_refuses_an_existing_path_unless_forced(
    app: App, database_url: str, tmp_path: Path
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        email = register(auth_service_pb2_grpc.AuthServiceStub(channel)).user.email
    target = tmp_path / "existing.db"
    target.write_bytes(b"keep me")

    refused = _backup(tmp_path, database_url, str(target))
    assert refused.returncode == 1
    assert "exists" in refused.stderr
    assert "--force" in refused.stderr
    assert target.read_bytes() == b"keep me"
    assert _leftovers(tmp_path) == []

    forced = _backup(tmp_path, database_url, str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert email in _emails(target)


@SQLITE_ONLY
def test_backup_refuses_the_database_itself_even_forced(database_url: str, tmp_path: Path) -> None:
    database = Path(database_url.removeprefix("sqlite:///"))
    size = database.stat().st_size
    for args in ((str(database),), (str(database), "--force")):
        refused = _backup(tmp_path, database_url, *args)
        assert refused.returncode == 1
        assert "the database itself" in refused.stderr
    assert database.stat().st_size == size


def test_backup_of_a_missing_database_fails(tmp_path: Path) -> None:
    refused = _backup(tmp_path, f"sqlite:///{tmp_path / 'nothing.db'}", str(tmp_path / "b.db"))
    assert refused.returncode == 1
    assert "no database" in refused.stderr
    assert not (tmp_path / "nothing.db").exists()
    assert not (tmp_path / "b.db").exists()


def test_backup_of_postgresql_says_pg_dump(tmp_path: Path) -> None:
    # No connection is made: the URL alone says it is not SQLite.
    refused = _backup(
        tmp_path, "postgresql+psycopg://luman@127.0.0.1:1/luman", str(tmp_path / "b.db")
    )
    assert refused.returncode == 2
    assert "pg_dump" in refused.stderr
    assert not (tmp_path / "b.db").exists()
    assert _leftovers(tmp_path) == []
