"""The workflow store on SQLite and PostgreSQL: moves with their history and outbox
messages in one transaction, refused moves that write nothing, optimistic versions,
idempotent creation, search and paging, escalation exactly once — and, on PostgreSQL,
real races: two accepts at once, cancel against accept."""

from __future__ import annotations

import datetime as dt
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from federation.errors import ConcurrentUpdate, InvalidTransition, PermissionDenied
from federation.referral.moves import Details, builder
from federation.referral.state import ReferralState, table_for
from federation.security.principal import SYSTEM, Principal
from federation.store.models import WorkflowEvent, WorkItem
from federation.workflow.records import Message, NewTask, TaskFilter
from federation.workflow.store import WorkflowStore

T0 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
DOCTOR_A = Principal("person", "dr-wang", "county-a", frozenset({"doctor"}))
SPECIALIST = Principal("person", "dr-li", "city-1", frozenset({"specialist"}))
SPECIALIST_2 = Principal("person", "dr-zhou", "city-1", frozenset({"doctor"}))
TOWNSHIP = Principal("person", "dr-ma", "township-a1", frozenset({"doctor"}))


@pytest.fixture
def workflows(sites, engine) -> WorkflowStore:
    return WorkflowStore(engine)


def new_task(n: int = 1, **over) -> NewTask:
    fields = dict(task_id=f"ref-{n:04d}", workflow="referral", category="upward",
                  state=ReferralState.REQUESTED, requester_site="county-a",
                  requester_user="dr-wang", owner_site="city-1", owner_department="cardiology",
                  patient_id=f"p{n}", person_id=f"person-{n % 3}", urgency="urgent",
                  ack_due_at=T0 + dt.timedelta(hours=4))
    return NewTask(**(fields | over))


def create(store: WorkflowStore, n: int = 1, **over):
    task = new_task(n, **over)
    packet = Message(task.owner_site, "referral", "packet",
                     json.dumps({"resourceType": "Bundle", "id": task.task_id}).encode(),
                     task.requester_site)
    return store.create(task, {"ServiceRequest": {"resourceType": "ServiceRequest"}}, [packet],
                        actor=DOCTOR_A, now=T0)[0]


def act(store: WorkflowStore, who: Principal, task_id: str, action: str, d: Details = Details(),
        *, version: int | None = None, now: dt.datetime = T0):
    return store.act(task_id, [(action, builder(action, who, d, now))], who, table_for,
                     workflow="referral", now=now, expected_version=version)


def counts(store: WorkflowStore) -> tuple[int, int]:
    with store.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(WorkItem)).scalar_one(),
                conn.execute(select(func.count()).select_from(WorkflowEvent)).scalar_one())


def accept(at_hour: int = 9) -> Details:
    return Details(appointment_start=T0 + dt.timedelta(hours=at_hour), admission_note="bed 12")


def test_a_referral_closes_its_loop_with_history_and_ordered_messages(workflows):
    create(workflows)
    assert workflows.get("ref-0001", "referral").business_status == "awaiting-triage"
    act(workflows, SPECIALIST, "ref-0001", "accept", accept())
    act(workflows, SPECIALIST, "ref-0001", "book", accept(10))
    act(workflows, SPECIALIST, "ref-0001", "start")
    done = act(workflows, SPECIALIST, "ref-0001", "complete",
               Details(result_text="STEMI treated; PCI to LAD."))
    assert (done.status, done.business_status, done.version) == ("completed", "result-sent", 5)
    assert done.acknowledged_at == done.completed_at == T0 and done.closed_at is None
    closed = act(workflows, SYSTEM, "ref-0001", "receive-result")
    assert (closed.business_status, closed.closed_at) == ("closed", T0)
    history = workflows.history("ref-0001")
    assert [e.action for e in history] == ["create", "accept", "book", "start", "complete",
                                           "receive-result"]
    assert [e.version for e in history] == [1, 2, 3, 4, 5, 6]
    deliveries = workflows.deliveries("ref-0001")
    assert [(d.site_id, d.purpose) for d in deliveries] == [
        ("city-1", "packet"), ("county-a", "status"), ("county-a", "status"),
        ("county-a", "status"), ("county-a", "result"),
        ("county-a", "status"), ("city-1", "status")]   # the gateway closed it: both hear
    assert workflows.resources("ref-0001")["Result"]["resourceType"] == "DocumentReference"
    assert workflows.message(deliveries[4].item_id) == ("ref-0001", "county-a", "result")


def test_refused_moves_write_nothing(workflows):
    create(workflows)
    before = counts(workflows)
    with pytest.raises(InvalidTransition, match="cannot complete referral ref-0001"):
        act(workflows, SPECIALIST, "ref-0001", "complete", Details(result_text="x"))
    with pytest.raises(PermissionDenied, match="township-a1"):
        act(workflows, TOWNSHIP, "ref-0001", "accept", accept())
    with pytest.raises(PermissionDenied):   # the requester cannot accept its own referral
        act(workflows, DOCTOR_A, "ref-0001", "accept", accept())
    assert counts(workflows) == before
    task = workflows.get("ref-0001", "referral")
    assert (task.version, task.business_status) == (1, "awaiting-triage")


def test_a_failing_second_step_undoes_the_first(workflows):
    create(workflows)
    before = counts(workflows)
    steps = [("accept", builder("accept", SPECIALIST, accept(), T0)),
             ("complete", builder("complete", SPECIALIST, Details(result_text="x"), T0))]
    with pytest.raises(InvalidTransition):
        workflows.act("ref-0001", steps, SPECIALIST, table_for, workflow="referral", now=T0)
    assert counts(workflows) == before
    assert workflows.get("ref-0001", "referral").version == 1


def test_stale_version_is_a_concurrent_update(workflows):
    create(workflows)
    act(workflows, SPECIALIST, "ref-0001", "note", Details(note="need the ECG"), version=1)
    with pytest.raises(ConcurrentUpdate, match="version 2, you had version 1"):
        act(workflows, SPECIALIST, "ref-0001", "accept", accept(), version=1)


def test_create_is_idempotent_on_request_id(workflows):
    first, created = workflows.create(new_task(1, request_id="req-1"), {}, [], actor=DOCTOR_A,
                                      now=T0)
    again, created_again = workflows.create(new_task(2, request_id="req-1"), {}, [],
                                            actor=DOCTOR_A, now=T0)
    assert created and not created_again and again.task_id == first.task_id == "ref-0001"
    other, created_other = workflows.create(new_task(3, request_id="req-1",
                                                     requester_site="township-a1"), {}, [],
                                            actor=TOWNSHIP, now=T0)
    assert created_other and other.task_id == "ref-0003"   # the key is per site


def test_search_filters_and_pages(workflows):
    for n in range(1, 8):
        create(workflows, n, owner_site="city-1" if n % 2 else "county-b",
               urgency="routine" if n < 4 else "urgent")
    act(workflows, SPECIALIST, "ref-0001", "accept", accept())
    rows, total = workflows.search("referral", TaskFilter(owner_sites=("city-1",)), limit=2,
                                   sort="created")
    assert total == 4 and [r.task_id for r in rows] == ["ref-0001", "ref-0003"]
    rows, _ = workflows.search("referral", TaskFilter(owner_sites=("city-1",)), offset=2,
                               limit=2, sort="created")
    assert [r.task_id for r in rows] == ["ref-0005", "ref-0007"]
    rows, total = workflows.search("referral", TaskFilter(statuses=("accepted",)))
    assert [r.task_id for r in rows] == ["ref-0001"] and total == 1
    _, total = workflows.search("referral", TaskFilter(urgencies=("routine",),
                                                       person_ids=("person-1",)))
    assert total == 1
    _, total = workflows.search("referral", TaskFilter(involving_site="county-b"))
    assert total == 3


def test_escalation_happens_once_and_only_for_unacknowledged(workflows):
    create(workflows, 1)
    create(workflows, 2)
    create(workflows, 3, ack_due_at=T0 + dt.timedelta(days=2))
    act(workflows, SPECIALIST, "ref-0002", "accept", accept())

    def notices(row):
        return [("site:city-1", "late", Message("city-1", "notice", "escalation", b"{}")),
                ("regional-admin", "late", None),
                ("site:county-a", "late", Message("county-a", "notice", "escalation", b"{}"))]

    later = T0 + dt.timedelta(hours=5)
    done = workflows.escalate_overdue("referral", later, notices)
    assert [r.task_id for r in done] == ["ref-0001"]
    assert workflows.escalate_overdue("referral", later, notices) == []
    task = workflows.get("ref-0001", "referral")
    assert task.escalated_at == later and task.business_status == "awaiting-triage"
    notices_ = workflows.notices()
    assert sorted(n.audience for n in notices_) == ["regional-admin", "site:city-1",
                                                    "site:county-a"]
    assert all((n.item_id is None) == (n.audience == "regional-admin") for n in notices_)
    assert workflows.history("ref-0001")[-1].action == "escalate"
    assert [(d.site_id, d.purpose) for d in workflows.deliveries("ref-0001")] == [
        ("city-1", "packet"), ("city-1", "escalation"), ("county-a", "escalation")]
    _, total = workflows.search("referral", TaskFilter(escalated=True))
    assert total == 1


def _race(workflows, first, second):
    """Run two moves at once (threads released together); their outcomes."""
    gate = threading.Barrier(2)

    def run(move):
        gate.wait()
        try:
            return move()
        except (InvalidTransition, ConcurrentUpdate, PermissionDenied) as exc:
            return exc

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(run, [first, second]))


@pytest.mark.parametrize("rounds", [8])
def test_two_staff_accepting_at_once_exactly_one_wins(workflows, rounds):
    for n in range(1, rounds + 1):
        task_id = create(workflows, n).task_id
        results = _race(
            workflows,
            lambda t=task_id: act(workflows, SPECIALIST, t, "accept", accept()),
            lambda t=task_id: act(workflows, SPECIALIST_2, t, "accept", accept(11)))
        wins = [r for r in results if not isinstance(r, Exception)]
        losses = [r for r in results if isinstance(r, Exception)]
        assert len(wins) == 1 and len(losses) == 1
        assert isinstance(losses[0], InvalidTransition)
        assert "it is accepted" in losses[0].message
        assert [e.action for e in workflows.history(task_id)] == ["create", "accept"]


def test_cancel_racing_accept_has_one_outcome(workflows):
    outcomes = set()
    for n in range(1, 11):
        task_id = create(workflows, n).task_id
        results = _race(
            workflows,
            lambda t=task_id: act(workflows, SPECIALIST, t, "accept", accept()),
            lambda t=task_id: act(workflows, DOCTOR_A, t, "cancel",
                                  Details(reason_text="patient went elsewhere")))
        failed = [r for r in results if isinstance(r, Exception)]
        final = workflows.get(task_id, "referral")
        history = [e.action for e in workflows.history(task_id)]
        assert final.business_status == "cancelled"     # either way, and only one way
        if failed:                # cancel first: the accept met a cancelled referral
            assert isinstance(results[0], InvalidTransition) and len(failed) == 1
            assert "it is cancelled" in results[0].message
            assert history == ["create", "cancel"]
        else:                     # accept first, then the cancel of an accepted referral
            assert history == ["create", "accept", "cancel"]
        outcomes.add(tuple(history))
        # the site queues carry exactly the moves that happened
        assert len(workflows.deliveries(task_id)) == len(history)
    assert outcomes


def _packet(after):
    return [Message(after.owner_site, "referral", "packet", b"{}", after.requester_site)]


def test_jobs_are_leased_once_retried_and_finished_once(workflows):
    task = new_task(1)
    workflows.create(task, {}, [], actor=DOCTOR_A, now=T0, jobs=("packet",))
    lease = dt.timedelta(seconds=60)
    assert workflows.lease_jobs("referral", "packet", T0, lease=lease) == [("ref-0001", 1)]
    assert workflows.lease_jobs("referral", "packet", T0, lease=lease) == []   # leased
    workflows.fail_job("ref-0001", "packet", "site county-a is unreachable",
                       T0 + dt.timedelta(seconds=2))
    assert workflows.pending_jobs("ref-0001") == [("packet", 1, "site county-a is unreachable")]
    assert workflows.lease_jobs("referral", "packet", T0 + dt.timedelta(seconds=1),
                                lease=lease) == []                             # not due yet
    later = T0 + dt.timedelta(seconds=3)
    assert workflows.lease_jobs("referral", "packet", later, lease=lease) == [("ref-0001", 2)]
    # the replica holding the lease dies: after the lease the job is due again
    expired = later + dt.timedelta(seconds=61)
    assert workflows.lease_jobs("referral", "packet", expired, lease=lease) == [("ref-0001", 3)]
    row = workflows.finish_job("ref-0001", "packet", action="attach-packet", now=expired,
                               resources={"Packet": {"resourceType": "Bundle"}},
                               messages=_packet)
    assert row is not None and row.version == 2
    assert workflows.finish_job("ref-0001", "packet", action="attach-packet", now=expired,
                                resources={}, messages=_packet) is None        # once
    assert [d.purpose for d in workflows.deliveries("ref-0001")] == ["packet"]
    assert workflows.pending_jobs("ref-0001") == []
    assert workflows.history("ref-0001")[-1].action == "attach-packet"


def test_a_job_of_an_ended_task_sends_nothing(workflows):
    workflows.create(new_task(1), {}, [], actor=DOCTOR_A, now=T0, jobs=("packet",))
    act(workflows, DOCTOR_A, "ref-0001", "cancel", Details(reason_text="changed mind"))
    assert workflows.finish_job("ref-0001", "packet", action="attach-packet", now=T0,
                                resources={}, messages=_packet) is None
    assert workflows.pending_jobs("ref-0001") == []
    assert [d.purpose for d in workflows.deliveries("ref-0001")] == ["status"]
