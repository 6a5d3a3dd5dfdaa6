"""sessions and refresh grace

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 04:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # LogoutAll's per-user not-before time.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tokens_not_before", sa.DateTime(timezone=True)))
    # What ListSessions shows of a sign-in. Sign-ins from before this revision show an empty
    # client address and user agent.
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("client_ip", sa.String(length=45), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("user_agent", sa.String(length=256), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("last_refresh_time", sa.DateTime(timezone=True)))
        batch_op.add_column(sa.Column("expire_time", sa.DateTime(timezone=True)))
    # A sign-in lasts as long as its newest refresh token; every sign-in has at least one.
    op.execute(
        "UPDATE login_sessions SET expire_time = COALESCE("
        "(SELECT MAX(r.expire_time) FROM refresh_tokens r WHERE r.session_id = login_sessions.id),"
        " create_time)"
    )
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.alter_column(
            "expire_time", existing_type=sa.DateTime(timezone=True), nullable=False
        )
    # The refresh grace: the pair a used refresh token was exchanged for.
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("successor_jti", sa.Uuid()))
        batch_op.add_column(sa.Column("successor_access_jti", sa.Uuid()))


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_column("successor_access_jti")
        batch_op.drop_column("successor_jti")
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.drop_column("expire_time")
        batch_op.drop_column("last_refresh_time")
        batch_op.drop_column("user_agent")
        batch_op.drop_column("client_ip")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("tokens_not_before")
