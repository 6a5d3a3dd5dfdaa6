"""One SELECT on the driver's own cursor: how ListMembers and ListOrganizations read a page.

Through SQLAlchemy's Connection, the page's statement cost far more than the statement itself.
In process on 2026-12-07 (BENCHMARKS.md, "List pages on the driver's cursor"), a 50-member
page's statement took 200 to 212 us on SQLite and 264 to 375 us on PostgreSQL through a
Connection, 138 to 143 and 190 to 204 us on the DBAPI cursor; the whole ListMembers call
(chain, servicer, statement) went from 375 to 282 us on SQLite and from 394 to 282 us on
PostgreSQL. The difference is the Connection object and its events, a BEGIN and ROLLBACK
around the statement on SQLite, switching the pooled PostgreSQL connection to autocommit and
back, and the result's Row objects.

What does not change:
- The statement is a Core statement, compiled by SQLAlchemy once per dialect, and its
  parameters go through the columns' bind processors, as a Connection sends them.
- The connection comes from the engine's pool, so PostgreSQL's checks when one is handed out
  (session.py) apply.
- A driver error comes out as SQLAlchemy's DBAPIError, raised from the driver's, and a lost
  connection is invalidated: the error mapping (db/availability.py) sees what it sees from a
  Connection.
- No transaction is left open: SQLite's connections are in the driver's autocommit mode
  (session.py), and a PostgreSQL connection is in autocommit for the statement, so one
  statement is its own transaction, as on the `statements` engine.
- With tracing on (statement hooks on the engine, tracing.py), the statement runs on a
  Connection instead, which gives it its span.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

from sqlalchemy import Dialect, Engine, exc
from sqlalchemy.sql import Select
from sqlalchemy.sql.compiler import SQLCompiler


@dataclasses.dataclass(frozen=True)
class _Compiled:
    # Positional paramstyle (SQLite's "?"): the parameter names in order. Named: None.
    order: tuple[str, ...] | None
    processors: Mapping[str, Callable[[Any], Any]]  # parameter name -> bind processor
    # Each column's result processor (None: the driver's value is the value), or None when
    # no column has one.
    results: tuple[Callable[[Any], Any] | None, ...] | None
    compiled: SQLCompiler


class Read:
    """A SELECT run on a pooled DBAPI connection."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        # Per dialect class and paramstyle, which is all the SQL text depends on here.
        self._compiled: dict[tuple[type[Dialect], str], _Compiled] = {}

    def all(self, engine: Engine, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The statement's rows for `params` (its bind parameters by name)."""
        if engine.dispatch.before_cursor_execute:  # tracing on: a Connection gives the span
            with engine.connect() as connection:
                return [tuple(row) for row in connection.execute(self.statement, params)]
        compiled = self._for(engine.dialect)
        values = compiled.compiled.construct_params(params)
        for name, processor in compiled.processors.items():
            if values[name] is not None:
                values[name] = processor(values[name])
        arguments: Any = (
            values if compiled.order is None else tuple(values[name] for name in compiled.order)
        )
        rows = _fetch_all(engine, compiled.compiled.string, arguments)
        if compiled.results is None:
            return rows
        results = compiled.results
        return [
            tuple(
                value if process is None or value is None else process(value)
                for process, value in zip(results, row, strict=True)
            )
            for row in rows
        ]

    def _for(self, dialect: Dialect) -> _Compiled:
        key = (type(dialect), dialect.paramstyle)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _compile(self.statement, dialect)
        return compiled


def _compile(statement: Select[Any], dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    processors = {}
    for name, bind in compiled.binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors[name] = processor
    results = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in statement.selected_columns
    )
    order = tuple(compiled.positiontup or ()) if dialect.positional else None
    return _Compiled(order, processors, results if any(results) else None, compiled)


def _fetch_all(engine: Engine, sql: str, arguments: Any) -> list[tuple[Any, ...]]:
    dbapi_error = engine.dialect.loaded_dbapi.Error
    postgresql = engine.dialect.name == "postgresql"
    try:
        connection = engine.raw_connection()
    except dbapi_error as error:  # no connection to be had: as Connection reports it
        raise _wrapped(
            engine, error, None, engine.dialect.is_disconnect(error, None, None)
        ) from error
    cursor = None
    lost = False
    try:
        if postgresql:  # psycopg: no BEGIN before the statement, no ROLLBACK after it
            connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        cursor = connection.cursor()
        cursor.execute(sql, arguments)
        rows = cast(list[tuple[Any, ...]], cursor.fetchall())
        cursor.close()
        return rows
    except dbapi_error as error:
        lost = engine.dialect.is_disconnect(error, connection.dbapi_connection, cursor)
        if lost:
            connection.invalidate(error)
        raise _wrapped(engine, error, sql, lost) from error
    finally:
        if postgresql and not lost:
            try:  # as the pool's other users expect it
                connection.dbapi_connection.autocommit = False  # type: ignore[union-attr]
            except dbapi_error as error:
                connection.invalidate(error)
        connection.close()  # back to the pool, or closed when invalidated


def _wrapped(engine: Engine, error: Exception, sql: str | None, lost: bool) -> exc.StatementError:
    """`error` (the driver's) as SQLAlchemy's DBAPIError subclass for it, without parameters."""
    return exc.DBAPIError.instance(
        sql,
        None,
        error,
        engine.dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=lost,
        dialect=engine.dialect,
    )
