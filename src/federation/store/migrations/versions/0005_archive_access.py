"""Regional archive access and research export: archive_consent (patients' FHIR Consents),
export_job and export_file (FHIR Bulk Data jobs and their NDJSON output), and
site_resource.dedup_keys (what makes two sites' resources the same, computed on storing).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 04:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("site_resource", sa.Column("dedup_keys", sa.Text(), nullable=True))
    op.create_table(
        "archive_consent",
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("person_id", sa.String(64), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("consent_id", name="pk_archive_consent"),
    )
    op.create_index("ix_archive_consent_person_id", "archive_consent", ["person_id"])
    op.create_table(
        "export_job",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requester_site", sa.String(64), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(500), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_export_job"),
    )
    op.create_index("ix_export_job_status", "export_job", ["status"])
    op.create_table(
        "export_file",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["export_job.job_id"],
                                name="fk_export_file_job_id_export_job"),
        sa.PrimaryKeyConstraint("job_id", "resource_type", "part", name="pk_export_file"),
    )


def downgrade() -> None:
    op.drop_table("export_file")
    op.drop_index("ix_export_job_status", table_name="export_job")
    op.drop_table("export_job")
    op.drop_index("ix_archive_consent_person_id", table_name="archive_consent")
    op.drop_table("archive_consent")
    with op.batch_alter_table("site_resource") as batch:
        batch.drop_column("dedup_keys")
