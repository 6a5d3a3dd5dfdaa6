"""Engine and session factories.

SQLite is the embedded default: WAL so readers never wait for the writer, a busy timeout so
writers queue instead of failing, foreign keys on, and `BEGIN IMMEDIATE` for write sessions so
that a transaction that reads and then writes cannot deadlock against another one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 10_000


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 16) -> Engine:
    """Create the engine for `url` (sqlite:///… or postgresql+psycopg://…).

    SQL parameters are never rendered into exception text (hide_parameters): a failed insert
    must not put an email or a password hash into a log line or an error message.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so that "begin" below decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@dataclasses.dataclass(frozen=True)
class Sessions:
    """Session factories: `read()` for queries, `write()` for transactions that change data."""

    read: sessionmaker[Session]
    write: sessionmaker[Session]
    engine: Engine


def make_sessions(engine: Engine) -> Sessions:
    # expire_on_commit=False: services return ORM objects that convert reads after commit.
    read = sessionmaker(bind=engine, expire_on_commit=False)
    write = sessionmaker(
        bind=engine.execution_options(sqlite_immediate=True), expire_on_commit=False
    )
    return Sessions(read=read, write=write, engine=engine)
