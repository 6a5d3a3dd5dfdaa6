"""`luman token ...`: your personal (CLI) tokens: create, list, revoke."""

from __future__ import annotations

import datetime as dt
import re

import click

from luman.cli import output
from luman.cli.context import json_option, state_of
from luman.client import load_auth

_DURATION = re.compile(r"(\d+)([mhdw])")
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expires(
    _ctx: click.Context | None, _param: click.Parameter | None, value: str | None
) -> dt.timedelta | None:
    """'30d' -> 30 days: a whole number and one of m, h, d, w."""
    if value is None:
        return None
    found = _DURATION.fullmatch(value.strip())
    if found is None or int(found.group(1)) == 0:
        raise click.BadParameter(f"{value!r} is not a duration such as 90m, 12h, 30d or 2w")
    try:
        return dt.timedelta(**{_UNIT[found.group(2)]: int(found.group(1))})
    except OverflowError:
        raise click.BadParameter(f"{value!r} is too long") from None


@click.group()
def token() -> None:
    """Create, list and revoke your personal tokens.

    A personal token is what `luman login` saves, and what scripts and CI use: "lmn_…",
    shown once, with a name, scopes (read, write) and an optional expiry. Revoking one
    takes effect on its next call.

    \b
    Examples:
      luman token create ci --expires 30d --read-only
      luman token list
      luman token revoke 0b7c…
      luman token revoke --all
    """


@token.command()
@click.argument("name")
@click.option(
    "--expires",
    metavar="DURATION",
    callback=parse_expires,
    help="Lifetime such as 90m, 12h, 30d or 2w. Default: no expiry, or the server's "
    "MAX_TOKEN_LIFETIME.",
)
@click.option(
    "--read-only", is_flag=True, help="Only the read scope: the token cannot change anything."
)
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, expires: dt.timedelta | None, read_only: bool) -> None:
    """Create a token named NAME and print it (shown only this once).

    The token gets read and write (or only read with --read-only), never more than the
    login it is created with. It is that login's child: it expires no later than the
    login's token, and revoking that token (`luman token revoke ID`) revokes it too;
    `luman logout` does not.

    \b
    Examples:
      luman token create laptop
      luman token create ci --expires 30d --read-only
      luman --json token create deploy --expires 12h | jq -r .token
    """
    state = state_of(ctx)
    created = state.client().auth.create_cli_token(
        name, scopes=("read",) if read_only else (), ttl=expires
    )
    output.cli_token_created(created, as_json=state.as_json)


@token.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List your tokens that are not revoked: name, scopes, expiry, last use.

    Secrets are never shown; a token is recognised by its last 4 characters.

    \b
    Example:
      luman token list
    """
    state = state_of(ctx)
    tokens = list(state.client().auth.iter_cli_tokens())
    saved = load_auth()
    output.cli_tokens(tokens, as_json=state.as_json, current_id=saved.token_id if saved else "")


@token.command()
@click.argument("token_id", metavar="ID", required=False)
@click.option("--all", "revoke_all", is_flag=True, help="Revoke every token, this login's too.")
@json_option
@click.pass_context
def revoke(ctx: click.Context, token_id: str | None, revoke_all: bool) -> None:
    """Revoke the token with id ID (see `luman token list`), or every token with --all.

    Tokens created with the revoked token (and with those, in turn) are revoked too.

    \b
    Examples:
      luman token revoke 0b7c9d2e-…
      luman token revoke --all     # signs this CLI out too
    """
    state = state_of(ctx)
    if revoke_all == (token_id is not None):
        raise click.UsageError("give either a token ID or --all")
    saved = load_auth()
    client = state.client()
    if revoke_all:
        count = client.auth.revoke_all_cli_tokens()
        output.message(
            f"Revoked {count} token{'s' if count != 1 else ''}, this login's included: "
            "run `luman login` to log in again.",
            as_json=state.as_json,
            data={"revoked_count": count},
        )
        return
    assert token_id is not None
    client.auth.revoke_cli_token(token_id)
    current = saved is not None and saved.token_id == token_id
    text = f"Revoked token {token_id}."
    if current:
        text += " It was this login's token: run `luman login` to log in again."
    output.message(
        text, as_json=state.as_json, data={"token_id": token_id, "was_current_login": current}
    )
