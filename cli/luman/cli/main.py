"""The `luman` command: global options, lazy client construction, and error -> exit code.

Nothing here contacts the backend: the client is built the first time a command asks for
it, so `--help`, `--version` and `logout` without a saved login work offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from luman.cli import (
    account,
    audit,
    auth,
    invitations,
    org_config,
    organizations,
    service_accounts,
    sessions,
    tokens,
)
from luman.cli.context import State
from luman.cli.failures import failure_for
from luman.client import DEFAULT_TIMEOUT, ClientError, InvalidAddress, parse_address


class LumanGroup(click.Group):
    """Turns every ClientError raised by a command into one line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            state = ctx.find_object(State)
            if state is None:
                raise
            address = _address_for_message(state)
            raise failure_for(
                exc, address=address, timeout=state.timeout, as_json=state.as_json
            ) from exc


def _address_for_message(state: State) -> str:
    try:
        return str(state.address)
    except InvalidAddress:
        return "?"


def _check_api_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        parse_address(value)
    except InvalidAddress as exc:
        raise click.BadParameter(exc.message) from None
    return value


@click.group(cls=LumanGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--api-url",
    envvar="LUMAN_API_URL",
    callback=_check_api_url,
    metavar="ADDRESS",
    help="Backend address: host:port, grpc://host:port or grpcs://host[:port] (TLS). "
    "Default: $LUMAN_API_URL, else the address saved at login, else localhost:3000.",
)
@click.option("--json", "as_json", is_flag=True, help="Print results (and errors) as JSON.")
@click.option(
    "--timeout",
    envvar="LUMAN_TIMEOUT",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Deadline for each call to the backend ($LUMAN_TIMEOUT).",
)
@click.option(
    "--ca-cert",
    envvar="LUMAN_CA_CERT",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM CA bundle that signs a grpcs:// backend's certificate ($LUMAN_CA_CERT).",
)
@click.version_option(package_name="luman", prog_name="luman")
@click.pass_context
def cli(
    ctx: click.Context, api_url: str | None, as_json: bool, timeout: float, ca_cert: Path | None
) -> None:
    """Luman: accounts and organizations from the command line.

    \b
    Examples:
      luman register
      luman login                      # approve in the browser
      luman login --password --email ada@example.com
      luman org create "Acme Corp" --slug acme
      luman org invite acme grace@example.com --role admin   # Grace: luman accept ID
      luman invitations                # invitations to your verified address
      luman org transfer acme grace@example.com   # Grace: luman org accept-transfer acme
      luman token create ci --expires 30d --read-only
      luman sessions
      luman audit --since 7d           # your account's sign-ins, tokens, memberships
      luman org audit acme             # the organization's (owners and admins)
      luman account update --name "Ada Lovelace"
      luman account password
      luman logout --all
      luman org service-account create acme billing --scope introspect
      luman org config pull acme       # the team's shared settings, to ~/.luman/orgs/acme/
      luman service-token --secret-file /run/secrets/luman
      luman --json org list | jq '.[].slug'

    \b
    Environment:
      LUMAN_API_URL     backend address (like --api-url)
      LUMAN_CONFIG_DIR  folder of auth.json and pulled org configs (default: ~/.luman)
      LUMAN_TIMEOUT     seconds per call (like --timeout)
      LUMAN_CA_CERT     CA bundle for grpcs:// (like --ca-cert)

    \b
    Exit codes:
      0  ok
      1  error
      2  usage error
      3  not logged in, wrong email or password, or token rejected
      4  backend unreachable or not answering
      130  cancelled with Ctrl-C (luman login)
    """
    state = State(api_url, as_json, timeout, ca_cert)
    ctx.obj = state
    ctx.call_on_close(state.close)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="luman")


for _command in (auth.register, auth.login, auth.logout, auth.whoami, auth.health):
    cli.add_command(_command)
cli.add_command(organizations.org)
organizations.org.add_command(service_accounts.list_service_accounts)
organizations.org.add_command(service_accounts.service_account)
organizations.org.add_command(org_config.config)
organizations.org.add_command(audit.org_audit)
for _command in (
    invitations.invite,
    invitations.list_invitations,
    invitations.resend_invite,
    invitations.cancel_invite,
):
    organizations.org.add_command(_command)
for _command in (invitations.my_invitations, invitations.accept, invitations.decline):
    cli.add_command(_command)
cli.add_command(audit.audit)
cli.add_command(service_accounts.service_token)
cli.add_command(service_accounts.introspect)
cli.add_command(tokens.token)
cli.add_command(sessions.sessions)
cli.add_command(account.account)
