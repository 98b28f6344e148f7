"""Master patient index: persons, site records and their blocking keys, the history of
every link, the review queue, reviewers' "not the same person", and linkage models.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 12:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "identity_person",
        sa.Column("person_id", sa.String(40), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("merged_into", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("person_id", name="pk_identity_person"),
    )
    op.create_table(
        "identity_record",
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("local_id", sa.String(128), nullable=True),
        sa.Column("person_id", sa.String(40), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("features", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["person_id"], ["identity_person.person_id"],
                                name="fk_identity_record_person_id_identity_person"),
        sa.PrimaryKeyConstraint("site_id", "record_id", name="pk_identity_record"),
    )
    op.create_index("ix_identity_record_person_id", "identity_record", ["person_id"])
    op.create_table(
        "identity_block",
        sa.Column("key", sa.BigInteger(), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("key", "site_id", "record_id", name="pk_identity_block"),
    )
    op.create_index("ix_identity_block_site_id_record_id", "identity_block",
                    ["site_id", "record_id"])
    op.create_table(
        "identity_event",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=True),
        sa.Column("record_id", sa.String(64), nullable=True),
        sa.Column("person_id", sa.String(40), nullable=True),
        sa.Column("previous_person_id", sa.String(40), nullable=True),
        sa.Column("weight", sa.Float(), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identity_event"),
    )
    op.create_index("ix_identity_event_site_id_record_id", "identity_event",
                    ["site_id", "record_id"])
    op.create_index("ix_identity_event_person_id", "identity_event", ["person_id"])
    op.create_table(
        "identity_review",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("candidate_person_id", sa.String(40), nullable=False),
        sa.Column("candidate_site_id", sa.String(64), nullable=False),
        sa.Column("candidate_record_id", sa.String(64), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_identity_review"),
    )
    op.create_index("ix_identity_review_status", "identity_review", ["status"])
    op.create_index("ix_identity_review_site_id_record_id", "identity_review",
                    ["site_id", "record_id"])
    op.create_table(
        "identity_no_match",
        sa.Column("a_site_id", sa.String(64), nullable=False),
        sa.Column("a_record_id", sa.String(64), nullable=False),
        sa.Column("b_site_id", sa.String(64), nullable=False),
        sa.Column("b_record_id", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("a_site_id", "a_record_id", "b_site_id", "b_record_id",
                                name="pk_identity_no_match"),
    )
    op.create_table(
        "identity_model",
        sa.Column("version", BigId, autoincrement=True, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_identity_model"),
    )


def downgrade() -> None:
    for table in ("identity_model", "identity_no_match", "identity_review", "identity_event",
                  "identity_block", "identity_record", "identity_person"):
        op.drop_table(table)
