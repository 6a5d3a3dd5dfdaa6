"""`luman-server keys`: list and rotate the keys that sign access tokens (auth/key_ring.py)."""

from __future__ import annotations

import datetime as dt
import json

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from luman.server.auth.invalidations import open_channel
from luman.server.auth.key_ring import KeyRing, KeyState, LoadedKey
from luman.server.auth.signing_keys import ALGORITHMS, Algorithm, SigningKeyError
from luman.server.clock import Clock, system_clock
from luman.server.config import ConfigError, Settings
from luman.server.db.session import make_engine, make_sessions


def _key_ring(settings: Settings, clock: Clock) -> tuple[KeyRing, Engine]:
    if settings.jwt_algorithm == "HS256":
        raise click.ClickException(
            "JWT_ALGORITHM is HS256: access tokens are signed with JWT_SECRET, and there are "
            "no signing keys (set JWT_ALGORITHM=EdDSA or ES256 to use them)"
        )
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        return KeyRing.from_settings(settings, make_sessions(engine), clock), engine
    except SigningKeyError as exc:
        engine.dispose()
        raise click.ClickException(str(exc)) from None


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


def _database_error(exc: SQLAlchemyError) -> click.ClickException:
    return click.ClickException(
        f"cannot read the signing keys ({type(exc).__name__}): is the database migrated? "
        "run `luman-server migrate`"
    )


def _time(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(dt.UTC).isoformat(timespec="seconds")


@click.group()
def keys() -> None:
    """The keys that sign access tokens (JWT_ALGORITHM=EdDSA or ES256).

    The public keys are published as a JWK Set: GET /.well-known/jwks.json on the HTTP port,
    and luman.auth.v1.AuthService/GetJwks.
    """


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_obj
def list_keys(obj: dict[str, Clock] | None, as_json: bool) -> None:
    """List every signing key, oldest first, with its state.

    States: next (published, starts signing at SIGNS FROM), active (signs new tokens),
    verifying (superseded; verifies its tokens until RETIRES), retired (neither).

    RETIRES is when the next key started signing + 1 minute (key reload) + JWT_EXPIRES_IN +
    1 minute (clock skew), with the JWT_EXPIRES_IN of the environment this command runs in.
    Each server works out the same sum with its own JWT_EXPIRES_IN: run this with the
    servers' settings to see what they do.

    \b
    Examples:
      luman-server keys list
      luman-server keys list --json | jq -r '.[] | select(.state == "active") | .kid'
    """
    clock = (obj or {}).get("clock", system_clock)
    ring, engine = _key_ring(_settings(), clock)
    try:
        rows = ring.all_keys()
    except SQLAlchemyError as exc:
        raise _database_error(exc) from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps([_key_json(key, state) for key, state in rows], indent=2))
        return
    if not rows:
        click.echo("no signing keys yet: the server creates the first one when it starts")
        return
    header = ("KID", "ALGORITHM", "STATE", "CREATED", "SIGNS FROM", "RETIRES")
    table = [header] + [
        (
            key.kid,
            key.algorithm,
            state,
            _time(key.create_time),
            _time(key.activate_time),
            _time(key.retire_time),
        )
        for key, state in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _key_json(key: LoadedKey, state: KeyState) -> dict[str, str | None]:
    return {
        "kid": key.kid,
        "algorithm": key.algorithm,
        "state": state,
        "create_time": _time(key.create_time),
        "activate_time": _time(key.activate_time),
        "retire_time": _time(key.retire_time) or None,
    }


@keys.command()
@click.option(
    "--now",
    "immediately",
    is_flag=True,
    help="Start signing with the new key at once (or the already scheduled one), instead of "
    "after the JWKS max-age.",
)
@click.option(
    "--algorithm",
    type=click.Choice(ALGORITHMS),
    default=None,
    help="The new key's algorithm. Default: the current key's (not this shell's JWT_ALGORITHM).",
)
@click.pass_obj
def rotate(obj: dict[str, Clock] | None, immediately: bool, algorithm: Algorithm | None) -> None:
    """Make a new key, of the current key's algorithm, the one that signs access tokens.

    The new key is published in the JWKS at once and starts signing 6 minutes later (the
    JWKS max-age, 5 minutes, plus the 1-minute key reload of every server), so verifiers that
    cached the set already hold it. The old key keeps verifying until every token it signed
    has expired, then retires: each server retires it JWT_EXPIRES_IN + 2 minutes after it
    stops signing, by the server's own JWT_EXPIRES_IN, whatever this shell's is (the time
    printed uses this shell's). Running servers reload their keys at once (told through the
    database; within a minute if they cannot be told). A server whose JWT_ALGORITHM differs
    from the new key's rotates back to its own when it restarts.

    \b
    Examples:
      luman-server keys rotate
      luman-server keys rotate --now             # no publication delay
      luman-server keys rotate --algorithm ES256
    """
    clock = (obj or {}).get("clock", system_clock)
    ring, engine = _key_ring(_settings(), clock)
    # Running servers reload their keys at once (auth/invalidations.py): rotate() announces
    # the new key once committed, and waits until they have acknowledged it.
    invalidations = open_channel(engine, peer=False)
    if invalidations is not None:
        invalidations.attach(None, ring)
        invalidations.start()
    try:
        new = ring.rotate(immediately=immediately, algorithm=algorithm)
        rows = ring.all_keys()
    except SigningKeyError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise _database_error(exc) from None
    finally:
        if invalidations is not None:
            invalidations.close()
        engine.dispose()
    click.echo(
        f"key {new.kid} ({new.algorithm}) is published and signs from {_time(new.activate_time)}"
    )
    for key, state in rows:
        if state != "retired" and key.kid != new.kid and key.retire_time is not None:
            click.echo(f"key {key.kid} ({state}) retires at {_time(key.retire_time)}")
