"""Console accounts of site staff: an account the gateway keeps may belong to a member
site (NULL: a consortium account, as before).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 10:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_account") as batch:
        batch.add_column(sa.Column("site_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateway_account") as batch:
        batch.drop_column("site_id")
