"""audit events

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 07:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The audit log (audit/record.py): append-only, no foreign keys.
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("organization_id", sa.Uuid(), nullable=True),
        sa.Column("target_type", sa.String(length=32), server_default="", nullable=False),
        sa.Column("target_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("client_ip", sa.String(length=45), server_default="", nullable=False),
        sa.Column("user_agent", sa.String(length=256), server_default="", nullable=False),
        sa.Column("request_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("details", sa.Text(), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_time"), "audit_events", ["time"], unique=False)
    # ListAuditEvents pages an account's or an organization's events, newest first.
    op.create_index(
        "ix_audit_events_user_id_time_id",
        "audit_events",
        ["user_id", "time", "id"],
        unique=False,
    )
    op.create_index(
        "ix_audit_events_organization_id_time_id",
        "audit_events",
        ["organization_id", "time", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_organization_id_time_id", table_name="audit_events")
    op.drop_index("ix_audit_events_user_id_time_id", table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_time"), table_name="audit_events")
    op.drop_table("audit_events")
