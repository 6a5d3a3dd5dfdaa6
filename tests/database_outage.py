"""A database outage a test can start and end, on either backend, without stopping anything.

- PostgreSQL: the engine connects through a loopback TcpProxy (tests/tcp_proxy.py). `cut()`
  closes every connection, as a restarting server does, and refuses (or blackholes) new ones.
  The shared PostgreSQL server is never stopped: other tests are using it.
- SQLite is a file in the process, so it cannot go away over a network. Its equivalent is the
  file locked by another process: `cut()` holds the write lock (BEGIN IMMEDIATE) on a
  connection of its own, and every write waits out the engine's busy timeout (short here) and
  fails with "database is locked". Reads go on (WAL), as they do in production.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa

from luman.server.db.session import Sessions, is_sqlite, make_engine, make_sessions
from tests.tcp_proxy import CutMode, TcpProxy

SQLITE_BUSY_TIMEOUT_MS = 100  # how long a write waits for the lock before it fails
PG_CONNECT_TIMEOUT = 2  # seconds: libpq's least, so a blackholed connect fails quickly


class DatabaseOutage:
    """An engine (and sessions) on `database_url` whose database the test can take away.

    Args:
        database_url: a migrated test database (the `database_url` fixture).
        pool_size: the engine's pool size.
    """

    def __init__(self, database_url: str, *, pool_size: int = 8) -> None:
        self.sqlite = is_sqlite(database_url)
        self._proxy: TcpProxy | None = None
        self._lock_holder: sqlite3.Connection | None = None
        url = sa.engine.make_url(database_url)
        if self.sqlite:
            self._path = url.database or ""
            engine = make_engine(
                database_url, pool_size=pool_size, busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS
            )
        else:
            self._proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
            proxied = url.set(host="127.0.0.1", port=self._proxy.port)
            engine = make_engine(
                proxied.render_as_string(hide_password=False),
                pool_size=pool_size,
                connect_timeout=PG_CONNECT_TIMEOUT,
            )
        self.engine = engine
        self.sessions: Sessions = make_sessions(engine)

    def cut(self, mode: CutMode = "refuse") -> None:
        """Take the database away (`mode` applies to PostgreSQL only)."""
        if self._proxy is not None:
            self._proxy.cut(mode)
            return
        holder = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        self._lock_holder = holder

    def restore(self) -> None:
        if self._proxy is not None:
            self._proxy.restore()
            return
        holder, self._lock_holder = self._lock_holder, None
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()

    def close(self) -> None:
        self.restore()
        self.engine.dispose()
        if self._proxy is not None:
            self._proxy.close()
