"""`luman sessions`: your sign-ins (sessions), listed or revoked one at a time."""

from __future__ import annotations

import click

from luman.cli import output
from luman.cli.context import json_option, state_of


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def sessions(ctx: click.Context) -> None:
    """List your open sessions: one per sign-in (register or login) with an email and
    password, from a web or app client, with its client address and user agent.

    The CLI's own login is a CLI token, not a session: `luman logout` revokes it, and
    `luman logout --all --include-cli-tokens` revokes every one.

    \b
    Examples:
      luman sessions
      luman sessions --json | jq -r '.[].id'
      luman sessions revoke 0b6f5a3e-8c1d-4c6e-9a57-3f1e2d4c5b6a
    """
    if ctx.invoked_subcommand is None:
        state = state_of(ctx)
        output.sessions(list(state.client().auth.iter_sessions()), as_json=state.as_json)


@sessions.command()
@click.argument("session_id", metavar="ID")
@json_option
@click.pass_context
def revoke(ctx: click.Context, session_id: str) -> None:
    """Sign one session out: its tokens stop working on their next use.

    ID is a session id from `luman sessions`.

    \b
    Example:
      luman sessions revoke 0b6f5a3e-8c1d-4c6e-9a57-3f1e2d4c5b6a
    """
    state = state_of(ctx)
    state.client().auth.revoke_session(session_id)
    output.message(
        f"Revoked session {session_id}.",
        as_json=state.as_json,
        data={"session_id": session_id, "revoked": True},
    )
