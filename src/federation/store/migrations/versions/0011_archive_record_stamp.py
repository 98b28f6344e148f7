"""The archive's per-patient index covers what a paged read checks on every call: the
feed sequence number, the time received and the deleted flag of each of a patient's
rows (:meth:`ArchiveStore.person_stamp`), so that check reads the index alone. It
replaces the (site, patient) index, whose lookups it serves as well.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 13:40:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_site_resource_patient_stamp", "site_resource",
                    ["site_id", "patient_id", "seq", "received_at", "deleted"])
    op.drop_index("ix_site_resource_site_id_patient_id", table_name="site_resource")


def downgrade() -> None:
    op.create_index("ix_site_resource_site_id_patient_id", "site_resource",
                    ["site_id", "patient_id"])
    op.drop_index("ix_site_resource_patient_stamp", table_name="site_resource")
