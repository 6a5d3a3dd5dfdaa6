"""Throwaway databases for one benchmark run: a SQLite file in the work directory, or a fresh
schema on PostgreSQL that is dropped afterwards. Both are migrated with the product's Alembic
migrations before the server starts."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from luman.server.db import migrate
from luman.server.db.session import make_engine

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REQUEST_LOGS = "request_logs"
LOGIN_SESSIONS = "login_sessions"
USERS = "users"


class DatabaseUnavailableError(Exception):
    """The backend cannot be used here (PostgreSQL unreachable); the message says why."""


@dataclasses.dataclass
class BenchDatabase:
    backend: str  # "sqlite" | "postgresql"
    url: str
    engine: sa.Engine

    @property
    def label(self) -> str:
        return "SQLite" if self.backend == "sqlite" else "PostgreSQL"

    def server_version(self) -> str:
        with self.engine.connect() as conn:
            if self.backend == "postgresql":
                return f"PostgreSQL {conn.exec_driver_sql('SHOW server_version').scalar_one()}"
            return f"SQLite {conn.exec_driver_sql('SELECT sqlite_version()').scalar_one()}"

    def has_table(self, table: str) -> bool:
        return sa.inspect(self.engine).has_table(table)

    def count_rows(self, table: str, where: str = "") -> int | None:
        """Rows in `table` (None when it does not exist). `where` is SQL written here."""
        if not self.has_table(table):
            return None
        with self.engine.connect() as conn:
            sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")  # noqa: S608
            return int(conn.exec_driver_sql(sql).scalar_one())

    def count_by(self, table: str, column: str) -> dict[str, int] | None:
        """Rows per value of `column` (None when the table does not exist)."""
        if not self.has_table(table):
            return None
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT {column}, count(*) FROM {table} GROUP BY {column}"  # noqa: S608
            ).all()
        return {str(value): int(count) for value, count in rows}

    def table_bytes(self, table: str) -> int | None:
        """Bytes `table` and its indexes occupy (None when it does not exist or cannot be told).

        PostgreSQL: pg_total_relation_size. SQLite: the pages of the table and its indexes, from
        the dbstat virtual table (which reads through the WAL), when SQLite was built with it.
        """
        if not self.has_table(table):
            return None
        with self.engine.connect() as conn:
            if self.backend == "postgresql":
                value = conn.exec_driver_sql(
                    "SELECT pg_total_relation_size(%(t)s::regclass)", {"t": table}
                ).scalar_one()
                return int(value)
            try:
                value = conn.exec_driver_sql(
                    "SELECT sum(pgsize) FROM dbstat WHERE name IN "
                    "(SELECT name FROM sqlite_master WHERE tbl_name = ?)",
                    (table,),
                ).scalar_one()
            except sa.exc.OperationalError:  # no dbstat in this SQLite build
                return None
            return int(value or 0)


@contextlib.contextmanager
def sqlite_database(directory: Path) -> Iterator[BenchDatabase]:
    path = directory / "luman-bench.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url, pool_size=1)
    try:
        migrate.upgrade(engine)
        yield BenchDatabase("sqlite", url, engine)
    finally:
        engine.dispose()


@contextlib.contextmanager
def postgres_database(base_url: str) -> Iterator[BenchDatabase]:
    """A migrated schema of its own on `base_url`, dropped when the block ends.

    Raises:
        DatabaseUnavailableError: PostgreSQL does not answer.
    """
    schema = f"luman_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(base_url, pool_size=1)
    try:
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        except sa.exc.OperationalError as exc:
            where = sa.engine.make_url(base_url).render_as_string()
            raise DatabaseUnavailableError(
                f"PostgreSQL unreachable at {where}: {exc.orig}"
            ) from None
        url = (
            sa.engine.make_url(base_url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        engine = make_engine(url, pool_size=1)
        try:
            migrate.upgrade(engine)
            yield BenchDatabase("postgresql", url, engine)
        finally:
            engine.dispose()
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()
