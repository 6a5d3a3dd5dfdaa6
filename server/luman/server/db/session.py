"""Engine and session factories.

SQLite is the embedded default: WAL so readers never wait for the writer, a busy timeout so
writers queue instead of failing, foreign keys on, and `BEGIN IMMEDIATE` for write sessions so
that a transaction that reads and then writes cannot deadlock against another one.

PostgreSQL: a connection taken from the pool is checked first (a restarted server's dead
connections are replaced, not handed to a call: see `_hand_out_live_connections`), sessions
run in UTC, and a connection attempt gives up after CONNECT_TIMEOUT_SECONDS: psycopg's own
default is 130 s, which is how long every call would hang on a database host that drops
packets. A `connect_timeout` in DATABASE_URL wins."""

from __future__ import annotations

import dataclasses
import select
import time
from pathlib import Path
from typing import Any

from psycopg import pq
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_SECONDS = 5  # libpq's unit is whole seconds, 2 at least
# A pooled PostgreSQL connection idle longer than this is pinged before use (see
# _hand_out_live_connections); one in steady use is only checked for a hang-up.
PING_AFTER_IDLE_SECONDS = 10.0


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(
    url: str,
    *,
    pool_size: int = 16,
    connect_timeout: int = CONNECT_TIMEOUT_SECONDS,
    busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
) -> Engine:
    """Create the engine for `url` (sqlite:///… or postgresql+psycopg://…).

    SQL parameters are never rendered into exception text (hide_parameters): a failed insert
    must not put an email or a password hash into a log line or an error message.

    Args:
        url: the database URL.
        pool_size: connections kept open (as many more may be opened under load).
        connect_timeout: PostgreSQL: seconds a connection attempt may take, unless the URL
            says otherwise.
        busy_timeout_ms: SQLite: how long a writer waits for another one's lock before
            "database is locked".
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = connect_timeout
    engine = create_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args=connect_args,
    )
    _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # psycopg hands back timestamptz values in the session's time zone. In UTC they arrive
        # as datetime.timezone.utc, which UtcDateTime passes through untouched; in the server's
        # default "Etc/UTC" each one took an astimezone() (50 rows: 15 µs per ListMembers).
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        dbapi_connection.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.autocommit = autocommit

    _hand_out_live_connections(engine)


def _hand_out_live_connections(engine: Engine) -> None:
    """Never hand a call a pooled connection whose server has hung up.

    A PostgreSQL server that restarts or ends a backend tells the client: it sends a
    termination message and closes the socket. An idle connection that has anything to read
    has therefore been hung up on (or got a notice, which is read and kept). So the check at
    checkout is a poll of the socket, about a microsecond, where pool_pre_ping's SELECT 1 was a
    round trip on every checkout: 18 % of a ListMembers call's CPU on PostgreSQL, where calls
    check out a connection each. A connection that sat idle long enough for a peer to vanish
    without a word (a host gone, a NAT entry dropped) is pinged as before.

    Raising DisconnectionError makes the pool discard the connection and take another.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if dbapi_connection.closed or dbapi_connection.broken:
            raise exc.DisconnectionError("connection closed")
        idle_since = record.info.get("idle_since")
        if idle_since is None:
            return  # just opened
        if time.monotonic() - idle_since > PING_AFTER_IDLE_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as error:
                raise exc.DisconnectionError("ping failed") from error
            return
        pgconn = dbapi_connection.pgconn
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
        if not poller.poll(0):
            return
        try:
            pgconn.consume_input()  # raises once the server has closed the connection
        except Exception as error:
            raise exc.DisconnectionError("server closed the connection") from error
        if (
            pgconn.status != pq.ConnStatus.OK
            or pgconn.transaction_status != pq.TransactionStatus.IDLE
        ):
            raise exc.DisconnectionError("server ended the session")


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so that "begin" below decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@dataclasses.dataclass(frozen=True)
class Sessions:
    """Session factories: `read()` for queries, `write()` for transactions that change data.

    `statements` is for reads that are each a single statement, which need no transaction
    around them: on PostgreSQL its connections are in autocommit mode.
    """

    read: sessionmaker[Session]
    write: sessionmaker[Session]
    engine: Engine
    statements: Engine


def make_sessions(engine: Engine) -> Sessions:
    # expire_on_commit=False: services return ORM objects that convert reads after commit.
    read = sessionmaker(bind=engine, expire_on_commit=False)
    write = sessionmaker(
        bind=engine.execution_options(sqlite_immediate=True), expire_on_commit=False
    )
    # PostgreSQL: a transaction around one statement costs a BEGIN and a ROLLBACK, two of the
    # four round trips of a ListMembers call. Without them the call takes 9 % less CPU in the
    # process (median of 8 runs, 1236 to 1127 µs) although switching a pooled connection to
    # autocommit and back costs 0.21M instructions. SQLite's BEGIN is no round trip, and there
    # reads keep the engine.
    statements = (
        engine
        if engine.dialect.name == "sqlite"
        else engine.execution_options(isolation_level="AUTOCOMMIT")
    )
    return Sessions(read=read, write=write, engine=engine, statements=statements)
