"""`luman org service-accounts|service-account ...` and `luman service-token`: service
accounts, their secrets and the access tokens they are exchanged for."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from luman.cli import output
from luman.cli.context import json_option, state_of

_SECRET_FILE = click.option(
    "--secret-file",
    envvar="LUMAN_SERVICE_SECRET_FILE",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="File holding the service account's secret (lms_...), '-' for stdin "
    "($LUMAN_SERVICE_SECRET_FILE). A file, not an argument: arguments show in `ps`.",
)


def _read_secret(path: Path) -> str:
    return _read_file(path, "--secret-file")


def _read_file(path: Path, option: str) -> str:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    value = text.strip()
    if not value:
        raise click.BadParameter("the file is empty", param_hint=option)
    return value


@click.command("service-accounts")
@click.argument("slug")
@json_option
@click.pass_context
def list_service_accounts(ctx: click.Context, slug: str) -> None:
    """List the service accounts of organization SLUG (owners and admins).

    \b
    Example:
      luman org service-accounts acme
    """
    state = state_of(ctx)
    accounts = list(state.client().organizations.iter_service_accounts(slug))
    output.service_accounts(accounts, slug, as_json=state.as_json)


@click.group("service-account")
def service_account() -> None:
    """Create or delete a service account of an organization (owners and admins).

    \b
    Examples:
      luman org service-account create acme billing --scope introspect
      luman org service-account delete acme 0b7c9d2e-…
    """


@service_account.command()
@click.argument("slug")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    metavar="SCOPE",
    help="A scope its tokens carry, such as introspect; repeat for several.",
)
@json_option
@click.pass_context
def create(ctx: click.Context, slug: str, name: str, scopes: tuple[str, ...]) -> None:
    """Create service account NAME in SLUG and print its secret (shown only this once).

    The service exchanges the secret for short-lived access tokens: `luman service-token`.

    \b
    Examples:
      luman org service-account create acme billing --scope introspect
      luman --json org service-account create acme gw --scope introspect | jq -r .secret
    """
    state = state_of(ctx)
    created = state.client().organizations.create_service_account(slug, name, scopes)
    output.service_account_created(created, as_json=state.as_json)


@service_account.command()
@click.argument("slug")
@click.argument("account_id", metavar="ID")
@json_option
@click.pass_context
def delete(ctx: click.Context, slug: str, account_id: str) -> None:
    """Delete service account ID of SLUG: its secret and its tokens stop working.

    \b
    Example:
      luman org service-account delete acme 0b7c9d2e-…
    """
    state = state_of(ctx)
    state.client().organizations.delete_service_account(slug, account_id)
    output.message(
        f"Deleted service account {account_id} of {slug}.",
        as_json=state.as_json,
        data={"organization": slug, "service_account_id": account_id, "deleted": True},
    )


@click.command("service-token")
@_SECRET_FILE
@json_option
@click.pass_context
def service_token(ctx: click.Context, secret_file: Path) -> None:
    """Exchange a service account's secret for an access token and print it.

    The token lives minutes (the server's JWT_EXPIRES_IN); ask again for a new one. No login
    is needed.

    \b
    Examples:
      luman service-token --secret-file /run/secrets/luman
      luman --json service-token --secret-file - < secret.txt | jq -r .access_token
    """
    state = state_of(ctx)
    issued = state.client(authenticated=False).auth.create_service_token(_read_secret(secret_file))
    output.service_token(issued, as_json=state.as_json)


@click.command()
@click.option(
    "--token-file",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="File holding the token to look at, '-' for stdin. A file, not an argument: it is "
    "someone else's bearer token, and arguments show in `ps`.",
)
@_SECRET_FILE
@json_option
@click.pass_context
def introspect(ctx: click.Context, token_file: Path, secret_file: Path) -> None:
    """Ask the server whether the token in --token-file is active now, as the service account
    whose secret is in --secret-file (it needs the introspect scope, in an organization the
    server's INTROSPECTION_ORGANIZATIONS lists). Exit code 1 when the token is not active.

    \b
    Examples:
      printf '%s' "$TOKEN" | luman introspect --token-file - --secret-file /run/secrets/luman
      luman --json introspect --token-file token.txt --secret-file secret.txt | jq .active
    """
    if str(token_file) == "-" and str(secret_file) == "-":
        raise click.BadParameter(
            "stdin can hold only one of the token and the secret", param_hint="--token-file"
        )
    token = _read_file(token_file, "--token-file")
    state = state_of(ctx)
    client = state.client(authenticated=False)
    client.token = client.auth.create_service_token(_read_secret(secret_file)).access_token
    found = client.auth.introspect_token(token)
    output.introspection(found, as_json=state.as_json)
    if not found.active:
        ctx.exit(1)
