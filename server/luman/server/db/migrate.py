"""Schema migrations through Alembic, driven from code so `luman-server migrate` and the tests
use the same path, and start-up can refuse a database whose schema is behind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

SCRIPT_LOCATION = "luman.server.db:migrations"


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["engine"] = engine
    return config


class MigrationError(Exception):
    """A migration left rows whose foreign keys point nowhere; nothing was committed."""


@contextlib.contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction to run migrations in, committed when the block ends.

    SQLite: with foreign keys off, checked before the commit, and back on afterwards. Batch
    mode rebuilds a table (copy, DROP, rename), and with foreign keys on the DROP runs every
    ON DELETE CASCADE of the tables that point at it: a rebuild of `users` would empty
    `login_sessions`, `cli_tokens` and `memberships`. This is SQLite's documented procedure
    for schema changes (https://www.sqlite.org/lang_altertable.html, "Making Other Kinds Of
    Table Schema Changes"). The pragma is a no-op inside a transaction, so it goes to the
    driver's connection before the first BEGIN.

    Raises:
        MigrationError: SQLite's foreign_key_check found dangling rows (rolled back).
    """
    with engine.connect() as connection:
        if engine.dialect.name != "sqlite":
            with connection.begin():
                yield connection
            return
        driver = connection.connection.driver_connection
        if driver is None or driver.in_transaction:
            raise MigrationError("SQLite migrations need a connection outside a transaction")
        driver.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                yield connection
                dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if dangling:
                    # Raising here rolls the whole migration back.
                    tables = sorted({str(row[0]) for row in dangling})
                    raise MigrationError(
                        f"migration left {len(dangling)} rows with dangling foreign keys "
                        f"in {', '.join(tables)}; nothing was changed"
                    )
        finally:
            driver.execute("PRAGMA foreign_keys=ON")


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config()
    with migration_connection(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate down to `revision` ("base": an empty database)."""
    config = alembic_config()
    with migration_connection(engine) as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def revisions() -> list[str]:
    """Every revision in the script directory, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions("base", "heads")))]


def revision_autogenerate(engine: Engine, message: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)


def pending(engine: Engine) -> tuple[str | None, str | None]:
    """Return (current, head) revisions; they differ when migrations are pending."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head
