"""People signing in: staff assertions already exchanged for access tokens (one-time
``jti``, RFC 7523) and the consortium accounts the gateway keeps (Argon2id hashes); a
partial index on unacknowledged work items for the backlog gauges.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 03:40:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "used_assertion",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("jti", name="pk_used_assertion"),
    )
    op.create_index("ix_used_assertion_expires_at", "used_assertion", ["expires_at"])
    op.create_table(
        "gateway_account",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("roles", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_gateway_account"),
    )


    op.create_index("ix_work_item_pending", "work_item", ["site_id"],
                    postgresql_where=sa.text("acked_at IS NULL"),
                    sqlite_where=sa.text("acked_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_work_item_pending", table_name="work_item")
    op.drop_table("gateway_account")
    op.drop_index("ix_used_assertion_expires_at", table_name="used_assertion")
    op.drop_table("used_assertion")
