"""personal token parents

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The token that created each personal token, so that revoking a token revokes what it
    # minted (auth/cli_tokens.py). Tokens issued before this revision have no recorded parent.
    with op.batch_alter_table("cli_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.Uuid(), nullable=True))
        # Revocation looks children up by parent.
        batch_op.create_index("ix_cli_tokens_parent_id", ["parent_id"], unique=False)
        batch_op.create_foreign_key(
            "fk_cli_tokens_parent_id_cli_tokens",
            "cli_tokens",
            ["parent_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("cli_tokens", schema=None) as batch_op:
        batch_op.drop_constraint("fk_cli_tokens_parent_id_cli_tokens", type_="foreignkey")
        batch_op.drop_index("ix_cli_tokens_parent_id")
        batch_op.drop_column("parent_id")
