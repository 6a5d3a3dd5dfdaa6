"""organization slugs and ownership offers

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A renamed organization's former slugs: they resolve to it, and nobody may claim them,
    # until expire_time (ORGANIZATION_SLUG_REDIRECT_DAYS). Deleted with the organization.
    op.create_table(
        "organization_slug_redirects",
        sa.Column("slug", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_slug_redirects_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("slug", name=op.f("pk_organization_slug_redirects")),
    )
    op.create_index(
        op.f("ix_organization_slug_redirects_organization_id"),
        "organization_slug_redirects",
        ["organization_id"],
        unique=False,
    )
    # The pending ownership transfer: at most one per organization (the primary key).
    op.create_table(
        "ownership_offers",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("from_user_id", sa.Uuid(), nullable=False),
        sa.Column("to_user_id", sa.Uuid(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_ownership_offers_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["from_user_id"],
            ["users.id"],
            name=op.f("fk_ownership_offers_from_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["to_user_id"],
            ["users.id"],
            name=op.f("fk_ownership_offers_to_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_ownership_offers")),
    )
    op.create_index(op.f("ix_ownership_offers_from_user_id"), "ownership_offers", ["from_user_id"])
    op.create_index(op.f("ix_ownership_offers_to_user_id"), "ownership_offers", ["to_user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_ownership_offers_to_user_id"), table_name="ownership_offers")
    op.drop_index(op.f("ix_ownership_offers_from_user_id"), table_name="ownership_offers")
    op.drop_table("ownership_offers")
    op.drop_index(
        op.f("ix_organization_slug_redirects_organization_id"),
        table_name="organization_slug_redirects",
    )
    op.drop_table("organization_slug_redirects")
