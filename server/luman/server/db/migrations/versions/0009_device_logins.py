"""device logins

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # RFC 8628 device logins (auth/device_logins.py).
    op.create_table(
        "device_logins",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("device_code_hash", sa.String(length=64), nullable=False),
        sa.Column("user_code", sa.String(length=8), nullable=False),
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("scopes", sa.String(length=200), nullable=False),
        sa.Column("host_name", sa.String(length=100), nullable=False),
        sa.Column("client_version", sa.String(length=50), nullable=False),
        sa.Column("os", sa.String(length=50), nullable=False),
        sa.Column("client_ip", sa.String(length=45), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("last_poll_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("approver_id", sa.Uuid(), nullable=True),
        sa.Column("approver_credential", sa.String(length=16), nullable=True),
        sa.Column("approver_credential_id", sa.Uuid(), nullable=True),
        sa.Column("approver_issue_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decide_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_scopes", sa.String(length=200), nullable=True),
        sa.Column("cli_token_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["approver_id"],
            ["users.id"],
            name=op.f("fk_device_logins_approver_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["cli_token_id"],
            ["cli_tokens.id"],
            name=op.f("fk_device_logins_cli_token_id_cli_tokens"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_logins")),
        sa.UniqueConstraint("device_code_hash", name=op.f("uq_device_logins_device_code_hash")),
        sa.UniqueConstraint("user_code", name=op.f("uq_device_logins_user_code")),
    )
    op.create_index(
        op.f("ix_device_logins_expire_time"), "device_logins", ["expire_time"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_device_logins_expire_time"), table_name="device_logins")
    op.drop_table("device_logins")
