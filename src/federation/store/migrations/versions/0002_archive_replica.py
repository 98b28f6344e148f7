"""Regional archive replica: site_resource (newest version per site resource) and
feed_cursor (how far each site's change feed has been read).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "site_resource",
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.site_id"],
                                name="fk_site_resource_site_id_site"),
        sa.PrimaryKeyConstraint("site_id", "resource_type", "resource_id",
                                name="pk_site_resource"),
    )
    op.create_index("ix_site_resource_site_id_patient_id", "site_resource",
                    ["site_id", "patient_id"])
    op.create_table(
        "feed_cursor",
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("after", sa.BigInteger(), nullable=False),
        sa.Column("node_head", sa.BigInteger(), nullable=False),
        sa.Column("pulls", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("last_pull_at", TS, nullable=True),
        sa.Column("caught_up_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["site.site_id"],
                                name="fk_feed_cursor_site_id_site"),
        sa.PrimaryKeyConstraint("site_id", name="pk_feed_cursor"),
    )


def downgrade() -> None:
    op.drop_table("feed_cursor")
    op.drop_index("ix_site_resource_site_id_patient_id", table_name="site_resource")
    op.drop_table("site_resource")
