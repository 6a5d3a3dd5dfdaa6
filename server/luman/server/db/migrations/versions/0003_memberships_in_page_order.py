"""memberships in page order

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 01:47:01.324384
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ListMembers reads an organization's members in (join time, user id) order.
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.create_index(
            "ix_memberships_organization_id_create_time_user_id",
            ["organization_id", "create_time", "user_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_index("ix_memberships_organization_id_create_time_user_id")
