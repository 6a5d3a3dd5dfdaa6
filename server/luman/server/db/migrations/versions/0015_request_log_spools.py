"""request-log spool marks (serve --workers: no row lost to SIGKILL)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-11 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_log_spools",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("written", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_request_log_spools")),
    )


def downgrade() -> None:
    op.drop_table("request_log_spools")
