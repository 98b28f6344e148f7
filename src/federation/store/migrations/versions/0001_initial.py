"""Initial gateway store: site registry, nodes and their events, exchange log, work items.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from the models: a migration must keep meaning what
# it meant when it was written, whatever the models become.
TS = sa.DateTime(timezone=True)


def big_id() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "site",
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("parent_site_id", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["parent_site_id"], ["site.site_id"],
                                name="fk_site_parent_site_id_site"),
        sa.PrimaryKeyConstraint("site_id", name="pk_site"),
    )
    op.create_table(
        "node",
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cert_serial", sa.String(128), nullable=False),
        sa.Column("cert_fingerprint", sa.String(128), nullable=False),
        sa.Column("software_version", sa.String(64), nullable=False),
        sa.Column("capabilities", sa.Text(), nullable=False),
        sa.Column("registered_at", TS, nullable=False),
        sa.Column("last_heartbeat_at", TS, nullable=False),
        sa.Column("state_changed_at", TS, nullable=False),
        sa.Column("registrations", sa.Integer(), nullable=False),
        sa.Column("heartbeat_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.site_id"], name="fk_node_site_id_site"),
        sa.PrimaryKeyConstraint("site_id", name="pk_node"),
    )
    op.create_table(
        "node_event",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.site_id"],
                                name="fk_node_event_site_id_site"),
        sa.PrimaryKeyConstraint("id", name="pk_node_event"),
    )
    op.create_index("ix_node_event_site_id", "node_event", ["site_id"])
    op.create_table(
        "exchange_log",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=False),
        sa.Column("requester_kind", sa.String(16), nullable=False),
        sa.Column("requester_id", sa.String(200), nullable=False),
        sa.Column("requester_site", sa.String(64), nullable=True),
        sa.Column("target_site", sa.String(64), nullable=True),
        sa.Column("operation", sa.String(128), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=True),
        sa.Column("patient_ref", sa.String(128), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exchange_log"),
    )
    for column in ("at", "correlation_id", "requester_site", "target_site"):
        op.create_index(f"ix_exchange_log_{column}", "exchange_log", [column])
    op.create_table(
        "work_item",
        sa.Column("seq", big_id(), autoincrement=True, nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source_site", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("acked_at", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.site_id"], name="fk_work_item_site_id_site"),
        sa.PrimaryKeyConstraint("seq", name="pk_work_item"),
        sa.UniqueConstraint("item_id", name="uq_work_item_item_id"),
    )
    op.create_index("ix_work_item_site_id_seq", "work_item", ["site_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_work_item_site_id_seq", table_name="work_item")
    op.drop_table("work_item")
    for column in ("at", "correlation_id", "requester_site", "target_site"):
        op.drop_index(f"ix_exchange_log_{column}", table_name="exchange_log")
    op.drop_table("exchange_log")
    op.drop_index("ix_node_event_site_id", table_name="node_event")
    op.drop_table("node_event")
    op.drop_table("node")
    op.drop_table("site")
