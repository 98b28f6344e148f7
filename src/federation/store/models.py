"""The gateway store's tables, and the frozen rows the store hands out instead of them.

Most tables hold the gateway's own state — the consortium registry, node liveness, the
exchange log and the inbound work-item queue. ``site_resource`` and ``feed_cursor`` are
the regional archive's replica of each site's FHIR resources, filled from the nodes'
change feeds (:mod:`federation.archive`). The ``identity_*`` tables are the master patient
index (:mod:`federation.identity`). ORM objects stay inside the store modules;
callers get the plain frozen dataclasses at the bottom of this module.

Timestamps are ``timestamp with time zone`` on PostgreSQL. SQLite has no zone, so
:class:`UtcDateTime` writes UTC and reads naive values back as aware UTC: every datetime
that leaves the store is aware UTC on both backends.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

__all__ = [
    "TIERS", "NODE_STATES", "REQUESTER_KINDS", "OUTCOMES", "WORK_KINDS",
    "UtcDateTime", "StoreModel", "metadata",
    "Site", "Node", "NodeEvent", "ExchangeLog", "WorkItem", "SiteResource", "FeedCursor",
    "IdentityPerson", "IdentityRecord", "IdentityBlock", "IdentityEvent", "IdentityReview",
    "IdentityNoMatch", "IdentityModel", "ArchiveConsent", "ExportJob", "ExportFile",
    "WorkflowTask", "WorkflowEvent", "WorkflowResource", "WorkflowMessage", "WorkflowNotice",
    "WorkflowJob",
    "AuditHead", "AuditLeaf", "AuditTile", "AuditParty", "AuditTreeHead", "AuditVerification",
    "SiteRow", "NodeRow", "NodeEventRow", "ExchangeEntry", "WorkItemRow",
]

TIERS = ("township", "county", "city")
NODE_STATES = ("online", "unreachable", "offline")
REQUESTER_KINDS = ("node", "operator", "user", "gateway")
OUTCOMES = ("ok", "error", "timeout", "refused")
WORK_KINDS = ("referral", "consult", "report", "notice")

# Named constraints keep future migrations (SQLite batch mode especially) deterministic.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; SQLite only auto-increments an INTEGER primary key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """``DateTime(timezone=True)`` that refuses naive input and always returns aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the gateway store; pass an aware UTC one")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: stored as UTC wall-clock time
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class StoreModel(SQLModel):
    """Base of the store's tables: their own metadata, with a naming convention."""

    metadata = MetaData(naming_convention=NAMING)


metadata = StoreModel.metadata


class Site(StoreModel, table=True):
    __tablename__ = "site"

    site_id: str = Field(sa_type=String(64), primary_key=True)
    name: str = Field(sa_type=String(200))
    tier: str = Field(sa_type=String(16))
    parent_site_id: str | None = Field(
        default=None, sa_type=String(64), foreign_key="site.site_id", nullable=True
    )
    created_at: dt.datetime = Field(sa_type=UtcDateTime)


class Node(StoreModel, table=True):
    __tablename__ = "node"

    site_id: str = Field(sa_type=String(64), primary_key=True, foreign_key="site.site_id")
    endpoint: str = Field(sa_type=String(255))
    state: str = Field(sa_type=String(16))
    cert_serial: str = Field(sa_type=String(128))
    cert_fingerprint: str = Field(sa_type=String(128))
    software_version: str = Field(sa_type=String(64))
    capabilities: str = Field(sa_type=Text)  # JSON list of strings
    registered_at: dt.datetime = Field(sa_type=UtcDateTime)
    last_heartbeat_at: dt.datetime = Field(sa_type=UtcDateTime)
    state_changed_at: dt.datetime = Field(sa_type=UtcDateTime)
    registrations: int = Field(default=0)
    heartbeat_seq: int = Field(default=0, sa_type=BigInteger)


class NodeEvent(StoreModel, table=True):
    __tablename__ = "node_event"

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    site_id: str = Field(sa_type=String(64), foreign_key="site.site_id", index=True)
    at: dt.datetime = Field(sa_type=UtcDateTime)
    from_state: str | None = Field(default=None, sa_type=String(16), nullable=True)
    to_state: str = Field(sa_type=String(16))
    reason: str = Field(sa_type=String(200))


class ExchangeLog(StoreModel, table=True):
    __tablename__ = "exchange_log"
    # the audit search (:mod:`federation.audit.search`): "everything about this patient"
    # and "everything this person did", newest first within a time window
    __table_args__ = (Index("ix_exchange_log_patient_ref_at", "patient_ref", "at"),
                      Index("ix_exchange_log_requester_id_at", "requester_id", "at"))

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    at: dt.datetime = Field(sa_type=UtcDateTime, index=True)
    correlation_id: str = Field(sa_type=String(64), index=True)
    requester_kind: str = Field(sa_type=String(16))
    requester_id: str = Field(sa_type=String(200))
    requester_site: str | None = Field(default=None, sa_type=String(64), nullable=True, index=True)
    target_site: str | None = Field(default=None, sa_type=String(64), nullable=True, index=True)
    operation: str = Field(sa_type=String(128))
    purpose: str | None = Field(default=None, sa_type=String(32), nullable=True)
    patient_ref: str | None = Field(default=None, sa_type=String(128), nullable=True)
    outcome: str = Field(sa_type=String(16))
    status_code: str = Field(sa_type=String(64))
    detail: str = Field(default="", sa_type=String(500))
    records: int = Field(default=0)
    duration_ms: float = Field(default=0.0)


class UsedAssertion(StoreModel, table=True):
    """Staff assertions already exchanged for an access token (RFC 7523 §3: a ``jti``
    is good once). Rows past ``expires_at`` are purged: the assertion is dead anyway."""

    __tablename__ = "used_assertion"

    jti: str = Field(sa_type=String(64), primary_key=True)
    site_id: str = Field(sa_type=String(64))
    expires_at: dt.datetime = Field(sa_type=UtcDateTime, index=True)


class GatewayAccount(StoreModel, table=True):
    """An account the gateway keeps, Argon2id hash only: a consortium account (regional
    administrator, auditor; no site) or a console account of a member site's staff."""

    __tablename__ = "gateway_account"

    user_id: str = Field(sa_type=String(64), primary_key=True)
    roles: str = Field(sa_type=String(200))           # space-separated
    password_hash: str = Field(sa_type=String(200))
    created_at: dt.datetime = Field(sa_type=UtcDateTime)
    disabled: bool = Field(default=False)
    site_id: str | None = Field(default=None, sa_type=String(64), nullable=True)


@dataclass(frozen=True, slots=True)
class AccountRow:
    user_id: str
    roles: frozenset[str]
    password_hash: str
    created_at: dt.datetime
    disabled: bool
    #: the member site whose staff member this is; None for a consortium account
    site_id: str | None = None


class WorkItem(StoreModel, table=True):
    __tablename__ = "work_item"
    # pending_for(): WHERE site_id = ? AND seq > ? ORDER BY seq; the backlog gauges read
    # only the unacknowledged items, which a partial index keeps cheap however long the
    # history grows
    __table_args__ = (
        Index("ix_work_item_site_id_seq", "site_id", "seq"),
        Index("ix_work_item_pending", "site_id", postgresql_where=text("acked_at IS NULL"),
              sqlite_where=text("acked_at IS NULL")),
    )

    seq: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    item_id: str = Field(sa_type=String(64), unique=True)
    site_id: str = Field(sa_type=String(64), foreign_key="site.site_id")
    kind: str = Field(sa_type=String(16))
    source_site: str | None = Field(default=None, sa_type=String(64), nullable=True)
    created_at: dt.datetime = Field(sa_type=UtcDateTime)
    content_type: str = Field(sa_type=String(100))
    payload: bytes = Field(sa_type=LargeBinary)
    delivered_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    acked_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    attempts: int = Field(default=0)


class SiteResource(StoreModel, table=True):
    """The newest version of one site's resource that the gateway has pulled."""

    __tablename__ = "site_resource"
    # the archive reads one person's resources at a site: WHERE site_id = ? AND patient_id = ?,
    # and checks whether they changed from the index alone (ArchiveStore.person_stamp)
    __table_args__ = (Index("ix_site_resource_patient_stamp", "site_id", "patient_id", "seq",
                            "received_at", "deleted"),)

    site_id: str = Field(sa_type=String(64), primary_key=True, foreign_key="site.site_id")
    resource_type: str = Field(sa_type=String(64), primary_key=True)
    resource_id: str = Field(sa_type=String(64), primary_key=True)
    epoch: str = Field(sa_type=String(64))           # the node feed's epoch it came from
    seq: int = Field(sa_type=BigInteger)             # its sequence number in that feed
    deleted: bool = Field(default=False, sa_type=Boolean)
    patient_id: str | None = Field(default=None, sa_type=String(64), nullable=True)
    body: bytes | None = Field(default=None, sa_type=LargeBinary, nullable=True)
    received_at: dt.datetime = Field(sa_type=UtcDateTime)
    #: when two sites report "the same" resource (archive.dedup), computed once on storing
    dedup_keys: str | None = Field(default=None, sa_type=Text, nullable=True)


class FeedCursor(StoreModel, table=True):
    """How far the gateway has read one site's change feed."""

    __tablename__ = "feed_cursor"

    site_id: str = Field(sa_type=String(64), primary_key=True, foreign_key="site.site_id")
    epoch: str = Field(sa_type=String(64))
    after: int = Field(default=0, sa_type=BigInteger)
    node_head: int = Field(default=0, sa_type=BigInteger)
    pulls: int = Field(default=0)
    rejected: int = Field(default=0, sa_type=BigInteger)
    last_pull_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    caught_up_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)


# ---------------------------------------------------------------- master patient index


class IdentityPerson(StoreModel, table=True):
    """A person: what every linked site record belongs to (``federation.identity``)."""

    __tablename__ = "identity_person"

    person_id: str = Field(sa_type=String(40), primary_key=True)
    created_at: dt.datetime = Field(sa_type=UtcDateTime)
    #: set when an administrator merged this person into another; no records remain
    merged_into: str | None = Field(default=None, sa_type=String(40), nullable=True)


class IdentityRecord(StoreModel, table=True):
    """One site's patient record as the EMPI sees it, and the person it belongs to."""

    __tablename__ = "identity_record"
    __table_args__ = (Index("ix_identity_record_person_id", "person_id"),)

    site_id: str = Field(sa_type=String(64), primary_key=True)
    record_id: str = Field(sa_type=String(64), primary_key=True)
    #: the site's own patient number (MRN / 档案号), for PIXm answers
    local_id: str | None = Field(default=None, sa_type=String(128), nullable=True)
    person_id: str | None = Field(default=None, sa_type=String(40), nullable=True,
                                  foreign_key="identity_person.person_id")
    state: str = Field(sa_type=String(16))            # linked | blank | retired
    #: a person decided this record's person (review, manual link, split): automatic
    #: matching never moves it again
    pinned: bool = Field(default=False, sa_type=Boolean)
    features: str = Field(sa_type=Text)               # identity.features JSON
    digest: str = Field(sa_type=String(64))
    updated_at: dt.datetime = Field(sa_type=UtcDateTime)


class IdentityBlock(StoreModel, table=True):
    """Blocking keys (hashed) → records: the online index's only lookup path."""

    __tablename__ = "identity_block"
    __table_args__ = (Index("ix_identity_block_site_id_record_id", "site_id", "record_id"),)

    key: int = Field(sa_type=BigInteger, primary_key=True)
    site_id: str = Field(sa_type=String(64), primary_key=True)
    record_id: str = Field(sa_type=String(64), primary_key=True)


class IdentityEvent(StoreModel, table=True):
    """The history of every record's person: append-only."""

    __tablename__ = "identity_event"
    __table_args__ = (Index("ix_identity_event_site_id_record_id", "site_id", "record_id"),
                      Index("ix_identity_event_person_id", "person_id"),
                      Index("ix_identity_event_previous_person_id", "previous_person_id"))

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    at: dt.datetime = Field(sa_type=UtcDateTime)
    action: str = Field(sa_type=String(24))
    site_id: str | None = Field(default=None, sa_type=String(64), nullable=True)
    record_id: str | None = Field(default=None, sa_type=String(64), nullable=True)
    person_id: str | None = Field(default=None, sa_type=String(40), nullable=True)
    previous_person_id: str | None = Field(default=None, sa_type=String(40), nullable=True)
    weight: float | None = Field(default=None, nullable=True)
    actor: str = Field(sa_type=String(128))
    detail: str = Field(default="{}", sa_type=Text)


class IdentityReview(StoreModel, table=True):
    """A pair the model could not decide: a record and the person it may belong to."""

    __tablename__ = "identity_review"
    __table_args__ = (Index("ix_identity_review_status", "status"),
                      Index("ix_identity_review_site_id_record_id", "site_id", "record_id"))

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    site_id: str = Field(sa_type=String(64))
    record_id: str = Field(sa_type=String(64))
    candidate_person_id: str = Field(sa_type=String(40))
    candidate_site_id: str = Field(sa_type=String(64))
    candidate_record_id: str = Field(sa_type=String(64))
    weight: float
    reason: str = Field(sa_type=String(64))
    detail: str = Field(default="{}", sa_type=Text)
    status: str = Field(sa_type=String(16))           # open | accepted | rejected | closed
    created_at: dt.datetime = Field(sa_type=UtcDateTime)
    decided_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    decided_by: str | None = Field(default=None, sa_type=String(128), nullable=True)


class IdentityNoMatch(StoreModel, table=True):
    """'Not the same person', as a reviewer said it: never undone by automatic matching."""

    __tablename__ = "identity_no_match"

    a_site_id: str = Field(sa_type=String(64), primary_key=True)
    a_record_id: str = Field(sa_type=String(64), primary_key=True)
    b_site_id: str = Field(sa_type=String(64), primary_key=True)
    b_record_id: str = Field(sa_type=String(64), primary_key=True)
    at: dt.datetime = Field(sa_type=UtcDateTime)
    actor: str = Field(sa_type=String(128))


class IdentityModel(StoreModel, table=True):
    """Linkage models the EMPI has used; the newest active one scores."""

    __tablename__ = "identity_model"

    version: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    created_at: dt.datetime = Field(sa_type=UtcDateTime)
    params: str = Field(sa_type=Text)
    note: str = Field(default="", sa_type=Text)
    actor: str = Field(sa_type=String(128))


# ---------------------------------------------------------------- workflows (referral, consult)


class WorkflowTask(StoreModel, table=True):
    """One FHIR Task of a workflow (:mod:`federation.workflow`): its state, its parties,
    and the moments turnaround reports and time limits need. ``version`` grows by one
    with every event; moves lock the row (``FOR UPDATE``)."""

    __tablename__ = "workflow_task"
    __table_args__ = (
        UniqueConstraint("requester_site", "request_id"),   # idempotent create
        Index("ix_workflow_task_workflow_status", "workflow", "status"),
        Index("ix_workflow_task_owner_site", "owner_site"),
        Index("ix_workflow_task_requester_site", "requester_site"),
        Index("ix_workflow_task_person_id", "person_id"),
        Index("ix_workflow_task_ack_due_at", "ack_due_at"),
        Index("ix_workflow_task_assignee", "assignee"),
    )

    task_id: str = Field(sa_type=String(40), primary_key=True)
    workflow: str = Field(sa_type=String(16))
    category: str = Field(sa_type=String(32))
    status: str = Field(sa_type=String(16))
    business_status: str = Field(sa_type=String(32))
    version: int = Field(default=1)
    requester_site: str = Field(sa_type=String(64), foreign_key="site.site_id")
    requester_user: str = Field(sa_type=String(128))
    owner_site: str = Field(sa_type=String(64), foreign_key="site.site_id")
    owner_department: str | None = Field(default=None, sa_type=String(64), nullable=True)
    patient_id: str = Field(sa_type=String(64))       # the FHIR Patient id at the requester
    person_id: str | None = Field(default=None, sa_type=String(40), nullable=True)
    urgency: str = Field(sa_type=String(16))
    request_id: str | None = Field(default=None, sa_type=String(64), nullable=True)
    based_on: str | None = Field(default=None, sa_type=String(40), nullable=True)
    replaces: str | None = Field(default=None, sa_type=String(40), nullable=True)
    attributes: str = Field(default="{}", sa_type=Text)
    created_at: dt.datetime = Field(sa_type=UtcDateTime)
    updated_at: dt.datetime = Field(sa_type=UtcDateTime)
    ack_due_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    complete_due_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime,
                                                nullable=True)
    acknowledged_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime,
                                                nullable=True)
    completed_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    closed_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    escalated_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    #: the member of staff the task is assigned to (``<site>/<user>``): a consult's claimant
    assignee: str | None = Field(default=None, sa_type=String(128), nullable=True)


class WorkflowEvent(StoreModel, table=True):
    """A task's history, append-only: one row per move (``version`` = the task's after it)."""

    __tablename__ = "workflow_event"
    __table_args__ = (UniqueConstraint("task_id", "version"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    task_id: str = Field(sa_type=String(40), foreign_key="workflow_task.task_id")
    version: int
    at: dt.datetime = Field(sa_type=UtcDateTime)
    action: str = Field(sa_type=String(32))
    from_status: str | None = Field(default=None, sa_type=String(16), nullable=True)
    from_business: str | None = Field(default=None, sa_type=String(32), nullable=True)
    to_status: str = Field(sa_type=String(16))
    to_business: str = Field(sa_type=String(32))
    actor: str = Field(sa_type=String(200))
    actor_site: str | None = Field(default=None, sa_type=String(64), nullable=True)
    note: str | None = Field(default=None, sa_type=Text, nullable=True)
    detail: str = Field(default="{}", sa_type=Text)


class WorkflowResource(StoreModel, table=True):
    """FHIR resources a task carries (ServiceRequest, Consent, the packet Bundle,
    Appointment, the result, a CarePlan), newest version by name."""

    __tablename__ = "workflow_resource"

    task_id: str = Field(sa_type=String(40), primary_key=True,
                         foreign_key="workflow_task.task_id")
    name: str = Field(sa_type=String(64), primary_key=True)
    body: str = Field(sa_type=Text)
    updated_at: dt.datetime = Field(sa_type=UtcDateTime)


class WorkflowMessage(StoreModel, table=True):
    """Which task (and which of its events) a work item in a node inbox belongs to: the
    durable outbox is ``work_item``, written in the same transaction as the move."""

    __tablename__ = "workflow_message"
    __table_args__ = (Index("ix_workflow_message_task_id", "task_id"),)

    item_id: str = Field(sa_type=String(64), primary_key=True)
    task_id: str = Field(sa_type=String(40), foreign_key="workflow_task.task_id")
    version: int
    site_id: str = Field(sa_type=String(64))
    purpose: str = Field(sa_type=String(24))
    created_at: dt.datetime = Field(sa_type=UtcDateTime)


class WorkflowNotice(StoreModel, table=True):
    """An alert (a missed time limit) for a site's duty list or the regional admins."""

    __tablename__ = "workflow_notice"
    __table_args__ = (Index("ix_workflow_notice_audience", "audience"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    task_id: str = Field(sa_type=String(40), foreign_key="workflow_task.task_id")
    at: dt.datetime = Field(sa_type=UtcDateTime)
    audience: str = Field(sa_type=String(80))
    reason: str = Field(sa_type=String(300))
    item_id: str | None = Field(default=None, sa_type=String(64), nullable=True)


class WorkflowJob(StoreModel, table=True):
    """Work the gateway owes a task after its move committed (e.g. assembling a
    referral's packet from the origin node): leased by one replica at a time, retried
    with backoff until done."""

    __tablename__ = "workflow_job"
    __table_args__ = (Index("ix_workflow_job_due_at", "due_at"),)

    task_id: str = Field(sa_type=String(40), primary_key=True,
                         foreign_key="workflow_task.task_id")
    kind: str = Field(sa_type=String(24), primary_key=True)
    due_at: dt.datetime = Field(sa_type=UtcDateTime)
    leased_until: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, sa_type=String(300), nullable=True)
    done_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)


# ---------------------------------------------------------------- audit trail


class AuditHead(StoreModel, table=True):
    """The audit log's head (one row, id 1): size, root and compact range (frontier).

    Every append locks this row, which serialises leaf numbering across replicas."""

    __tablename__ = "audit_head"

    id: int = Field(sa_type=Integer, primary_key=True)
    tree_size: int = Field(default=0, sa_type=BigInteger)
    root_hash: bytes = Field(sa_type=LargeBinary)
    frontier: bytes = Field(sa_type=LargeBinary)    # 32 bytes per set bit of tree_size
    updated_at: dt.datetime = Field(sa_type=UtcDateTime)


class AuditLeaf(StoreModel, table=True):
    """One leaf of the Merkle log: a FHIR AuditEvent (canonical JSON) and its leaf hash."""

    __tablename__ = "audit_leaf"

    idx: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    exchange_id: int | None = Field(default=None, sa_type=BigInteger, nullable=True,
                                    index=True)
    leaf: bytes = Field(sa_type=LargeBinary)
    leaf_hash: bytes = Field(sa_type=LargeBinary)


class AuditTile(StoreModel, table=True):
    """Hashes of perfect subtrees at every 4th level (2**4, 2**8, 2**12 … leaves): a proof
    in a log of millions of leaves reads at most 16 hashes per path step, never them all."""

    __tablename__ = "audit_tile"

    level: int = Field(sa_type=Integer, primary_key=True, sa_column_kwargs={"autoincrement": False})
    idx: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    hash: bytes = Field(sa_type=LargeBinary)


class AuditParty(StoreModel, table=True):
    """Which nodes took part in the exchange a leaf records (they get its receipt)."""

    __tablename__ = "audit_party"

    site_id: str = Field(sa_type=String(64), primary_key=True)
    leaf_idx: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})


class AuditTreeHead(StoreModel, table=True):
    """A signed tree head (RFC 6962 §3.5): one per tree size, signed by a gateway."""

    __tablename__ = "audit_tree_head"

    tree_size: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    root_hash: bytes = Field(sa_type=LargeBinary)
    timestamp_ms: int = Field(sa_type=BigInteger)
    signature: bytes = Field(sa_type=LargeBinary)
    signer_cert: str = Field(sa_type=Text)         # PEM of the signing gateway certificate


class AuditVerification(StoreModel, table=True):
    """A run of the audit log's verification (``POST /api/audit/verify``): kept in the
    store, so every gateway replica answers "when was the log last verified, and how did
    it go" the same way. Append-only; the newest row is the current status."""

    __tablename__ = "audit_verification"

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    verified_at: dt.datetime = Field(sa_type=UtcDateTime, index=True)
    verified_by: str = Field(sa_type=String(200))
    ok: bool = Field(sa_type=Boolean)
    entries: int = Field(default=0, sa_type=BigInteger)
    tree_size: int = Field(default=0, sa_type=BigInteger)
    root_hash: str = Field(sa_type=String(64))
    findings: int = Field(default=0)
    first_bad_entry: str | None = Field(default=None, sa_type=Text, nullable=True)  # JSON
    message: str = Field(sa_type=String(500))
    duration_ms: float = Field(default=0.0)


# ---------------------------------------------------------------- rows handed to callers


class ArchiveConsent(StoreModel, table=True):
    """A patient's FHIR Consent about the regional archive (which sites or categories of
    their record others may not see), as recorded by authorised staff."""

    __tablename__ = "archive_consent"

    consent_id: str = Field(sa_type=String(64), primary_key=True)
    person_id: str = Field(sa_type=String(64), index=True)  # the EMPI person at recording
    site_id: str = Field(sa_type=String(64))                 # the Patient record it names
    # every archive read looks the patient's Consents up by person and by record
    record_id: str = Field(sa_type=String(64), index=True)
    status: str = Field(sa_type=String(16))
    body: bytes = Field(sa_type=LargeBinary)                 # the FHIR Consent JSON
    recorded_at: dt.datetime = Field(sa_type=UtcDateTime)
    recorded_by: str = Field(sa_type=String(200))


class ExportJob(StoreModel, table=True):
    """A FHIR Bulk Data export (research, de-identified). Any replica answers its status
    and files; the one holding the lease runs it (a lapsed lease is taken over)."""

    __tablename__ = "export_job"

    job_id: str = Field(sa_type=String(64), primary_key=True)
    status: str = Field(sa_type=String(16), index=True)   # accepted|running|completed|failed
    requested_by: str = Field(sa_type=String(200))
    requester_site: str = Field(sa_type=String(64))
    request: str = Field(sa_type=Text)                    # JSON: cohort, types
    created_at: dt.datetime = Field(sa_type=UtcDateTime)
    updated_at: dt.datetime = Field(sa_type=UtcDateTime)
    lease_owner: str | None = Field(default=None, sa_type=String(64), nullable=True)
    lease_until: dt.datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    attempts: int = Field(default=0)
    error: str = Field(default="", sa_type=String(500))
    output: str = Field(default="[]", sa_type=Text)       # JSON: [{type, count, part}]


class ExportFile(StoreModel, table=True):
    """One NDJSON output file of an export job (kept in the store: every replica serves it)."""

    __tablename__ = "export_file"

    job_id: str = Field(sa_type=String(64), primary_key=True, foreign_key="export_job.job_id")
    resource_type: str = Field(sa_type=String(64), primary_key=True)
    part: int = Field(primary_key=True)
    count: int = Field(default=0)
    body: bytes = Field(sa_type=LargeBinary)


@dataclass(frozen=True, slots=True)
class SiteRow:
    site_id: str
    name: str
    tier: str
    parent_site_id: str | None
    created_at: dt.datetime

    @classmethod
    def of(cls, m: Site) -> SiteRow:
        return cls(m.site_id, m.name, m.tier, m.parent_site_id, m.created_at)


@dataclass(frozen=True, slots=True)
class NodeRow:
    site_id: str
    endpoint: str
    state: str
    cert_serial: str
    cert_fingerprint: str
    software_version: str
    capabilities: tuple[str, ...]
    registered_at: dt.datetime
    last_heartbeat_at: dt.datetime
    state_changed_at: dt.datetime
    registrations: int
    heartbeat_seq: int

    @classmethod
    def of(cls, m: Node) -> NodeRow:
        return cls(
            m.site_id, m.endpoint, m.state, m.cert_serial, m.cert_fingerprint,
            m.software_version, tuple(json.loads(m.capabilities or "[]")), m.registered_at,
            m.last_heartbeat_at, m.state_changed_at, m.registrations, m.heartbeat_seq,
        )


@dataclass(frozen=True, slots=True)
class NodeEventRow:
    id: int
    site_id: str
    at: dt.datetime
    from_state: str | None
    to_state: str
    reason: str

    @classmethod
    def of(cls, m: NodeEvent) -> NodeEventRow:
        assert m.id is not None
        return cls(m.id, m.site_id, m.at, m.from_state, m.to_state, m.reason)


@dataclass(frozen=True, slots=True)
class ExchangeEntry:
    """One exchange the gateway brokered: who asked which site for what, and how it went.

    ``patient_ref`` is a hash, and ``detail`` a message without patient data: the log is
    read by regional administrators, and must never itself become a copy of PHI.
    ``id`` is None until the entry is logged.
    """

    at: dt.datetime
    correlation_id: str
    requester_kind: str
    requester_id: str
    requester_site: str | None
    target_site: str | None
    operation: str
    purpose: str | None
    patient_ref: str | None
    outcome: str
    status_code: str
    detail: str = ""
    records: int = 0
    duration_ms: float = 0.0
    id: int | None = None

    @classmethod
    def of(cls, m: ExchangeLog) -> ExchangeEntry:
        return cls(
            m.at, m.correlation_id, m.requester_kind, m.requester_id, m.requester_site,
            m.target_site, m.operation, m.purpose, m.patient_ref, m.outcome, m.status_code,
            m.detail, m.records, m.duration_ms, m.id,
        )


@dataclass(frozen=True, slots=True)
class WorkItemRow:
    seq: int
    item_id: str
    site_id: str
    kind: str
    source_site: str | None
    created_at: dt.datetime
    content_type: str
    payload: bytes
    delivered_at: dt.datetime | None
    acked_at: dt.datetime | None
    attempts: int

    @classmethod
    def of(cls, m: WorkItem) -> WorkItemRow:
        assert m.seq is not None
        return cls(
            m.seq, m.item_id, m.site_id, m.kind, m.source_site, m.created_at, m.content_type,
            bytes(m.payload), m.delivered_at, m.acked_at, m.attempts,
        )
