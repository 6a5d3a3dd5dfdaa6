"""managed personal tokens

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 04:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Defaults keep the tokens issued before this revision working as they did: read and
    # write, no expiry, no hint (only their hash was ever stored).
    with op.batch_alter_table("cli_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scopes", sa.String(length=200), server_default="read write", nullable=False)
        )
        batch_op.add_column(sa.Column("expire_time", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_use_ip", sa.String(length=45), nullable=True))
        batch_op.add_column(
            sa.Column("hint", sa.String(length=16), server_default="", nullable=False)
        )
        # ListCliTokens reads a user's tokens in page order (create time, id).
        batch_op.create_index(
            "ix_cli_tokens_user_id_create_time_id", ["user_id", "create_time", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("cli_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_cli_tokens_user_id_create_time_id")
        batch_op.drop_column("hint")
        batch_op.drop_column("last_use_ip")
        batch_op.drop_column("expire_time")
        batch_op.drop_column("scopes")
