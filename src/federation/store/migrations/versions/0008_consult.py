"""Remote consultation: a workflow task may be assigned to one member of staff (the
specialist who claimed a consult from their pool). Consults otherwise live in the
workflow tables of 0006 (``workflow = 'consult'``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 07:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_task") as batch:
        batch.add_column(sa.Column("assignee", sa.String(128), nullable=True))
        batch.create_index("ix_workflow_task_assignee", ["assignee"])


def downgrade() -> None:
    with op.batch_alter_table("workflow_task") as batch:
        batch.drop_index("ix_workflow_task_assignee")
        batch.drop_column("assignee")
