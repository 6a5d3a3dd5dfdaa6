"""Alembic environment. The server and the tests pass a live connection in
`config.attributes["connection"]`; the `alembic` command line uses DATABASE_URL instead."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from luman.server.db import models
from luman.server.db.base import Base


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations stay self-contained: UtcDateTime is plain DateTime(timezone=True) in the schema.
    if type_ == "type" and isinstance(obj, models.UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite can only ALTER through table copies
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from luman.server.config import Settings
    from luman.server.db.migrate import migration_connection
    from luman.server.db.session import make_engine

    engine = make_engine(Settings.from_env().database_url, pool_size=1)
    # SQLite: foreign keys off while tables are rebuilt (see migration_connection).
    with migration_connection(engine) as conn:
        _run(conn)
    engine.dispose()


run_migrations_online()
