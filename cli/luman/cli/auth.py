"""`luman register`, `login` (device flow, or --password), `logout`, `whoami` and `health`."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import sys
from typing import IO, Any

import click
import grpc

from luman.cli import device_login, output
from luman.cli.context import State, json_option, state_of
from luman.cli.failures import CliFailure, ExitCode, describe, exit_code_for
from luman.client import (
    AuthData,
    AuthFileError,
    Client,
    ClientError,
    Identity,
    PermissionDenied,
    ServerError,
    Unauthenticated,
    Unavailable,
    auth_file_path,
    load_auth,
)
from luman.client import login as client_login
from luman.client import logout as client_logout

_EMAIL = click.option("--email", metavar="EMAIL", help="Account email; prompted for if omitted.")
_PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (for scripts).",
)


def _read_password_from_stdin() -> str:
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise click.UsageError("--password-stdin: standard input has no password")
    return password


def _credentials(email: str | None, password_stdin: bool, *, confirm: bool) -> tuple[str, str]:
    if password_stdin and not email:
        # Standard input carries the password, so it cannot also answer the email prompt.
        raise click.UsageError("--password-stdin needs --email")
    if not email:
        email = str(click.prompt("Email", err=True)).strip()
    if password_stdin:
        return email, _read_password_from_stdin()
    password = click.prompt(
        "Password",
        hide_input=True,
        confirmation_prompt="Repeat password" if confirm else False,
        err=True,
    )
    return email, str(password)


@click.command()
@_EMAIL
@click.option("--name", metavar="NAME", help="Display name; prompted for if omitted.")
@_PASSWORD_STDIN
@click.option(
    "--login/--no-login",
    "then_login",
    default=True,
    show_default=True,
    help="Log in with the new account afterwards.",
)
@json_option
@click.pass_context
def register(
    ctx: click.Context,
    email: str | None,
    name: str | None,
    password_stdin: bool,
    then_login: bool,
) -> None:
    """Create an account (and log in with it).

    The password needs 8 to 72 bytes.

    \b
    Examples:
      luman register
      printf '%s\\n' "$PASSWORD" | luman register --email ada@example.com \\
          --name "Ada Lovelace" --password-stdin
    """
    state = state_of(ctx)
    if password_stdin and not name:
        raise click.UsageError("--password-stdin needs --name")
    if not name and not email:
        email = str(click.prompt("Email", err=True)).strip()
    if not name:
        name = str(click.prompt("Name", err=True)).strip()
    email, password = _credentials(email, password_stdin, confirm=True)
    _warn_if_plaintext(state)
    signed_up = state.client(authenticated=False).auth.register(email, password, name)
    data = {"user": signed_up.user, "logged_in": False, "api_url": str(state.address)}
    if then_login:
        try:
            _login(state, email, password, token_name=None)
        except ClientError:
            # The account exists either way; say so before the error.
            output.message(
                f"Account created for {signed_up.user.email}, but logging in failed.",
                as_json=state.as_json,
                data=data,
            )
            raise
        data["logged_in"] = True
        text = f"Account created for {signed_up.user.email}; logged in to {state.address}."
    else:
        text = f"Account created for {signed_up.user.email}. Log in with: luman login"
    # Register queues the first verification message (invitations and password reset need it).
    text += (
        f"\nA verification email is on its way to {signed_up.user.email}: follow its link, or"
        " run: luman account verify CODE"
    )
    output.message(text, as_json=state.as_json, data=data)


def _warn_if_plaintext(state: State) -> None:
    address = state.address
    if address.tls or address.host == "localhost":
        return
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(address.host).is_loopback:
            return
    output.warning(
        f"sending the password to {address} without TLS; use grpcs:// for a remote backend"
    )


def _login(state: State, email: str, password: str, token_name: str | None) -> AuthData:
    return client_login(
        email,
        password,
        api_url=str(state.address),
        token_name=token_name,
        timeout=state.timeout,
        root_certificates=state.root_certificates(),
    )


class _Cancelled(CliFailure):
    """Ctrl-C while waiting: "Login cancelled." (no "error:" prefix), exit code 130."""

    def show(self, file: IO[Any] | None = None) -> None:
        if self.as_json:
            super().show(file)
        else:
            output.progress(self.message)


@click.command()
@click.option(
    "--password",
    "use_password",
    is_flag=True,
    help="Log in with email and password instead of the browser (implied by --email and "
    "--password-stdin).",
)
@_EMAIL
@_PASSWORD_STDIN
@click.option(
    "--token-name",
    metavar="NAME",
    help="With --password: label stored with the new CLI token on the server. Default: this "
    "host's name. (A browser login's token is named \"<host> (luman CLI)\" by the server.)",
)
@click.option(
    "--no-browser",
    is_flag=True,
    help="Do not open a browser; only print the address and the code.",
)
@json_option
@click.pass_context
def login(
    ctx: click.Context,
    use_password: bool,
    email: str | None,
    password_stdin: bool,
    token_name: str | None,
    no_browser: bool,
) -> None:
    """Log in and save a long-lived CLI token in ~/.luman/auth.json.

    By default you approve the login in a browser where you are signed in (RFC 8628 device
    login): the command prints an address and a code, opens the browser when it can, and
    waits. The token gets read and write and is named "<host> (luman CLI)". Only approve a
    code you just asked for yourself. Ctrl-C stops waiting (exit code 130).

    With --password (for scripts), it asks for email and password instead.

    The file is private to you (mode 0600); LUMAN_CONFIG_DIR moves it. Logging in again
    replaces the saved login and revokes its token.

    \b
    Examples:
      luman login                       # approve in the browser
      luman login --no-browser          # on a server: open the address elsewhere
      luman --json login | head -n 1    # the code as JSON, at once
      luman login --password --email ada@example.com
      luman --api-url grpcs://luman.example.com login
      printf '%s\\n' "$PASSWORD" | luman login --email ada@example.com --password-stdin
    """
    state = state_of(ctx)
    if email or password_stdin:
        use_password = True
    if not use_password:
        if token_name is not None:
            raise click.UsageError(
                "--token-name works with --password; a browser login's token is named "
                '"<host> (luman CLI)"'
            )
        try:
            saved = device_login.login(state, no_browser=no_browser)
        except KeyboardInterrupt:
            raise _Cancelled(
                "Login cancelled.", ExitCode.CANCELLED, as_json=state.as_json
            ) from None
    else:
        email, password = _credentials(email, password_stdin, confirm=False)
        _warn_if_plaintext(state)
        saved = _login(state, email, password, token_name)
    data: dict[str, object] = {
        "user": {"id": saved.user_id, "email": saved.email, "name": saved.name},
        "api_url": saved.api_url,
        "token_id": saved.token_id,
        "token_name": saved.token_name,
        "auth_file": str(auth_file_path()),
    }
    if not use_password:
        data["scopes"] = list(saved.scopes)
        data["expire_time"] = saved.expire_time or None
    output.message(
        f"Logged in to {saved.api_url} as {saved.email}.", as_json=state.as_json, data=data
    )


@click.command()
@click.option(
    "--all",
    "everywhere",
    is_flag=True,
    help="First sign out everywhere: revoke every session (web and app sign-ins) and every "
    "access and refresh token issued until now. Other CLI tokens keep working.",
)
@click.option(
    "--include-cli-tokens",
    is_flag=True,
    help="With --all: revoke every CLI token too, on every machine.",
)
@json_option
@click.pass_context
def logout(ctx: click.Context, everywhere: bool, include_cli_tokens: bool) -> None:
    """Revoke the saved CLI token on the server, then delete it locally.

    Tokens created with it (`luman token create`, for CI say) keep working: revoke them with
    `luman token revoke ID`, or revoke a leaked login token from another login with `luman token
    revoke ID`, which takes everything created with it along.

    The local copy is deleted even when the backend cannot be reached (exit code 4), in
    which case the token stays valid on the server: find it later with `luman token list`
    (from another login) and revoke it with `luman token revoke ID`.

    \b
    Examples:
      luman logout
      luman logout --all                       # every session; other CLI tokens stay
      luman logout --all --include-cli-tokens  # every credential of the account
    """
    state = state_of(ctx)
    if include_cli_tokens and not everywhere:
        raise click.UsageError("--include-cli-tokens needs --all")
    prefix, everywhere_data = "", None
    if everywhere:
        revoked = state.client().auth.logout_all(include_cli_tokens=include_cli_tokens)
        everywhere_data = {
            "revoked_sessions": revoked.revoked_sessions,
            "revoked_cli_tokens": revoked.revoked_cli_tokens,
        }
        prefix = (
            f"Signed out everywhere: revoked {revoked.revoked_sessions} session(s)"
            + (f" and {revoked.revoked_cli_tokens} CLI token(s)" if include_cli_tokens else "")
            + ".\n"
        )
    result = client_logout(
        api_url=state.api_url,
        timeout=state.timeout,
        root_certificates=state.root_certificates(),
    )
    data: dict[str, object] = {
        "was_logged_in": result.was_logged_in,
        "revoked": result.revoked,
        "api_url": result.api_url or None,
    }
    if everywhere_data is not None:
        data["logout_all"] = everywhere_data
    error = result.error
    if not result.was_logged_in:
        output.message("Not logged in.", as_json=state.as_json, data=data)
    elif error is None:
        output.message(
            prefix + f"Logged out: the token is revoked on {result.api_url} and deleted locally.",
            as_json=state.as_json,
            data=data,
        )
    elif isinstance(error, AuthFileError):
        output.message(
            f"Deleted the unreadable auth file {auth_file_path()}.",
            as_json=state.as_json,
            data=data,
        )
    elif isinstance(error, Unauthenticated) and include_cli_tokens:
        # LogoutAll has just revoked it, as asked.
        output.message(
            prefix + "Logged out: deleted the local token.", as_json=state.as_json, data=data
        )
    elif isinstance(error, Unauthenticated):
        output.message(
            "Logged out: deleted the local token (the server had already rejected it).",
            as_json=state.as_json,
            data=data,
        )
    else:
        why = describe(error, address=result.api_url, timeout=state.timeout)
        if isinstance(error, Unavailable):
            why = (
                f"{why}; the token stays valid: find it with `luman token list` "
                "and revoke it with `luman token revoke ID`"
            )
        output.message("Deleted the local token.", as_json=state.as_json, data=data)
        raise CliFailure(
            f"the token was not revoked: {why}",
            exit_code_for(error),
            as_json=state.as_json,
            details={"code": error.code.name if error.code else None, "reason": error.reason},
        )


@click.command()
@json_option
@click.pass_context
def whoami(ctx: click.Context) -> None:
    """Show the logged-in user, the provider accounts linked to it (GitHub, Google, ...) and
    the saved token's name, scopes and expiry, as the backend sees them.

    Exit code 3 when not logged in or the token was revoked.

    \b
    Example:
      luman whoami
      luman --json whoami | jq .token.scopes
    """
    state = state_of(ctx)
    client = state.client()
    user = client.auth.get_me()
    output.user(
        user,
        as_json=state.as_json,
        api_url=str(state.address),
        token=_saved_token(client),
        identities=_identities(client),
    )


def _identities(client: Client) -> list[Identity] | None:
    """The linked provider accounts; None from a server older than them (UNIMPLEMENTED)."""
    try:
        return client.auth.list_identities()
    except ServerError as exc:
        if exc.code == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise


def _saved_token(client: Client) -> dict[str, object] | None:
    """The saved token as the server lists it (ListCliTokens), else as the file says."""
    saved = load_auth()
    if saved is None:
        return None
    found: dict[str, object] = {
        "id": saved.token_id or None,
        "name": saved.token_name or None,
        "scopes": list(saved.scopes),
        "expire_time": _parse_time(saved.expire_time),
    }
    if not saved.token_id:
        return found
    try:
        for token in client.auth.iter_cli_tokens():
            if token.id == saved.token_id:
                return {
                    "id": token.id,
                    "name": token.name,
                    "scopes": list(token.scopes),
                    "expire_time": token.expire_time,
                }
    except PermissionDenied:
        pass  # a token without read: what the file says is all there is
    return found


def _parse_time(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


@click.command()
@json_option
@click.pass_context
def health(ctx: click.Context) -> None:
    """Check that the backend is up (grpc.health.v1); needs no login.

    Exit code 0 when serving, 1 when not serving, 4 when unreachable.

    \b
    Example:
      luman --api-url grpcs://luman.example.com health
    """
    state = state_of(ctx)
    status = state.client(authenticated=False).check_health()
    data = {"api_url": str(state.address), "status": status}
    output.message(f"{state.address}: {status}", as_json=state.as_json, data=data)
    if status != "SERVING":
        raise CliFailure(
            f"the backend at {state.address} is {status}", ExitCode.ERROR, as_json=state.as_json
        )
