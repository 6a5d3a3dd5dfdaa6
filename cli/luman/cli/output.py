"""Everything the CLI prints: tables and key/value blocks for people, JSON for scripts.

Results go to stdout and errors to stderr, so `luman ... --json | jq` sees only the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import itertools
import json
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import click

from luman.client import (
    CliToken,
    CreatedCliToken,
    CreatedServiceAccount,
    DeviceAuthorization,
    Identity,
    Introspection,
    Member,
    Organization,
    ServiceAccount,
    ServiceToken,
    Session,
    User,
)
from luman.client.audit import AuditEvent


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums and datetimes as plain JSON values (times in ISO 8601, UTC)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.repr  # fields hidden from repr hold secrets
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def emit_json(data: Any) -> None:
    click.echo(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False))


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _role(value: enum.Enum | None) -> str:
    return str(value.value) if value is not None else "unknown"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Columns padded to their widest cell; the last column is not padded."""
    materialised = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in materialised) for i in range(len(headers))]
    for row in materialised:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def fields(pairs: Sequence[tuple[str, str]]) -> None:
    """An aligned "Label: value" block."""
    width = max(len(label) for label, _ in pairs) + 1
    for label, value in pairs:
        click.echo(f"{label + ':':<{width}} {value}")


def message(text: str, *, as_json: bool, data: Any) -> None:
    """`text` for people, `data` as JSON for scripts."""
    if as_json:
        emit_json(data)
    else:
        click.echo(text)


def warning(text: str) -> None:
    click.echo(f"warning: {text}", err=True)


def error(message: str, *, as_json: bool, exit_code: int, **details: Any) -> None:
    if as_json:
        payload = {"error": {"message": message, "exit_code": exit_code, **details}}
        click.echo(json.dumps(to_jsonable(payload), indent=2, ensure_ascii=False), err=True)
    else:
        click.echo(f"error: {message}", err=True)


def user(
    value: User,
    *,
    as_json: bool,
    api_url: str,
    token: Mapping[str, Any] | None = None,
    identities: Sequence[Identity] | None = None,
) -> None:
    """The user; with `token` ({"id", "name", "scopes", "expire_time"}), the saved token too;
    with `identities`, the provider accounts linked to it."""
    if as_json:
        # "cli_token", not "token": the metadata, never the secret.
        extra: dict[str, Any] = {"cli_token": to_jsonable(token)} if token is not None else {}
        if identities is not None:
            extra["identities"] = to_jsonable(list(identities))
        emit_json({**to_jsonable(value), "api_url": api_url, **extra})
        return
    pairs = [
        ("Email", value.email),
        ("Status", _email_status(value)),
        ("Name", value.name),
        ("User ID", value.id),
        ("Backend", api_url),
    ]
    if identities is not None:
        pairs.append(("Linked", ", ".join(_identity_label(i) for i in identities) or "none"))
    if token is not None:
        expires = token.get("expire_time")
        pairs += [
            ("Token", token.get("name") or "-"),
            ("Scopes", " ".join(token.get("scopes") or ()) or "-"),
            ("Expires", _when(expires) if isinstance(expires, dt.datetime) else "never"),
        ]
    fields(pairs)


def _identity_label(value: Identity) -> str:
    name = _printable(value.username or value.email)
    return f"{_printable(value.provider_display_name)} ({name})" if name else value.provider


def identities(values: Sequence[Identity], *, as_json: bool) -> None:
    if as_json:
        emit_json(list(values))
        return
    if not values:
        click.echo("No linked accounts. Sign in with a provider on the login page to link one.")
        return
    table(
        ("ID", "PROVIDER", "USERNAME", "EMAIL", "LINKED", "LAST SIGN-IN"),
        (
            (
                i.id,
                _printable(i.provider_display_name),
                _printable(i.username) or "-",
                _printable(i.email) or "-",
                _when(i.create_time),
                _when(i.last_sign_in_time),
            )
            for i in values
        ),
    )


def _email_status(value: User) -> str:
    if value.email_verified:
        return "email verified"
    return (
        "email not verified (luman account verify CODE; "
        "luman account verify-email sends a new message)"
    )


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isprintable())


def device_code(value: DeviceAuthorization, *, as_json: bool) -> None:
    """A started device login: with --json one line on stdout, at once (a script or a test
    reads it while the CLI waits); else the instructions for people, on stderr (stdout keeps
    only the result)."""
    if as_json:
        line = {
            "verification_uri": value.verification_uri,
            "verification_uri_complete": value.verification_uri_complete,
            "user_code": value.user_code,
            "expires_in": value.expires_in,
            "interval": value.interval,
        }
        click.echo(json.dumps(line, ensure_ascii=False))  # click.echo flushes
        return
    minutes = max(1, round(value.expires_in / 60))
    # What the server sent, shown on a terminal: control characters (escape sequences) out.
    uri, complete = _printable(value.verification_uri), _printable(value.verification_uri_complete)
    code = click.style(_printable(value.user_code), bold=True)
    for line_text in (
        "To log in, open this page in a browser where you are signed in to Luman:",
        "",
        f"    {uri}",
        "",
        "and enter this code:",
        "",
        f"    {code}",
        "",
        "Or open this address, which has the code filled in:",
        f"    {complete}",
        "",
        "Only approve if you just ran `luman login` yourself.",
        f"The code expires in {minutes} minute{'s' if minutes != 1 else ''}.",
        "",
    ):
        click.echo(line_text, err=True)


def progress(text: str) -> None:
    """A note for people while a command works: stderr, so stdout stays clean."""
    click.echo(text, err=True)


@contextlib.contextmanager
def spinner(text: str, *, as_json: bool = False) -> Iterator[None]:
    """Animate `text` on stderr while the block runs, only when stderr is a terminal (and
    not with --json, whose errors go to stderr as JSON)."""
    if as_json or not sys.stderr.isatty():
        yield
        return
    stop = threading.Event()

    def spin() -> None:
        for frame in itertools.cycle("|/-\\"):
            sys.stderr.write(f"\r{frame} {text}")
            sys.stderr.flush()
            if stop.wait(0.1):
                break
        sys.stderr.write("\r\033[K")  # clear the line
        sys.stderr.flush()

    thread = threading.Thread(target=spin, name="luman-spinner", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(1.0)


def organization(value: Organization, *, as_json: bool) -> None:
    if as_json:
        emit_json(value)
        return
    fields(
        [
            ("Name", value.name),
            ("Slug", value.slug),
            ("ID", value.id),
            ("Your role", _role(value.role)),
            ("Created", _when(value.create_time)),
        ]
    )


def organizations(values: Sequence[Organization], *, as_json: bool) -> None:
    if as_json:
        emit_json(list(values))
        return
    if not values:
        click.echo("You belong to no organization yet. Create one: luman org create NAME")
        return
    table(
        ("SLUG", "NAME", "ROLE", "CREATED"),
        ((o.slug, o.name, _role(o.role), _when(o.create_time)) for o in values),
    )


def member(value: Member, *, as_json: bool, text: str) -> None:
    message(text, as_json=as_json, data=value)


def members(values: Sequence[Member], *, as_json: bool) -> None:
    if as_json:
        emit_json(list(values))
        return
    table(
        ("EMAIL", "NAME", "ROLE", "JOINED", "USER ID"),
        ((m.email, m.name, _role(m.role), _when(m.join_time), m.user_id) for m in values),
    )


def sessions(values: Sequence[Session], *, as_json: bool) -> None:
    if as_json:
        emit_json(list(values))
        return
    if not values:
        click.echo("No open sessions.")
        return
    table(
        ("ID", "CREATED", "LAST REFRESHED", "CLIENT IP", "USER AGENT"),
        (
            (
                s.id + (" (current)" if s.current else ""),
                _when(s.create_time),
                _when(s.last_refresh_time),
                s.client_ip or "-",
                s.user_agent or "-",
            )
            for s in values
        ),
    )


def cli_token_created(value: CreatedCliToken, *, as_json: bool) -> None:
    # The one place the secret is printed: to stdout, so `--json | jq -r .token` can store it.
    if as_json:
        emit_json({"token": value.token, "cli_token": value.cli_token})
        return
    fields(
        [
            ("Token", value.token),
            ("Name", value.cli_token.name),
            ("ID", value.cli_token.id),
            ("Scopes", " ".join(value.cli_token.scopes)),
            (
                "Expires",
                _when(value.cli_token.expire_time) if value.cli_token.expire_time else "never",
            ),
        ]
    )
    click.echo("This is the only time the token is shown: store it now.", err=True)


def cli_tokens(values: Sequence[CliToken], *, as_json: bool, current_id: str = "") -> None:
    if as_json:
        emit_json([{**to_jsonable(t), "current": t.id == current_id} for t in values])
        return
    if not values:
        click.echo("You have no tokens. Create one: luman token create NAME")
        return
    table(
        ("ID", "NAME", "TOKEN", "SCOPES", "EXPIRES", "LAST USED", "FROM", "CREATED"),
        (
            (
                t.id + (" *" if t.id == current_id else ""),
                t.name,
                t.hint,
                ",".join(t.scopes),
                _when(t.expire_time) if t.expire_time else "never",
                _when(t.last_use_time),
                t.last_use_ip or "-",
                _when(t.create_time),
            )
            for t in values
        ),
    )
    if any(t.id == current_id for t in values):
        click.echo("* this login's token", err=True)


def service_account_created(value: CreatedServiceAccount, *, as_json: bool) -> None:
    # The one place the secret is printed: to stdout, so `--json | jq -r .secret` can store it.
    account = value.service_account
    if as_json:
        emit_json({"secret": value.secret, "service_account": account})
        return
    fields(
        [
            ("Secret", value.secret),
            ("Name", account.name),
            ("ID", account.id),
            ("Scopes", " ".join(account.scopes)),
        ]
    )
    click.echo("This is the only time the secret is shown: store it now.", err=True)


def service_accounts(values: Sequence[ServiceAccount], slug: str, *, as_json: bool) -> None:
    if as_json:
        emit_json(list(values))
        return
    if not values:
        click.echo(
            f"{slug} has no service accounts. Create one: "
            f"luman org service-account create {slug} NAME --scope introspect"
        )
        return
    table(
        ("ID", "NAME", "SECRET", "SCOPES", "CREATED"),
        ((a.id, a.name, a.secret_hint, ",".join(a.scopes), _when(a.create_time)) for a in values),
    )


def service_token(value: ServiceToken, *, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "access_token": value.access_token,
                "expire_time": value.expire_time,
                "scopes": value.scopes,
            }
        )
        return
    # The bare token on stdout, for TOKEN=$(luman service-token ...).
    click.echo(value.access_token)
    click.echo(f"Expires {_when(value.expire_time)}.", err=True)


def introspection(value: Introspection, *, as_json: bool) -> None:
    if as_json:
        emit_json(value)
    elif not value.active:
        click.echo("Not active.")
    else:
        fields(
            [
                ("Active", "yes"),
                ("Kind", value.token_kind.replace("_", " ")),
                ("Subject", value.subject),
                ("Scopes", " ".join(value.scopes) or "-"),
                ("Organization", value.organization_id or "-"),
                ("Issued", _when(value.issue_time)),
                ("Expires", _when(value.expire_time) if value.expire_time else "never"),
            ]
        )


def audit_events(values: Sequence[AuditEvent], *, as_json: bool) -> None:
    if as_json:
        emit_json(list(values))
        return
    if not values:
        click.echo("No audit events.")
        return

    def actor(event: AuditEvent) -> str:
        return f"{event.actor_type}:{event.actor_id}" if event.actor_id else event.actor_type

    def target(event: AuditEvent) -> str:
        return f"{event.target_type}:{event.target_id}" if event.target_type else "-"

    def facts(event: AuditEvent) -> str:
        return _printable(" ".join(f"{k}={v}" for k, v in sorted(event.details.items()))) or "-"

    table(
        ("TIME", "ACTION", "ACTOR", "TARGET", "CLIENT IP", "DETAILS"),
        (
            (
                e.time.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if e.time else "-",
                e.action,
                actor(e),
                target(e),
                e.client_ip or "-",
                facts(e),
            )
            for e in values
        ),
    )
