"""service accounts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Credentials for programs, owned by an organization (auth/service_accounts.py); the
    # secret is kept only as its SHA-256, unique so the exchange finds it by hash.
    op.create_table(
        "service_accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scopes", sa.String(length=200), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("secret_hint", sa.String(length=16), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_service_accounts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_accounts")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_service_accounts_secret_hash")),
    )
    # ListServiceAccounts reads an organization's accounts in page order (create time, id).
    op.create_index(
        "ix_service_accounts_organization_id_create_time_id",
        "service_accounts",
        ["organization_id", "create_time", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_service_accounts_organization_id_create_time_id", table_name="service_accounts"
    )
    op.drop_table("service_accounts")
