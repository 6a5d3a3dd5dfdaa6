"""`luman account update | password | delete`: your own account."""

from __future__ import annotations

import sys

import click

from luman.cli import output
from luman.cli.context import json_option, state_of
from luman.cli.failures import CliFailure, ExitCode
from luman.client import ClientError, FailedPrecondition, Unauthenticated, load_auth, remove_auth

_PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (for scripts).",
)


def _stdin_line(what: str) -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.UsageError(f"--password-stdin: standard input has no {what}")
    return password


def _wrong_password(exc: ClientError, *, as_json: bool) -> CliFailure | None:
    if isinstance(exc, Unauthenticated) and exc.reason == "INVALID_CREDENTIALS":
        return CliFailure(
            "wrong password",
            ExitCode.UNAUTHENTICATED,
            as_json=as_json,
            details={"code": "UNAUTHENTICATED", "reason": exc.reason},
        )
    return None


@click.group()
def account() -> None:
    """Your account: change its name or password, or delete it.

    \b
    Examples:
      luman account update --name "Ada Lovelace"
      luman account password
      luman account password --revoke-cli-tokens
      luman account delete
    """


@account.command()
@click.option("--name", required=True, metavar="NAME", help="New display name, 1-100 characters.")
@json_option
@click.pass_context
def update(ctx: click.Context, name: str) -> None:
    """Change your display name.

    \b
    Example:
      luman account update --name "Ada Lovelace"
    """
    state = state_of(ctx)
    user = state.client().auth.update_me(name=name)
    output.message(
        f"Your name is now {user.name}.",
        as_json=state.as_json,
        data={"user": {"id": user.id, "email": user.email, "name": user.name}},
    )


@account.command()
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the current password from the first line of standard input and the new one "
    "from the second (for scripts).",
)
@click.option(
    "--revoke-cli-tokens",
    is_flag=True,
    help="Also revoke every other CLI token of the account (other machines, CI); this "
    "machine's login keeps working.",
)
@json_option
@click.pass_context
def password(ctx: click.Context, password_stdin: bool, revoke_cli_tokens: bool) -> None:
    """Change your password (8 to 72 bytes).

    Asks for the current password and the new one (twice). Every other sign-in (web and app
    sessions) is signed out; this machine's login stays. CLI tokens keep working unless
    --revoke-cli-tokens is given.

    \b
    Examples:
      luman account password
      luman account password --revoke-cli-tokens
      printf '%s\\n%s\\n' "$OLD" "$NEW" | luman account password --password-stdin
    """
    state = state_of(ctx)
    client = state.client()
    if password_stdin:
        current = _stdin_line("current password")
        new = _stdin_line("new password (second line)")
    else:
        current = str(click.prompt("Current password", hide_input=True, err=True))
        new = str(
            click.prompt(
                "New password",
                hide_input=True,
                confirmation_prompt="Repeat new password",
                err=True,
            )
        )
    try:
        changed = client.auth.change_password(current, new, revoke_cli_tokens=revoke_cli_tokens)
    except ClientError as exc:
        failure = _wrong_password(exc, as_json=state.as_json)
        if failure is None:
            raise
        raise failure from exc
    text = f"Password changed; signed out {changed.revoked_sessions} other session(s)"
    if revoke_cli_tokens:
        text += f" and revoked {changed.revoked_cli_tokens} other CLI token(s)"
    output.message(
        text + ".",
        as_json=state.as_json,
        data={
            "changed": True,
            "revoked_sessions": changed.revoked_sessions,
            "revoked_cli_tokens": changed.revoked_cli_tokens,
        },
    )


@account.command()
@click.option(
    "--yes", is_flag=True, help="Do not ask to type the account's email to confirm (scripts)."
)
@_PASSWORD_STDIN
@json_option
@click.pass_context
def delete(ctx: click.Context, yes: bool, password_stdin: bool) -> None:
    """Delete your account, for good.

    Your memberships, sessions and tokens go with it, on every machine. Type the account's
    email to confirm (or pass --yes), then its password. Refused while you are the last owner
    of an organization: make someone else an owner first (`luman org role SLUG EMAIL owner`).
    The saved login is removed afterwards.

    \b
    Examples:
      luman account delete
      printf '%s\\n' "$PASSWORD" | luman account delete --yes --password-stdin
    """
    state = state_of(ctx)
    if password_stdin and not yes:
        # Standard input carries the password, so it cannot also answer the confirmation.
        raise click.UsageError("--password-stdin needs --yes")
    client = state.client()
    me = client.auth.get_me()
    if not yes:
        typed = str(
            click.prompt(
                f"This deletes the account {me.email}. Type its email to confirm", err=True
            )
        )
        if typed.strip().lower() != me.email:
            raise CliFailure("the email did not match: nothing was deleted", as_json=state.as_json)
    if password_stdin:
        secret = _stdin_line("password")
    else:
        secret = str(click.prompt("Password", hide_input=True, err=True))
    try:
        client.auth.delete_me(secret)
    except FailedPrecondition as exc:
        if exc.reason != "LAST_OWNER":
            raise
        slugs = [slug for slug in exc.metadata.get("organizations", "").split(",") if slug]
        raise CliFailure(
            "you are the last owner of " + ", ".join(slugs) + ": make someone else an owner "
            "of each first (`luman org role SLUG EMAIL owner`); nothing was deleted",
            as_json=state.as_json,
            details={"code": "FAILED_PRECONDITION", "reason": exc.reason, "organizations": slugs},
        ) from exc
    except ClientError as exc:
        failure = _wrong_password(exc, as_json=state.as_json)
        if failure is None:
            raise
        raise failure from exc
    saved = load_auth()
    removed = saved is not None and saved.user_id == me.id and remove_auth()
    output.message(
        f"Deleted the account {me.email}." + (" Removed the saved login." if removed else ""),
        as_json=state.as_json,
        data={"deleted": True, "user_id": me.id, "email": me.email, "logged_out": removed},
    )
