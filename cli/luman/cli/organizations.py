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
      luman org members acme
      luman org service-accounts acme
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
