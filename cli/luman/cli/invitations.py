"""Invitations: `luman org invite|invitations|resend-invite|cancel-invite ...` for an
organization's owners and admins, and `luman invitations|accept|decline` for the person
invited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import click

from luman.cli import output
from luman.cli.context import json_option, state_of
from luman.cli.failures import CliFailure
from luman.client import AlreadyExists, Client, ClientError, Role
from luman.client.invitations import Invitation, InvitationState

_ROLE = click.Choice([r.value for r in Role], case_sensitive=False)


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _name(value: object | None) -> str:
    return str(getattr(value, "value", "unknown")) if value is not None else "unknown"


def _inviter(invitation: Invitation) -> str:
    return invitation.inviter_email or "(deleted account)"


def _organization_table(values: Sequence[Invitation], slug: str, *, as_json: bool) -> None:
    if as_json:
        output.emit_json(list(values))
        return
    if not values:
        output.message(
            f"{slug} has no pending invitations. Invite someone: "
            f"luman org invite {slug} EMAIL --role member",
            as_json=False,
            data=[],
        )
        return
    output.table(
        ("ID", "EMAIL", "ROLE", "STATE", "INVITED BY", "SENT", "EXPIRES"),
        (
            (
                i.id,
                i.email,
                _name(i.role),
                _name(i.state),
                _inviter(i),
                _when(i.send_time),
                _when(i.expire_time),
            )
            for i in values
        ),
    )


def _sent(invitation: Invitation, verb: str, *, as_json: bool) -> None:
    output.message(
        f"{verb} {invitation.email} to {invitation.organization_slug} as "
        f"{_name(invitation.role)} (invitation {invitation.id}); it expires "
        f"{_when(invitation.expire_time)}. They accept with `luman accept {invitation.id}` "
        "once signed in with that address, verified.",
        as_json=as_json,
        data=invitation,
    )


# --- luman org ... ------------------------------------------------------------------------------


@click.command()
@click.argument("slug")
@click.argument("email")
@click.option(
    "--role", type=_ROLE, default=Role.MEMBER.value, show_default=True, help="Role to grant."
)
@json_option
@click.pass_context
def invite(ctx: click.Context, slug: str, email: str, role: str) -> None:
    """Invite an email address to an organization; owners and admins.

    The server emails the invitation. The invitee signs in (or registers) with that address,
    verifies it, and runs `luman accept ID`. It expires after the server's INVITATION_TTL (7
    days by default) unless resent; the expiry is printed. Owners may invite any role,
    admins admin or member; your own address must be verified. To add someone with an
    account at once, without asking them, use `luman org add` instead (owners and admins, with
    the same limits on the role). An address with a pending invitation gets it again with
    `luman org resend-invite SLUG ID`.

    \b
    Examples:
      luman org invite acme grace@example.com
      luman org invite acme grace@example.com --role admin
    """
    state = state_of(ctx)
    client = state.client()
    try:
        invitation = client.invitations.create(slug, email, Role.parse(role))
    except AlreadyExists as exc:
        if exc.reason != "INVITATION_PENDING":
            raise
        pending = _pending_id(client, slug, email)
        step = (
            f"resend it: luman org resend-invite {slug} {pending}"
            if pending
            else f"resend it with `luman org resend-invite {slug} ID` "
            f"(`luman org invitations {slug}` shows its ID)"
        )
        raise CliFailure(
            f"an invitation to {email} is already pending: {step}",
            as_json=state.as_json,
            details={"code": "ALREADY_EXISTS", "reason": exc.reason, "invitation_id": pending},
        ) from exc
    _sent(invitation, "Invited", as_json=state.as_json)


def _pending_id(client: Client, slug: str, email: str) -> str | None:
    """The id of the pending invitation to `email` (the error does not carry it), or None if
    listing fails or it is gone meanwhile."""
    wanted = email.strip().lower()
    try:
        for invitation in client.invitations.iter(slug):
            if invitation.email.lower() == wanted and invitation.state is InvitationState.PENDING:
                return invitation.id
    except ClientError:
        pass
    return None


@click.command("invitations")
@click.argument("slug")
@click.option("--all", "include_closed", is_flag=True, help="Also accepted, declined, cancelled.")
@json_option
@click.pass_context
def list_invitations(ctx: click.Context, slug: str, include_closed: bool) -> None:
    """List an organization's invitations, newest first; owners and admins.

    Pending and expired ones, or every one with --all.

    \b
    Examples:
      luman org invitations acme
      luman org invitations acme --all
    """
    state = state_of(ctx)
    found = list(state.client().invitations.iter(slug, include_closed))
    _organization_table(found, slug, as_json=state.as_json)


@click.command("resend-invite")
@click.argument("slug")
@click.argument("invitation_id")
@json_option
@click.pass_context
def resend_invite(ctx: click.Context, slug: str, invitation_id: str) -> None:
    """Email a pending or expired invitation again and renew its expiry (once a minute).

    You become its inviter: an invitation whose inviter left or lost the right to grant its
    role holds again once you resend it.

    \b
    Example:
      luman org resend-invite acme 0b7e9c1e-2d4f-4a43-9c55-5d1f0e6f7a10
    """
    state = state_of(ctx)
    invitation = state.client().invitations.resend(slug, invitation_id)
    _sent(invitation, "Sent the invitation of", as_json=state.as_json)


@click.command("cancel-invite")
@click.argument("slug")
@click.argument("invitation_id")
@json_option
@click.pass_context
def cancel_invite(ctx: click.Context, slug: str, invitation_id: str) -> None:
    """Withdraw a pending or expired invitation.

    \b
    Example:
      luman org cancel-invite acme 0b7e9c1e-2d4f-4a43-9c55-5d1f0e6f7a10
    """
    state = state_of(ctx)
    invitation = state.client().invitations.cancel(slug, invitation_id)
    output.message(
        f"Cancelled the invitation of {invitation.email} to {slug}.",
        as_json=state.as_json,
        data=invitation,
    )


# --- luman invitations|accept|decline -----------------------------------------------------------


@click.command("invitations")
@json_option
@click.pass_context
def my_invitations(ctx: click.Context) -> None:
    """List the pending invitations to your (verified) email address, newest first.

    \b
    Example:
      luman invitations
    """
    state = state_of(ctx)
    found = list(state.client().invitations.iter_mine())
    if state.as_json:
        output.emit_json(found)
        return
    if not found:
        output.message("You have no pending invitations.", as_json=False, data=[])
        return
    output.table(
        ("ID", "ORGANIZATION", "ROLE", "INVITED BY", "EXPIRES"),
        (
            (
                i.id,
                f"{i.organization_name} ({i.organization_slug})",
                _name(i.role),
                _inviter(i),
                _when(i.expire_time),
            )
            for i in found
        ),
    )


@click.command()
@click.argument("invitation_id")
@json_option
@click.pass_context
def accept(ctx: click.Context, invitation_id: str) -> None:
    """Accept an invitation: you join the organization with its role.

    \b
    Example:
      luman accept 0b7e9c1e-2d4f-4a43-9c55-5d1f0e6f7a10
    """
    state = state_of(ctx)
    organization = state.client().invitations.accept(invitation_id)
    if state.as_json:
        output.organization(organization, as_json=True)
        return
    output.message(
        f"You joined {organization.name} ({organization.slug}) as {_name(organization.role)}.",
        as_json=False,
        data=organization,
    )


@click.command()
@click.argument("invitation_id")
@json_option
@click.pass_context
def decline(ctx: click.Context, invitation_id: str) -> None:
    """Decline an invitation.

    \b
    Example:
      luman decline 0b7e9c1e-2d4f-4a43-9c55-5d1f0e6f7a10
    """
    state = state_of(ctx)
    state.client().invitations.decline(invitation_id)
    output.message(
        f"Declined invitation {invitation_id}.",
        as_json=state.as_json,
        data={"invitation_id": invitation_id, "declined": True},
    )
