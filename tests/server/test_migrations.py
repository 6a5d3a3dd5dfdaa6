"""Migrations keep every row: up from the first revision to head one step at a time, down to
base one step at a time, and up again, on SQLite and PostgreSQL, with rows in every table.

The walk follows Alembic's script directory, so a new revision is covered as soon as it
exists. Each table is seeded the first time it appears, by inserts built from the schema
reflected at that revision (rows that point at each other through their foreign keys), so the
seed works whatever the revision; a table that points at itself (cli_tokens.parent_id, from
0008) gets one more row pointing at another as soon as the column exists. After each step
every table that still exists must hold exactly the rows it held, value for value in every
column the step kept: a copy that drops, nulls or mangles a column fails as surely as one
that loses rows. A table the step removes loses them by design.

SQLite rebuilds a table to alter it (copy, DROP, rename): with foreign keys on, the DROP ran
the ON DELETE CASCADE of every table pointing at it, and 0004 -> 0005 emptied refresh_tokens,
0005 -> 0004 login_sessions, cli_tokens and memberships.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from luman.server.db import migrate
from luman.server.db.session import make_engine
from tests.conftest import BACKENDS, DEFAULT_PG_URL, _in_ci

ROWS_PER_TABLE = 3


@pytest.fixture(params=BACKENDS)
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no revision applied) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    base_url = os.environ.get("LUMAN_TEST_DATABASE_URL", DEFAULT_PG_URL)
    schema = f"luman_migrations_{uuid.uuid4().hex[:8]}"
    admin = make_engine(base_url, pool_size=1)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        message = f"PostgreSQL unreachable: {exc.orig}"
        if _in_ci():
            pytest.fail(f"{message} (CI=true requires PostgreSQL)")
        pytest.skip(message)
    url = sa.engine.make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def engine(blank_url: str) -> Iterator[sa.Engine]:
    # The server's own engine configuration: on SQLite, foreign keys on.
    engine = make_engine(blank_url, pool_size=1)
    yield engine
    engine.dispose()


class _Seeder:
    """Rows for any table, built from its reflected columns; the values are unique per row so
    that unique constraints hold, and foreign keys copy the referenced rows' values."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)

    def seed(self, engine: sa.Engine) -> None:
        """Rows in every empty table (those the last step created), then a child in every
        table that points at itself and has none yet."""
        metadata = sa.MetaData()
        metadata.reflect(bind=engine)
        with engine.begin() as conn:
            for table in metadata.sorted_tables:
                if table.name == "alembic_version":
                    continue
                if conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0:
                    rows = [self._row(conn, table, i) for i in range(ROWS_PER_TABLE)]
                    conn.execute(table.insert(), rows)
                for column in _self_references(table):
                    if conn.execute(
                        sa.select(sa.func.count()).where(column.is_not(None))
                    ).scalar_one():
                        continue
                    (foreign,) = column.foreign_keys
                    parent = conn.execute(
                        sa.select(foreign.column).order_by(*table.primary_key.columns).limit(1)
                    ).scalar_one()
                    child = self._row(conn, table, 0)
                    child[column.name] = parent
                    conn.execute(table.insert(), [child])

    def _row(self, conn: sa.Connection, table: sa.Table, i: int) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for column in table.columns:
            foreign = next(iter(column.foreign_keys), None)
            if foreign is not None and foreign.column.table is table and column.nullable:
                row[column.name] = None  # a row pointing at its own table: nothing to point at
            elif foreign is not None:
                target = foreign.column
                values = conn.execute(
                    sa.select(target).order_by(*target.table.primary_key.columns)
                ).scalars()
                row[column.name] = list(values)[i]
            else:
                row[column.name] = self._value(column.type)
        return row

    def _value(self, type_: sa.types.TypeEngine[Any]) -> Any:
        if isinstance(type_, sa.Uuid):
            return uuid.uuid4()
        if isinstance(type_, sa.DateTime):
            return dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        if isinstance(type_, sa.Boolean):
            return False
        if isinstance(type_, sa.Integer):
            return next(self._numbers)
        if isinstance(type_, sa.Float | sa.Numeric):
            return 1.0
        if isinstance(type_, sa.LargeBinary | sa.types._Binary):
            return uuid.uuid4().bytes
        if isinstance(type_, sa.String):
            # On SQLite a Uuid column reflects as CHAR(32), and a hex UUID is what it holds.
            text = uuid.uuid4().hex
            return text[: type_.length] if type_.length else text
        raise AssertionError(f"no seed value for column type {type_!r}")


def _self_references(table: sa.Table) -> list[sa.Column[Any]]:
    return [
        column
        for column in table.columns
        if column.nullable and any(fk.column.table is table for fk in column.foreign_keys)
    ]


@dataclasses.dataclass(frozen=True)
class _Contents:
    """One table's rows as stored (the driver's raw values, so that a rebuild's copy is compared
    with what it copied, not with what a reflected type makes of it)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def on(self, columns: list[str]) -> collections.Counter[tuple[Any, ...]]:
        """The rows, as a multiset, keeping only `columns`."""
        at = [self.columns.index(name) for name in columns]
        return collections.Counter(tuple(row[i] for i in at) for row in self.rows)


def _contents(engine: sa.Engine) -> dict[str, _Contents]:
    names = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    contents = {}
    with engine.connect() as conn:
        for name in sorted(names):
            # The names come from the inspector, not from input.
            result = conn.exec_driver_sql(f'SELECT * FROM "{name}"')  # noqa: S608
            contents[name] = _Contents(tuple(result.keys()), [tuple(row) for row in result])
    return contents


def _check_kept(engine: sa.Engine, before: dict[str, _Contents], step: str) -> None:
    """Every table that still exists holds the rows it held, with the same values in every
    column it still has; a table the step removed lost them by design."""
    after = _contents(engine)
    for name, held in before.items():
        if name not in after:
            continue
        now = after[name]
        assert len(now.rows) == len(held.rows), f"{name}: rows lost by {step}"
        common = [column for column in held.columns if column in now.columns]
        assert now.on(common) == held.on(common), f"{name}: values changed by {step}"


def test_every_step_keeps_every_row(engine: sa.Engine) -> None:
    revisions = migrate.revisions()
    assert len(revisions) >= 2
    seeder = _Seeder()
    migrate.upgrade(engine, revisions[0])
    seeder.seed(engine)
    held = _contents(engine)
    assert {"users", "login_sessions", "refresh_tokens", "memberships"} <= held.keys()

    previous = revisions[0]
    for revision in revisions[1:]:
        migrate.upgrade(engine, revision)
        _check_kept(engine, held, f"upgrade {previous} -> {revision}")
        seeder.seed(engine)
        held = _contents(engine)
        previous = revision
    assert migrate.pending(engine) == (revisions[-1], revisions[-1])
    # A token with a real parent went through the walk up, and goes down and up again.
    assert any(
        row[held["cli_tokens"].columns.index("parent_id")] for row in held["cli_tokens"].rows
    )

    for target in [*reversed(revisions[:-1]), "base"]:
        migrate.downgrade(engine, target)
        _check_kept(engine, held, f"downgrade {previous} -> {target}")
        held = _contents(engine)
        previous = target
    assert held == {}  # base: every table gone
    assert migrate.pending(engine)[0] is None

    for revision in revisions:
        migrate.upgrade(engine, revision)
        _check_kept(engine, held, f"upgrade {previous} -> {revision}")
        seeder.seed(engine)
        held = _contents(engine)
        previous = revision
    assert all(contents.rows for contents in held.values())  # every table of head has rows


@pytest.mark.parametrize("blank_url", ["sqlite"], indirect=True)
def test_sqlite_foreign_keys_are_back_on_after_a_migration(engine: sa.Engine) -> None:
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1


@pytest.mark.parametrize("blank_url", ["sqlite"], indirect=True)
def test_sqlite_migration_with_dangling_rows_fails_and_changes_nothing(
    engine: sa.Engine,
) -> None:
    revisions = migrate.revisions()
    migrate.upgrade(engine, revisions[0])
    # A row whose user does not exist, as foreign keys off would let one in.
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("PRAGMA foreign_keys=OFF")
        driver.execute(
            "INSERT INTO login_sessions (id, user_id, create_time) "
            "VALUES (?, ?, '2026-01-01 00:00:00')",
            (uuid.uuid4().hex, uuid.uuid4().hex),
        )
        driver.execute("PRAGMA foreign_keys=ON")

    with pytest.raises(migrate.MigrationError, match="login_sessions"):
        migrate.upgrade(engine)

    assert migrate.pending(engine)[0] == revisions[0]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
