"""Two lookups made on every read that scanned their whole table:

* a person's EMPI history is read by both of its person columns, the events that moved a
  record to the person and those that moved one away from it (``previous_person_id``);
  only the first had an index, so every Person view (the console's record page, PIXm)
  scanned the whole event log;
* a patient's Consents are looked up by person or by site record (``record_id``) on
  every archive read; only the person had an index.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 14:20:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_identity_event_previous_person_id", "identity_event",
                    ["previous_person_id"])
    op.create_index("ix_archive_consent_record_id", "archive_consent", ["record_id"])


def downgrade() -> None:
    op.drop_index("ix_archive_consent_record_id", table_name="archive_consent")
    op.drop_index("ix_identity_event_previous_person_id", table_name="identity_event")
