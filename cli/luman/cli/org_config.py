"""`luman org config get|set|pull`: an organization's shared configuration."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from luman.cli import output
from luman.cli.context import json_option, state_of
from luman.client import Aborted
from luman.client.organization_configs import (
    OrganizationConfig,
    PulledConfig,
    load_pulled,
    pulled_config_dir,
    save_pulled,
)


def _check_slug(slug: str) -> str:
    try:
        pulled_config_dir(slug)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SLUG") from None
    return slug


def _described(config: OrganizationConfig) -> dict[str, Any]:
    return {
        "organization_id": config.organization_id,
        "version": config.version,
        "etag": config.etag,
        "update_time": config.update_time,
        "updated_by": config.updated_by,
        "config": config.config,
    }


def _save(slug: str, config: OrganizationConfig) -> PulledConfig:
    try:
        return save_pulled(slug, config)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the configuration of {slug}: {exc.strerror or exc}"
        ) from exc


@click.group("config")
def config() -> None:
    """Read or change an organization's shared configuration.

    One JSON document per organization with the settings its members' `luman` should use
    (component sources, style presets, ...). Members read it; owners and admins change it.

    `pull` keeps a copy where the CLI reads it: $LUMAN_CONFIG_DIR/orgs/SLUG/config.json
    (default ~/.luman/orgs/SLUG/config.json), with the version it is in pull.json beside it.
    `set` then changes the configuration only if nobody else has since.

    \b
    Examples:
      luman org config get acme
      luman org config pull acme
      $EDITOR ~/.luman/orgs/acme/config.json
      luman org config set acme ~/.luman/orgs/acme/config.json
    """


@config.command()
@click.argument("slug")
@json_option
@click.pass_context
def get(ctx: click.Context, slug: str) -> None:
    """Print the configuration of SLUG as JSON (with --json: also its version and etag).

    \b
    Examples:
      luman org config get acme
      luman org config get acme --json | jq .etag
    """
    state = state_of(ctx)
    found = state.client().organization_configs.get(slug)
    output.emit_json(_described(found) if state.as_json else found.config)


@config.command()
@click.argument("slug")
@json_option
@click.pass_context
def pull(ctx: click.Context, slug: str) -> None:
    """Save the configuration of SLUG where the CLI reads it.

    Writes $LUMAN_CONFIG_DIR/orgs/SLUG/config.json (default ~/.luman/...) and, beside it,
    pull.json with the version's etag, which `luman org config set SLUG` sends back.

    \b
    Example:
      luman org config pull acme
    """
    _check_slug(slug)
    state = state_of(ctx)
    found = state.client().organization_configs.get(slug)
    saved = _save(slug, found)
    output.message(
        f"Pulled the configuration of {slug} (version {found.version}) to {saved.path}.",
        as_json=state.as_json,
        data={"path": str(saved.path), "version": found.version, "etag": found.etag},
    )


def _read_document(path: Path) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="FILE") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{path} is not JSON: {exc}", param_hint="FILE") from None
    if not isinstance(document, dict):
        raise click.BadParameter(f"{path} must hold a JSON object", param_hint="FILE")
    return document


@config.command("set")
@click.argument("slug")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--if-match",
    "if_match",
    metavar="ETAG",
    help="Change it only if ETAG (from `get --json` or `pull`) is still its current etag.",
)
@click.option(
    "--force", is_flag=True, help="Change it whatever its current version (last writer wins)."
)
@json_option
@click.pass_context
def set_(ctx: click.Context, slug: str, file: Path, if_match: str | None, force: bool) -> None:
    """Replace the configuration of SLUG with the JSON object in FILE ('-' for stdin).

    Owners and admins only. The change is conditional: it fails, changing nothing, if the
    configuration changed since the version it is based on, which is --if-match ETAG, else
    the version of your last `luman org config pull SLUG`. Without either, pass --force.
    On success the new version becomes your pulled copy.

    \b
    Examples:
      luman org config pull acme && $EDITOR ~/.luman/orgs/acme/config.json
      luman org config set acme ~/.luman/orgs/acme/config.json
      luman org config set acme team.json --if-match 'W/"3"'
      echo '{"preset": "dark"}' | luman org config set acme - --force
    """
    _check_slug(slug)
    if force and if_match:
        raise click.UsageError("--force and --if-match exclude each other")
    document = _read_document(file)
    etag = ""
    target: str | uuid.UUID = slug
    if if_match:
        etag = if_match
    elif not force:
        pulled = load_pulled(slug)
        if pulled is None:
            raise click.UsageError(
                f"no pulled version of {slug} to base the change on: run "
                f"`luman org config pull {slug}` first, or pass --if-match ETAG or --force"
            )
        etag = pulled.etag
        # The organization that was pulled, by id: etags are versions ("W/\"3\""), which
        # another organization's configuration has too, and a slug can change hands.
        target = uuid.UUID(pulled.organization_id)
    state = state_of(ctx)
    try:
        written = state.client().organization_configs.update(target, document, etag=etag)
    except Aborted as exc:
        current = exc.metadata.get("etag", "?")
        raise click.ClickException(
            f"the configuration of {slug} changed since {etag} (it is now {current}): "
            f"`luman org config pull {slug}`, apply your change again and set it, "
            "or --force to overwrite"
        ) from exc
    saved = _save(slug, written)
    output.message(
        f"Set the configuration of {slug}: version {written.version} ({written.etag}).",
        as_json=state.as_json,
        data={**_described(written), "path": str(saved.path)},
    )
