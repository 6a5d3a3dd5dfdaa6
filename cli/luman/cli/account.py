"""`luman account update | password | delete | verify-email | verify | forgot-password |
reset-password`: your own account, its email address, and a forgotten password."""

from __future__ import annotations

import shlex
import sys

import click

from luman.cli import output
from luman.cli.context import json_option, state_of
from luman.cli.failures import CliFailure, ExitCode
from luman.client import (
    AuthFileError,
    ClientError,
    FailedPrecondition,
    NotLoggedIn,
    Unauthenticated,
    load_auth,
    remove_auth,
)

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


# Every option that takes the link's token says where it shows.
_ON_ARGV = (
    "Other users of this machine can see command-line arguments (ps), and the shell keeps "
    "them in its history: prefer --token-stdin."
)
_STDIN_OR_PROMPT = "or ask for it (hidden) at a terminal; keeps it off the command line."


def _at_terminal() -> bool:
    """Whether standard input is a terminal, so a prompt can ask (tests replace it)."""
    return sys.stdin.isatty()


def _read_token() -> str:
    """The link's token: asked for (hidden) at a terminal, else the first line of standard
    input."""
    if _at_terminal():
        token = str(click.prompt("Token from the message's link", hide_input=True, err=True))
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise click.UsageError("--token-stdin: no token given")
    return token


def _saved_login_for(email: str | None) -> bool:
    """Whether this machine has a saved login, of the account at `email` when known."""
    try:
        saved = load_auth()
    except AuthFileError:
        return False
    if saved is None:
        return False
    return not email or saved.email.lower() == email.strip().lower()


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
    """Your account: change its name or password, verify its email, reset a forgotten
    password, or delete it.

    \b
    Examples:
      luman account update --name "Ada Lovelace"
      luman account password
      luman account password --revoke-cli-tokens
      luman account verify-email
      luman account verify BCDF-GHJK
      luman account forgot-password ada@example.com
      luman account reset-password ada@example.com
      luman account identities
      luman account unlink github
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


@account.command("verify-email")
@json_option
@click.pass_context
def verify_email(ctx: click.Context) -> None:
    """Send a new message that verifies your email address.

    The message has a link and a code (valid 48 hours by default); open the link, or run
    `luman account verify CODE`. One message a minute.

    \b
    Example:
      luman account verify-email
    """
    state = state_of(ctx)
    email = state.client().auth.send_verification_email()
    output.message(
        f"Sent a verification message to {email}. Open its link, or run "
        "`luman account verify CODE` with its code.",
        as_json=state.as_json,
        data={"sent": True, "email": email},
    )


@account.command()
@click.argument("code", required=False)
@click.option(
    "--email",
    metavar="ADDRESS",
    help="The address the message went to, with CODE (default: the logged-in account's); "
    "needs no login.",
)
@click.option(
    "--token",
    metavar="TOKEN",
    help="The `token=` part of the message's link, instead of CODE. " + _ON_ARGV,
)
@click.option(
    "--token-stdin",
    is_flag=True,
    help="Read the link's token from standard input, " + _STDIN_OR_PROMPT,
)
@json_option
@click.pass_context
def verify(
    ctx: click.Context,
    code: str | None,
    email: str | None,
    token: str | None,
    token_stdin: bool,
) -> None:
    """Verify your email address with the code from the verification message (XXXX-XXXX;
    case and the dash do not matter), or the token of its link.

    The code is checked against the logged-in account's address, or the one given with
    --email (no login needed). Five wrong codes spend the message: ask for a new one with
    `luman account verify-email`. The link's token needs neither.

    \b
    Examples:
      luman account verify BCDF-GHJK
      luman account verify BCDF-GHJK --email ada@example.com   # not logged in
      luman account verify --token-stdin              # asks for the token
      printf '%s\\n' "$TOKEN" | luman account verify --token-stdin
    """
    state = state_of(ctx)
    if token and token_stdin:
        raise click.UsageError("--token and --token-stdin: give one")
    if not code and not (token or token_stdin):
        raise click.UsageError(
            "missing CODE: give the code from the verification message "
            "(or its link's token with --token-stdin)"
        )
    if code and (token or token_stdin):
        raise click.UsageError("give the CODE or the link's token, not both")
    if email and not code:
        raise click.UsageError("--email goes with CODE, not the token")
    if token_stdin:
        token = _read_token()
    if token:
        user = state.client(authenticated=False).auth.verify_email(token=token)
    elif email:
        user = state.client(authenticated=False).auth.verify_email(email=email, code=code or "")
    else:
        try:
            client = state.client()
        except NotLoggedIn:
            raise click.UsageError(
                "not logged in: give the address the message went to with --email ADDRESS "
                "(or run `luman login` first)"
            ) from None
        me = client.auth.get_me()
        user = client.auth.verify_email(email=me.email, code=code or "")
    output.message(
        f"Verified {user.email}.",
        as_json=state.as_json,
        data={"user": {"id": user.id, "email": user.email, "email_verified": user.email_verified}},
    )


@account.command("forgot-password")
@click.argument("email")
@json_option
@click.pass_context
def forgot_password(ctx: click.Context, email: str) -> None:
    """Ask for a password-reset message to EMAIL. Needs no login.

    If an account has this address, and the address is verified, it gets a message with a
    link and a code (valid 1 hour by default); then run `luman account reset-password EMAIL`.
    The answer is the same either way.

    \b
    Example:
      luman account forgot-password ada@example.com
    """
    state = state_of(ctx)
    state.client(authenticated=False).auth.request_password_reset(email)
    output.message(
        f"If {email} belongs to an account with a verified address, a reset message is on "
        f"its way. Then run `luman account reset-password {shlex.quote(email)}`.",
        as_json=state.as_json,
        data={"requested": True, "email": email},
    )


@account.command("reset-password")
@click.argument("email", required=False)
@click.option(
    "--code",
    metavar="CODE",
    help="The code from the reset message (asked for at a terminal if not given).",
)
@click.option(
    "--token",
    metavar="TOKEN",
    help="The `token=` part of the message's link, instead of EMAIL and the code. " + _ON_ARGV,
)
@click.option(
    "--token-stdin",
    is_flag=True,
    help="Read the link's token from standard input (its first line; the new password is "
    "then the second), " + _STDIN_OR_PROMPT,
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the new password from the first line of standard input (for scripts; the "
    "second with --token-stdin).",
)
@click.option(
    "--revoke-cli-tokens",
    is_flag=True,
    help="Also revoke every CLI token of the account (other machines, CI; this one too).",
)
@json_option
@click.pass_context
def reset_password(
    ctx: click.Context,
    email: str | None,
    code: str | None,
    token: str | None,
    token_stdin: bool,
    password_stdin: bool,
    revoke_cli_tokens: bool,
) -> None:
    """Set a new password with the code (or link token) of a reset message. Needs no login.

    Asks for the code and the new password (twice, hidden) at a terminal; scripts give
    --code and --password-stdin. Every session of the account is signed out; CLI tokens keep
    working unless --revoke-cli-tokens is given. Five wrong codes spend the message.

    \b
    Examples:
      luman account reset-password ada@example.com
      luman account reset-password ada@example.com --code BCDF-GHJK --password-stdin <<<"$NEW"
      luman account reset-password --token-stdin --revoke-cli-tokens   # asks for the token
      printf '%s\\n%s\\n' "$TOKEN" "$NEW" | luman account reset-password --token-stdin \\
          --password-stdin
    """
    state = state_of(ctx)
    if token and token_stdin:
        raise click.UsageError("--token and --token-stdin: give one")
    if email and (token or token_stdin):
        raise click.UsageError("give EMAIL and the code, or the link's token, not both")
    if (token or token_stdin) and code:
        raise click.UsageError("--code goes with EMAIL, not the token")
    if not email and not (token or token_stdin):
        raise click.UsageError(
            "missing EMAIL: give the address the reset message went to, and its code "
            "(or the link's token with --token-stdin)"
        )
    if email and not code and not _at_terminal():
        raise click.UsageError("missing --code: give the code from the reset message")
    if not password_stdin and not _at_terminal():
        raise click.UsageError("no terminal to ask for the new password: use --password-stdin")
    if token_stdin:
        token = _read_token()
    if email and not code:
        # Not a secret on its own (it needs the address and expires): shown as typed.
        code = str(click.prompt("Code from the message", err=True))
    if password_stdin:
        new = _stdin_line("new password")
    else:
        new = str(
            click.prompt(
                "New password", hide_input=True, confirmation_prompt="Repeat new password", err=True
            )
        )
    reset = state.client(authenticated=False).auth.reset_password(
        new,
        token=token or "",
        email=email or "",
        code=code or "",
        revoke_cli_tokens=revoke_cli_tokens,
    )
    text = f"Password reset; signed out {reset.revoked_sessions} session(s) (web and app sign-ins)"
    if revoke_cli_tokens:
        text += (
            f" and revoked {reset.revoked_cli_tokens} CLI token(s). "
            "Log in with the new password: `luman login`."
        )
    else:
        # A personal token survives a reset unless revoked: a saved login still works.
        text += "; CLI tokens were not revoked, so the account's saved logins keep working."
        if not _saved_login_for(email):
            text += " Log in with the new password: `luman login`."
    output.message(
        text,
        as_json=state.as_json,
        data={
            "reset": True,
            "revoked_sessions": reset.revoked_sessions,
            "revoked_cli_tokens": reset.revoked_cli_tokens,
        },
    )


@account.command()
@json_option
@click.pass_context
def identities(ctx: click.Context) -> None:
    """List the provider accounts (GitHub, Google, GitLab, your company's sign-in) linked to
    your account. A provider account is linked the first time you sign in with it on the login
    page (`luman login` opens it).

    \b
    Example:
      luman account identities
      luman --json account identities | jq '.[].provider'
    """
    state = state_of(ctx)
    output.identities(state.client().auth.list_identities(), as_json=state.as_json)


@account.command()
@click.argument("identity")
@json_option
@click.pass_context
def unlink(ctx: click.Context, identity: str) -> None:
    """Unlink a provider account: it no longer signs you in. IDENTITY is an id from
    `luman account identities`, or a provider (github) when one account of it is linked.
    Refused when it would leave no way to sign in (no password, no other provider).

    \b
    Examples:
      luman account unlink github
      luman account unlink 0b9d3f7e-5c1a-4a51-9d43-1e3f0c6f2a77
    """
    state = state_of(ctx)
    client = state.client()
    linked = client.auth.list_identities()
    matches = [i for i in linked if identity in (i.id, i.provider)]
    if len(matches) != 1:
        known = ", ".join(f"{i.provider} ({i.id})" for i in linked) or "none"
        why = "several accounts of that provider are linked" if matches else "no such identity"
        raise click.UsageError(f"{why}: use an id from `luman account identities` ({known})")
    target = matches[0]
    client.auth.unlink_identity(target.id)
    output.message(
        f"Unlinked {target.provider_display_name} ({target.username or target.email}).",
        as_json=state.as_json,
        data={"unlinked": output.to_jsonable(target)},
    )
