"""identities: accounts at identity providers linked to users, pending provider sign-ins and
links; request_logs.reason

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The ErrorInfo reason of a failed call, beside its status (request_logs/store.py).
    with op.batch_alter_table("request_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(length=64), nullable=True))

    op.create_table(
        "identities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("issuer", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_sign_in_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_identities_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identities")),
        # sub is unique only within its issuer (OIDC Core 5.7).
        sa.UniqueConstraint("provider", "issuer", "subject", name=op.f("uq_identities_provider")),
    )
    op.create_index(op.f("ix_identities_user_id"), "identities", ["user_id"])

    op.create_table(
        "provider_logins",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("user_code", sa.String(length=8), nullable=False),
        sa.Column("client_ip", sa.String(length=45), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("use_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_logins")),
        sa.UniqueConstraint("state_hash", name=op.f("uq_provider_logins_state_hash")),
    )
    op.create_index(op.f("ix_provider_logins_expire_time"), "provider_logins", ["expire_time"])

    op.create_table(
        "identity_links",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("issuer", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("user_code", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("use_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_identity_links_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_identity_links_token_hash")),
    )
    op.create_index(op.f("ix_identity_links_user_id"), "identity_links", ["user_id"])
    op.create_index(op.f("ix_identity_links_expire_time"), "identity_links", ["expire_time"])


def downgrade() -> None:
    op.drop_table("identity_links")
    op.drop_table("provider_logins")
    op.drop_table("identities")
    with op.batch_alter_table("request_logs", schema=None) as batch_op:
        batch_op.drop_column("reason")
