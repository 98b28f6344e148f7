"""Staff assertions already exchanged for access tokens (one-time ``jti``, RFC 7523).

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


def downgrade() -> None:
    op.drop_index("ix_used_assertion_expires_at", table_name="used_assertion")
    op.drop_table("used_assertion")
