"""`luman-server`: serve, migrate, and operator commands."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from luman.server import backup as sqlite_backup
from luman.server import supervisor
from luman.server.app import BindError, build_server, wait_for_stop
from luman.server.auth.signing_keys import SigningKeyError
from luman.server.config import ConfigError, Settings
from luman.server.db import migrate as migrations
from luman.server.db.session import make_engine, make_sessions
from luman.server.gateway import build_gateway
from luman.server.keys_cli import keys
from luman.server.log_format import configure_logging, holding_records
from luman.server.request_logs import query as request_log_query
from luman.server.request_logs import spool
from luman.server.tls import TlsError

logger = logging.getLogger("luman.server")


def _settings() -> Settings:
    try:
        # What reading the settings logs is written once they say how (LOG_FORMAT).
        with holding_records():
            return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


def _configure_logging(settings: Settings) -> None:
    # LOG_FORMAT=json: one JSON object per line (log_format.py).
    configure_logging(settings.log_level, settings.log_format)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Luman identity service.

    Configured by environment variables (and ./.env); see .env.example.
    """


@cli.command()
@click.option(
    "--workers",
    default="1",
    show_default=True,
    metavar="N|auto",
    help="Worker processes serving the same ports (auto: one per CPU), restarted when they "
    "die. Threads and database pool (GRPC_MAX_WORKERS) are per worker; rate limits are shared "
    "(Redis, or a SQLite file in LUMAN_DATA_DIR).",
)
@click.option("--worker-slot", type=int, hidden=True)  # set by the supervisor only
@click.option("--worker-channel", type=int, hidden=True)
def serve(workers: str, worker_slot: int | None, worker_channel: int | None) -> None:
    """Serve gRPC on HOST:PORT and HTTP/JSON on HOST:HTTP_PORT until SIGTERM or SIGINT.

    With DATABASE_URL unset, the embedded SQLite database under LUMAN_DATA_DIR is created and
    migrated automatically. With DATABASE_URL set, a database whose schema is behind is
    refused: run `luman-server migrate` first.

    With --workers N (N > 1), this process supervises N workers on the same ports: SIGTERM
    drains them all, SIGHUP reaches each, a worker that dies is started again (logged).
    """
    try:
        count = supervisor.worker_count(workers)
    except ValueError:
        raise click.BadParameter("a positive number or 'auto'", param_hint="--workers") from None
    settings = _settings()
    channel = None
    if worker_slot is not None:
        settings = supervisor.worker_settings(settings, worker_slot)
        _name_the_worker(worker_slot)
    _configure_logging(settings)
    if worker_slot is not None and worker_channel is not None:
        channel = supervisor.watch_supervisor(worker_channel, worker_slot)
    # SIGHUP (`systemctl reload`) only asks for a reload, from the start: its default action
    # would end the process without draining, and systemd would not restart it.
    hangup = threading.Event()
    signal.signal(signal.SIGHUP, lambda _signum, _frame: hangup.set())
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
        if count > 1 and worker_slot is None:
            engine.dispose()
            try:
                sys.exit(supervisor.Supervisor(settings, count, hangup).run())
            except supervisor.SupervisorError as exc:
                raise click.ClickException(str(exc)) from None
        # What killed workers left unwritten (request_logs/spool.py); the worker in each slot
        # takes its own slot's, a single serve or worker 0 those of slots nobody runs now.
        spool.recover(engine, settings.data_dir, spool.slots_to_recover(worker_slot, count))
        sessions = make_sessions(engine)
        try:
            app = build_server(settings, sessions)
            gateway = build_gateway(settings, sessions, app)
        except (BindError, SigningKeyError, TlsError) as exc:
            raise click.ClickException(str(exc)) from None
        stop = threading.Event()

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            logger.info("received %s: shutting down", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)

        def _reload_if_asked() -> None:
            if not hangup.is_set():
                return
            hangup.clear()
            if app.tls is None:
                logger.info("received SIGHUP: nothing to reload (no TLS_CERT_FILE)")
                return
            # Both ports, from the next handshake on; a failure keeps the old files (logged).
            logger.info("received SIGHUP: reloading the TLS certificates")
            app.tls.reload()

        app.start()
        logger.info(
            "serving gRPC%s on %s:%d (database: %s)",
            " over TLS" if app.tls is not None else "",
            settings.host,
            app.port,
            engine.url.render_as_string(hide_password=True),
        )
        if app.mtls_port is not None:
            logger.info(
                "serving gRPC for client certificates (MTLS_PORT) on %s:%d",
                settings.host,
                app.mtls_port,
            )
        gateway.start()
        logger.info(
            "serving HTTP/JSON%s on %s:%d",
            " over TLS" if app.tls is not None else "",
            settings.host,
            gateway.port,
        )
        if channel is not None:
            supervisor.tell_ready(channel)
        wait_for_stop(stop, _reload_if_asked)
        # HTTP first: its requests in flight still need gRPC to finish. Both share the grace.
        deadline = time.monotonic() + settings.shutdown_grace_seconds
        gateway.stop(settings.shutdown_grace_seconds)
        grace = max(0.0, deadline - time.monotonic())
        # Stops gRPC, then writes every queued request-log entry (App.stop).
        app.stop(grace)
        if app.request_log is not None:
            stats = app.request_log.stats
            logger.info(
                "stopped (request log: %d written, %d dropped, %d lost to database errors, "
                "%d after close)",
                stats.written,
                stats.dropped,
                stats.failed,
                stats.after_close,
            )
        else:
            logger.info("stopped")
    finally:
        engine.dispose()


def _name_the_worker(slot: int) -> None:
    """Every log line of a worker names it: `luman.server[worker 1]: ...`."""
    make_record = logging.getLogRecordFactory()

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = make_record(*args, **kwargs)
        made.name = f"{made.name}[worker {slot}]"
        return made

    logging.setLogRecordFactory(record)


@cli.command()
def migrate() -> None:
    """Apply pending schema migrations to DATABASE_URL (or the embedded database)."""
    settings = _settings()
    _configure_logging(settings)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        migrations.upgrade(engine)
        current, _ = migrations.pending(engine)
        click.echo(f"database is at revision {current}")
    finally:
        engine.dispose()


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
def backup(path: Path, force: bool) -> None:
    """Copy the embedded SQLite database to PATH, consistently, while the server may be running.

    The copy is written next to PATH and renamed into place once complete; an existing PATH is
    kept unless --force. Restoring it also needs the same SIGNING_KEY_SECRET. For PostgreSQL,
    use pg_dump (exit status 2).
    """
    settings = _settings()
    _configure_logging(settings)
    try:
        size = sqlite_backup.backup(settings.database_url, path, force=force)
    except sqlite_backup.NotSQLiteError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except sqlite_backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"backed up {sqlite_backup.sqlite_path(settings.database_url)} to {path} ({size} bytes)"
    )


@cli.command()
@click.argument("message")
def makemigration(message: str) -> None:
    """Autogenerate a migration from the models (for developers)."""
    settings = _settings()
    _configure_logging(settings)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        migrations.revision_autogenerate(engine, message)
    finally:
        engine.dispose()


@cli.command()
@click.option("--user", "user", help="Only calls by this user (id or email).")
@click.option("--method", help="Only this RPC: full name, 'AuthService/Login' or 'Login'.")
@click.option("--status", help="Only this gRPC status: a name (NOT_FOUND) or number (5).")
@click.option(
    "--limit",
    type=click.IntRange(1, request_log_query.MAX_LIMIT),
    default=50,
    show_default=True,
    help="How many of the most recent matching calls to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def logs(
    user: str | None, method: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """Show recent requests from the request log, oldest first."""
    settings = _settings()
    _configure_logging(settings)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        log_filter = request_log_query.LogFilter(
            user_id=request_log_query.resolve_user(engine, user) if user else None,
            method=method,
            status=request_log_query.parse_status(status) if status else None,
            limit=limit,
        )
        rows = request_log_query.recent(engine, log_filter)
    except request_log_query.QueryError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"cannot read the request log ({type(exc).__name__}): is the database migrated? "
            "run `luman-server migrate`"
        ) from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(request_log_query.render_json(rows))
    else:
        click.echo(request_log_query.render_table(rows))


cli.add_command(keys)


def main() -> None:
    cli(prog_name="luman-server")
