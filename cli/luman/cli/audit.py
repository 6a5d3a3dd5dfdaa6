"""`luman audit` (your account's audit events) and `luman org audit SLUG` (an organization's,
for its owners and admins)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import click

from luman.cli import output
from luman.cli.context import json_option, state_of

_AGO = re.compile(r"(\d+)([dhm])")
_UNIT = {"d": "days", "h": "hours", "m": "minutes"}


class _Time(click.ParamType):  # type: ignore[type-arg]
    """An ISO 8601 date or time (UTC unless it says otherwise), or an age: 30m, 12h, 7d."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.datetime):
            return value
        text = str(value).strip()
        ago = _AGO.fullmatch(text)
        if ago:
            delta = dt.timedelta(**{_UNIT[ago.group(2)]: int(ago.group(1))})
            return dt.datetime.now(dt.UTC) - delta
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is neither an ISO 8601 time nor an age like 7d or 12h", param, ctx)
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


TIME = _Time()


def _filters(command: Any) -> Any:
    for option in reversed(
        (
            click.option("--action", default="", help="Only this action, e.g. member.added."),
            click.option("--actor", default="", metavar="ID", help="Only events by this actor."),
            click.option("--since", type=TIME, help="From this time (ISO 8601, or an age: 7d)."),
            click.option("--until", type=TIME, help="Before this time (ISO 8601, or an age)."),
            click.option(
                "--limit",
                type=click.IntRange(min=1),
                default=100,
                show_default=True,
                help="Show at most this many events, newest first.",
            ),
            json_option,
        )
    ):
        command = option(command)
    return command


def _show(
    ctx: click.Context,
    organization: str | None,
    action: str,
    actor: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> None:
    state = state_of(ctx)
    events = []
    for event in state.client().audit.iter(
        organization,
        actor_id=actor or None,
        action=action,
        since=since,
        until=until,
        page_size=min(limit, 500),
    ):
        events.append(event)
        if len(events) >= limit:
            break
    output.audit_events(events, as_json=state.as_json)


@click.command()
@_filters
@click.pass_context
def audit(
    ctx: click.Context,
    action: str,
    actor: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> None:
    """Show your account's audit log, newest first: sign-ins (and failed ones), tokens created
    and revoked, sessions signed out, memberships changed.

    \b
    Examples:
      luman audit
      luman audit --action auth.sign_in_failed --since 7d
      luman audit --since 2026-12-01 --until 2026-12-08 --limit 500
      luman audit --json | jq -r '.[] | [.time, .action, .client_ip] | @tsv'
    """
    _show(ctx, None, action, actor, since, until, limit)


@click.command(name="audit")
@click.argument("slug")
@_filters
@click.pass_context
def org_audit(
    ctx: click.Context,
    slug: str,
    action: str,
    actor: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> None:
    """Show an organization's audit log, newest first (owners and admins): members added,
    removed and re-roled, service accounts, and more.

    \b
    Examples:
      luman org audit acme
      luman org audit acme --action member.removed --since 30d
      luman org audit acme --actor 0b6f5a3e-8c1d-4c6e-9a57-3f1e2d4c5b6a
      luman org audit acme --json | jq '.[] | select(.action == "member.role_changed")'
    """
    _show(ctx, slug, action, actor, since, until, limit)
