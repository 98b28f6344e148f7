"""The administrators' console: the audit search's indexes on the exchange log (by
patient hash and by requester, each with time), and the audit log's verification runs.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 10:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_exchange_log_patient_ref_at", "exchange_log", ["patient_ref", "at"])
    op.create_index("ix_exchange_log_requester_id_at", "exchange_log", ["requester_id", "at"])
    op.create_table(
        "audit_verification",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_by", sa.String(200), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("findings", sa.Integer(), nullable=False),
        sa.Column("first_bad_entry", sa.Text(), nullable=True),
        sa.Column("message", sa.String(500), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_verification"),
    )
    op.create_index("ix_audit_verification_verified_at", "audit_verification",
                    ["verified_at"])


def downgrade() -> None:
    op.drop_index("ix_audit_verification_verified_at", "audit_verification")
    op.drop_table("audit_verification")
    op.drop_index("ix_exchange_log_requester_id_at", "exchange_log")
    op.drop_index("ix_exchange_log_patient_ref_at", "exchange_log")
