"""Audit trail: the Merkle log of AuditEvents (head, leaves, tiles), which nodes took part
in each exchange, and signed tree heads.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 04:00:00+00:00
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    head = sa.table("audit_head", sa.column("id", sa.Integer()),
                    sa.column("tree_size", sa.BigInteger()),
                    sa.column("root_hash", sa.LargeBinary()),
                    sa.column("frontier", sa.LargeBinary()), sa.column("updated_at", TS))
    # the empty tree: MTH({}) = SHA-256() (RFC 6962 §2.1)
    op.bulk_insert(head, [{"id": 1, "tree_size": 0, "root_hash": hashlib.sha256(b"").digest(),
                           "frontier": b"", "updated_at": dt.datetime.now(dt.UTC)}])
    op.create_table(
        "audit_leaf",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("exchange_id", sa.BigInteger(), nullable=True),
        sa.Column("leaf", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_audit_leaf"),
    )
    op.create_index("ix_audit_leaf_exchange_id", "audit_leaf", ["exchange_id"])
    op.create_table(
        "audit_tile",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name="pk_audit_tile"),
    )
    op.create_table(
        "audit_party",
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("leaf_idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("site_id", "leaf_idx", name="pk_audit_party"),
    )
    op.create_table(
        "audit_tree_head",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("signer_cert", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name="pk_audit_tree_head"),
    )


def downgrade() -> None:
    for table in ("audit_tree_head", "audit_party", "audit_tile", "audit_leaf", "audit_head"):
        op.drop_table(table)
