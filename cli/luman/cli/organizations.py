"""`luman org ...`: organizations and their members."""

from __future__ import annotations

import re
import unicodedata

import click

from luman.cli import output
from luman.cli.context import json_option, state_of
from luman.client import Role

MAX_SLUG_LENGTH = 40
MIN_SLUG_LENGTH = 3

_ROLE = click.Choice([r.value for r in Role], case_sensitive=False)


def slug_from_name(name: str) -> str:
    """'Acme Corp' -> 'acme-corp': ASCII letters and digits joined by single hyphens."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:MAX_SLUG_LENGTH].rstrip("-")


@click.group()
def org() -> None:
    """Manage organizations and their members.

    SLUG is the organization's short name; USER is a member's email or user id.

    \b
    Examples:
      luman org create "Acme Corp"
      luman org add acme grace@example.com --role admin
      luman org invite acme grace@example.com --role admin
      luman org invitations acme
      luman org members acme
      luman org service-accounts acme
      luman org config pull acme
      luman org rename acme "Acme Corporation" --slug acme-corp
      luman org transfer acme grace@example.com
      luman org delete acme
    """


@org.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List your organizations and your role in each.

    \b
    Example:
      luman org list
    """
    state = state_of(ctx)
    organizations = list(state.client().organizations.iter())
    output.organizations(organizations, as_json=state.as_json)


@org.command()
@click.argument("name")
@click.option(
    "--slug",
    metavar="SLUG",
    help="Short unique name: 3 to 40 of a-z, 0-9 and '-'. Default: derived from NAME.",
)
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, slug: str | None) -> None:
    """Create an organization; you become its owner.

    \b
    Examples:
      luman org create "Acme Corp"              # slug acme-corp
      luman org create "Acme Corp" --slug acme
    """
    state = state_of(ctx)
    if slug is None:
        slug = slug_from_name(name)
        if len(slug) < MIN_SLUG_LENGTH:
            raise click.UsageError(f"cannot derive a slug from {name!r}: pass --slug")
    organization = state.client().organizations.create(name, slug)
    if state.as_json:
        output.organization(organization, as_json=True)
    else:
        output.message(
            f"Created {organization.name} ({organization.slug}); you are its owner.",
            as_json=False,
            data=organization,
        )


@org.command()
@click.argument("slug")
@json_option
@click.pass_context
def show(ctx: click.Context, slug: str) -> None:
    """Show one of your organizations.

    \b
    Example:
      luman org show acme
    """
    state = state_of(ctx)
    output.organization(state.client().organizations.get(slug), as_json=state.as_json)


@org.command()
@click.argument("slug")
@json_option
@click.pass_context
def members(ctx: click.Context, slug: str) -> None:
    """List an organization's members, earliest first.

    \b
    Example:
      luman org members acme
    """
    state = state_of(ctx)
    found = list(state.client().organizations.iter_members(slug))
    output.members(found, as_json=state.as_json)


@org.command()
@click.argument("slug")
@click.argument("email")
@click.option(
    "--role", type=_ROLE, default=Role.MEMBER.value, show_default=True, help="Role to grant."
)
@json_option
@click.pass_context
def add(ctx: click.Context, slug: str, email: str, role: str) -> None:
    """Add a registered user to an organization.

    Owners may grant any role; admins may grant admin or member.

    \b
    Examples:
      luman org add acme grace@example.com
      luman org add acme grace@example.com --role admin
    """
    state = state_of(ctx)
    member = state.client().organizations.add_member(slug, email, Role.parse(role))
    output.member(
        member, as_json=state.as_json, text=f"Added {member.email} to {slug} as {role.lower()}."
    )


@org.command()
@click.argument("slug")
@click.argument("user")
@json_option
@click.pass_context
def remove(ctx: click.Context, slug: str, user: str) -> None:
    """Remove a member (by email or user id). You may always remove yourself.

    \b
    Examples:
      luman org remove acme grace@example.com
      luman org remove acme 0b7e9c1e-2d4f-4a43-9c55-5d1f0e6f7a10
    """
    state = state_of(ctx)
    state.client().organizations.remove_member(slug, user)
    output.message(
        f"Removed {user} from {slug}.",
        as_json=state.as_json,
        data={"organization": slug, "user": user, "removed": True},
    )


@org.command()
@click.argument("slug")
@click.argument("user")
@click.argument("role", type=_ROLE)
@json_option
@click.pass_context
def role(ctx: click.Context, slug: str, user: str, role: str) -> None:
    """Change a member's role (owner, admin or member).

    Only owners may grant or take away ownership; the last owner cannot be demoted.

    \b
    Example:
      luman org role acme grace@example.com admin
    """
    state = state_of(ctx)
    member = state.client().organizations.update_member_role(slug, user, Role.parse(role))
    output.member(
        member,
        as_json=state.as_json,
        text=f"{member.email} is now {role.lower()} in {slug}.",
    )


@org.command()
@click.argument("slug")
@click.argument("name", required=False)
@click.option(
    "--slug",
    "new_slug",
    metavar="NEW_SLUG",
    help="Change the slug too (owners only); the old one keeps working for a while.",
)
@json_option
@click.pass_context
def rename(ctx: click.Context, slug: str, name: str | None, new_slug: str | None) -> None:
    """Rename an organization, or change its slug.

    Owners and admins may change the name; only owners may change the slug. The old slug keeps
    leading to the organization for a grace period (30 days by default) and nobody else can
    take it meanwhile.

    \b
    Examples:
      luman org rename acme "Acme Corporation"
      luman org rename acme --slug acme-corp
      luman org rename acme "Acme Corp" --slug acme-corp
    """
    if name is None and new_slug is None:
        raise click.UsageError("give a new NAME, --slug NEW_SLUG, or both")
    state = state_of(ctx)
    organization = state.client().organizations.update(slug, name=name, slug=new_slug)
    if state.as_json:
        output.organization(organization, as_json=True)
    else:
        output.message(
            f"{slug} is now {organization.name} ({organization.slug}).",
            as_json=False,
            data=organization,
        )


@org.command()
@click.argument("slug")
@click.option(
    "--confirm",
    metavar="SLUG",
    help="The organization's slug again, to delete without being asked (scripts).",
)
@json_option
@click.pass_context
def delete(ctx: click.Context, slug: str, confirm: str | None) -> None:
    """Delete an organization with its members and service accounts (owners only).

    Asks you to type the slug to confirm, unless --confirm gives it.

    \b
    Examples:
      luman org delete acme
      luman org delete acme --confirm acme
    """
    state = state_of(ctx)
    if confirm is None:
        if state.as_json:
            raise click.UsageError("with --json, pass --confirm SLUG")
        confirm = click.prompt(
            f"This deletes {slug} and everything in it. Type its slug to confirm",
            default="",
            show_default=False,
            err=True,
        )
    if confirm != slug:
        raise click.ClickException(f"confirmation {confirm!r} is not {slug!r}: nothing deleted")
    state.client().organizations.delete(slug, confirm)
    output.message(
        f"Deleted {slug}.", as_json=state.as_json, data={"organization": slug, "deleted": True}
    )


@org.command()
@click.argument("slug")
@click.argument("user")
@json_option
@click.pass_context
def transfer(ctx: click.Context, slug: str, user: str) -> None:
    """Offer ownership to a member (by email or user id); owners only.

    When they accept (`luman org accept-transfer SLUG`), they become an owner and you an
    admin. One offer per organization: a new one replaces it. It lapses after 7 days.

    \b
    Example:
      luman org transfer acme grace@example.com
    """
    state = state_of(ctx)
    offer = state.client().organizations.offer_ownership_transfer(slug, user)
    output.message(
        f"Offered ownership of {slug} to {offer.to_email}; they can run "
        f"`luman org accept-transfer {slug}` until {offer.expire_time:%Y-%m-%d %H:%M} UTC.",
        as_json=state.as_json,
        data=offer,
    )


@org.command("transfer-status")
@click.argument("slug")
@json_option
@click.pass_context
def transfer_status(ctx: click.Context, slug: str) -> None:
    """Show the organization's pending ownership transfer.

    \b
    Example:
      luman org transfer-status acme
    """
    state = state_of(ctx)
    offer = state.client().organizations.get_ownership_transfer(slug)
    output.message(
        f"Ownership of {slug} is offered to {offer.to_email} "
        f"until {offer.expire_time:%Y-%m-%d %H:%M} UTC.",
        as_json=state.as_json,
        data=offer,
    )


@org.command("accept-transfer")
@click.argument("slug")
@json_option
@click.pass_context
def accept_transfer(ctx: click.Context, slug: str) -> None:
    """Accept the ownership offered to you: you become an owner, the offering owner an admin.

    \b
    Example:
      luman org accept-transfer acme
    """
    state = state_of(ctx)
    member = state.client().organizations.accept_ownership_transfer(slug)
    output.member(member, as_json=state.as_json, text=f"You are now an owner of {slug}.")


@org.command("decline-transfer")
@click.argument("slug")
@json_option
@click.pass_context
def decline_transfer(ctx: click.Context, slug: str) -> None:
    """Decline the ownership offered to you.

    \b
    Example:
      luman org decline-transfer acme
    """
    state = state_of(ctx)
    state.client().organizations.decline_ownership_transfer(slug)
    output.message(
        f"Declined the ownership of {slug}.",
        as_json=state.as_json,
        data={"organization": slug, "declined": True},
    )


@org.command("cancel-transfer")
@click.argument("slug")
@json_option
@click.pass_context
def cancel_transfer(ctx: click.Context, slug: str) -> None:
    """Withdraw the organization's pending ownership offer (any owner).

    \b
    Example:
      luman org cancel-transfer acme
    """
    state = state_of(ctx)
    state.client().organizations.cancel_ownership_transfer(slug)
    output.message(
        f"Cancelled the ownership transfer of {slug}.",
        as_json=state.as_json,
        data={"organization": slug, "cancelled": True},
    )
