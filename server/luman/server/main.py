"""`luman-server`: serve, migrate, and operator commands."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

import click

from luman.server.app import BindError, build_server
from luman.server.config import ConfigError, Settings
from luman.server.db import migrate as migrations
from luman.server.db.session import make_engine, make_sessions

logger = logging.getLogger("luman.server")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Luman identity service.

    Configured by environment variables (and ./.env); see .env.example.
    """


@cli.command()
def serve() -> None:
    """Serve gRPC on HOST:PORT until SIGTERM or SIGINT.

    With DATABASE_URL unset, the embedded SQLite database under LUMAN_DATA_DIR is created and
    migrated automatically. With DATABASE_URL set, a database whose schema is behind is
    refused: run `luman-server migrate` first.
    """
    settings = _settings()
    _configure_logging(settings.log_level)
    engine = make_engine(settings.database_url, pool_size=settings.max_workers)
    try:
        current, head = migrations.pending(engine)
        if current != head:
            if settings.embedded_database:
                logger.info("migrating the embedded database to %s", head)
                migrations.upgrade(engine)
            else:
                raise click.ClickException(
                    f"database schema is at {current or 'nothing'}, this server needs {head}: "
                    "run `luman-server migrate` (or `make migrate`)"
                )
        try:
            app = build_server(settings, make_sessions(engine))
        except BindError as exc:
            raise click.ClickException(str(exc)) from None
        stop = threading.Event()

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            logger.info("received %s: shutting down", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        app.start()
        logger.info(
            "serving gRPC on %s:%d (database: %s)",
            settings.host,
            app.port,
            engine.url.render_as_string(hide_password=True),
        )
        stop.wait()
        app.stop(settings.shutdown_grace_seconds)
        logger.info("stopped")
    finally:
        engine.dispose()


@cli.command()
def migrate() -> None:
    """Apply pending schema migrations to DATABASE_URL (or the embedded database)."""
    settings = _settings()
    _configure_logging(settings.log_level)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        migrations.upgrade(engine)
        current, _ = migrations.pending(engine)
        click.echo(f"database is at revision {current}")
    finally:
        engine.dispose()


@cli.command()
@click.argument("message")
def makemigration(message: str) -> None:
    """Autogenerate a migration from the models (for developers)."""
    settings = _settings()
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        migrations.revision_autogenerate(engine, message)
    finally:
        engine.dispose()


def main() -> None:
    cli(prog_name="luman-server")
