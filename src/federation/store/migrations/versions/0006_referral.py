"""Workflows (two-way referral, later consultation): tasks, their history, the FHIR
resources they carry, the outbox messages that belong to them, time-limit notices, and
the jobs the gateway owes a task (a referral's packet).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 04:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "workflow_task",
        sa.Column("task_id", sa.String(40), nullable=False),
        sa.Column("workflow", sa.String(16), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("business_status", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("requester_site", sa.String(64), nullable=False),
        sa.Column("requester_user", sa.String(128), nullable=False),
        sa.Column("owner_site", sa.String(64), nullable=False),
        sa.Column("owner_department", sa.String(64), nullable=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("person_id", sa.String(40), nullable=True),
        sa.Column("urgency", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("based_on", sa.String(40), nullable=True),
        sa.Column("replaces", sa.String(40), nullable=True),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("ack_due_at", TS, nullable=True),
        sa.Column("complete_due_at", TS, nullable=True),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("escalated_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["requester_site"], ["site.site_id"],
                                name="fk_workflow_task_requester_site_site"),
        sa.ForeignKeyConstraint(["owner_site"], ["site.site_id"],
                                name="fk_workflow_task_owner_site_site"),
        sa.PrimaryKeyConstraint("task_id", name="pk_workflow_task"),
        sa.UniqueConstraint("requester_site", "request_id",
                            name="uq_workflow_task_requester_site_request_id"),
    )
    op.create_index("ix_workflow_task_workflow_status", "workflow_task", ["workflow", "status"])
    op.create_index("ix_workflow_task_owner_site", "workflow_task", ["owner_site"])
    op.create_index("ix_workflow_task_requester_site", "workflow_task", ["requester_site"])
    op.create_index("ix_workflow_task_person_id", "workflow_task", ["person_id"])
    op.create_index("ix_workflow_task_ack_due_at", "workflow_task", ["ack_due_at"])
    op.create_table(
        "workflow_event",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("from_business", sa.String(32), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("to_business", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("actor_site", sa.String(64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["workflow_task.task_id"],
                                name="fk_workflow_event_task_id_workflow_task"),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_event"),
        sa.UniqueConstraint("task_id", "version", name="uq_workflow_event_task_id_version"),
    )
    op.create_table(
        "workflow_resource",
        sa.Column("task_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["workflow_task.task_id"],
                                name="fk_workflow_resource_task_id_workflow_task"),
        sa.PrimaryKeyConstraint("task_id", "name", name="pk_workflow_resource"),
    )
    op.create_table(
        "workflow_message",
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(24), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["workflow_task.task_id"],
                                name="fk_workflow_message_task_id_workflow_task"),
        sa.PrimaryKeyConstraint("item_id", name="pk_workflow_message"),
    )
    op.create_index("ix_workflow_message_task_id", "workflow_message", ["task_id"])
    op.create_table(
        "workflow_notice",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(40), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("audience", sa.String(80), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["workflow_task.task_id"],
                                name="fk_workflow_notice_task_id_workflow_task"),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_notice"),
    )
    op.create_index("ix_workflow_notice_audience", "workflow_notice", ["audience"])
    op.create_table(
        "workflow_job",
        sa.Column("task_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("leased_until", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(300), nullable=True),
        sa.Column("done_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["workflow_task.task_id"],
                                name="fk_workflow_job_task_id_workflow_task"),
        sa.PrimaryKeyConstraint("task_id", "kind", name="pk_workflow_job"),
    )
    op.create_index("ix_workflow_job_due_at", "workflow_job", ["due_at"])


def downgrade() -> None:
    for table in ("workflow_job", "workflow_notice", "workflow_message", "workflow_resource",
                  "workflow_event", "workflow_task"):
        op.drop_table(table)
