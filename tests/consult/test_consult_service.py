"""The consult's moves on the real store, on SQLite and on PostgreSQL: twenty pool members
claiming at once (one wins), decline and hand-over, escalation of an unclaimed request
when its time limit passes, and one exchange-log row for every state change."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from federation.consult.moves import Details
from federation.consult.rules import load_rules
from federation.consult.service import WORKFLOW, ConsultService
from federation.consult.state import ConsultState
from federation.errors import InvalidInput, InvalidTransition, PermissionDenied
from federation.security.principal import Principal
from federation.store import GatewayStore, make_engine, upgrade
from federation.store.models import ExchangeLog
from federation.workflow.records import NewTask
from federation.workflow.store import WorkflowStore
from tests.pg_util import throwaway_database

T0 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    with throwaway_database() as url:
        yield url


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[ConsultService, GatewayStore, Clock]]:
    upgrade(db_url)
    engine = make_engine(db_url)
    store = GatewayStore(engine)
    for site, tier in (("city-1", "city"), ("county-a", "county")):
        store.upsert_site(site, site, tier)
    clock = Clock()
    yield (ConsultService(store, WorkflowStore(engine), load_rules(), identity=None,
                          clients=None, ca_pem=b"", clock=clock), store, clock)
    engine.dispose()


def specialist(user: str, site: str = "city-1") -> Principal:
    return Principal("person", user, site, frozenset({"specialist"}))


DOCTOR = Principal("person", "dr-wang", "county-a", frozenset({"doctor"}))


def new_consult(service: ConsultService, n: int = 1, urgency: str = "urgent",
                mode: str = "offline") -> str:
    limits = service.rules.time_limits
    kind, pool = ("imaging", "city-1-imaging") if mode == "interactive" else ("ecg", "city-1-ecg")
    task = NewTask(task_id=f"con-test-{n}", workflow=WORKFLOW, category=kind,
                   state=ConsultState.REQUESTED, requester_site="county-a",
                   requester_user="dr-wang", owner_site="city-1", owner_department=pool,
                   patient_id="p-1", person_id="person-1", urgency=urgency,
                   attributes={"mode": mode},
                   ack_due_at=limits.acknowledge_due(urgency, T0),
                   complete_due_at=limits.complete_due(urgency, T0))
    service._workflows.create(task, {}, [], actor=DOCTOR, now=T0)
    return task.task_id


def exchanges(store: GatewayStore, consult_id: str) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        return [(r.operation, r.outcome) for r in conn.execute(
            select(ExchangeLog).where(ExchangeLog.correlation_id == consult_id)
            .order_by(ExchangeLog.id))]


async def test_twenty_concurrent_claims_have_one_winner(world) -> None:
    service, store, _ = world
    cid = await asyncio.to_thread(new_consult, service)
    people = [specialist(f"dr-{n:02d}") for n in range(20)]
    results = await asyncio.gather(*(service.act(p, cid, "claim", Details()) for p in people),
                                   return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and len(losers) == 19
    assert all(isinstance(e, InvalidTransition) and "it is accepted (claimed)" in e.message
               for e in losers)
    view = await service.view(specialist("dr-00"), cid)
    assert view.task.assignee == winners[0].assignee
    assert view.task.version == 2 and view.task.acknowledged_at == T0
    assert [e.action for e in view.history] == ["create", "claim"]
    log = exchanges(store, cid)
    assert log.count(("Consults/claim", "ok")) == 1
    assert log.count(("Consults/claim", "error")) == 19


async def test_decline_and_hand_over(world) -> None:
    service, store, _ = world
    cid = await asyncio.to_thread(new_consult, service)
    li, sun, wu = specialist("dr-li"), specialist("dr-sun"), specialist("dr-wu")
    passed = await service.act(sun, cid, "decline", Details(note="on leave"))
    assert (passed.business_status, passed.assignee) == ("awaiting-claim", None)
    assert passed.attributes["declined_by"] == ["city-1/dr-sun"]
    await service.act(li, cid, "claim", Details())
    with pytest.raises(PermissionDenied, match="assigned to"):
        await service.act(sun, cid, "hand-over", Details(to_user="dr-wu"))
    handed = await service.act(li, cid, "hand-over", Details(to_user="dr-wu"))
    assert (handed.business_status, handed.assignee) == ("claimed", "city-1/dr-wu")
    with pytest.raises(PermissionDenied, match="assigned to"):
        await service.act(li, cid, "decline", Details())
    back = await service.act(wu, cid, "decline", Details(note="needs a cardiologist"))
    assert (back.business_status, back.assignee) == ("awaiting-claim", None)
    again = await service.act(sun, cid, "claim", Details())
    assert again.assignee == "city-1/dr-sun"
    outsider = Principal("person", "dr-ma", "county-a", frozenset({"specialist"}))
    with pytest.raises(PermissionDenied):
        await service.act(outsider, cid, "hand-over", Details(to_user="dr-ma"))
    history = [e.action for e in (await service.view(li, cid)).history]
    assert history == ["create", "decline", "claim", "hand-over", "decline", "claim"]
    assert [op for op, ok in exchanges(store, cid) if ok == "ok"] == [
        "Consults/decline", "Consults/claim", "Consults/hand-over", "Consults/decline",
        "Consults/claim"]


async def test_an_unclaimed_request_escalates_once_when_its_time_limit_passes(world) -> None:
    service, store, clock = world
    cid = await asyncio.to_thread(new_consult, service, 1, "urgent")      # 2 h to claim
    claimed = await asyncio.to_thread(new_consult, service, 2, "urgent")
    await service.act(specialist("dr-li"), claimed, "claim", Details())
    clock.now = T0 + dt.timedelta(hours=1)
    assert await service.escalate() == []
    clock.now = T0 + dt.timedelta(hours=2, minutes=1)
    (row,) = await service.escalate()
    assert row.task_id == cid and row.escalated_at == clock.now
    assert await service.escalate() == []                  # once
    notices = await service.alerts(Principal("person", "admin", "city-1",
                                             frozenset({"regional-admin"})))
    assert sorted(n.audience for n in notices) == ["regional-admin", "site:city-1",
                                                   "site:county-a"]
    assert "was not claimed by" in notices[0].reason
    assert ("Consults/escalate", "ok") in exchanges(store, cid)
    # the pool can still claim it; the escalation stays on record
    late = await service.act(specialist("dr-sun"), cid, "claim", Details())
    assert late.escalated_at is not None and late.business_status == "claimed"


async def test_one_specialist_cannot_book_one_slot_twice_even_at_once(world) -> None:
    service, store, _ = world
    li = specialist("dr-li")
    first, second, third = [await asyncio.to_thread(new_consult, service, n, mode="interactive")
                            for n in (1, 2, 3)]
    for cid in (first, second, third):
        await service.act(li, cid, "claim", Details())
    slot = service.rules.pool("city-1-imaging").slots.upcoming(T0, 2)
    results = await asyncio.gather(
        *(service.act(li, cid, "schedule", Details(slot_start=slot[0]))
          for cid in (first, second)), return_exceptions=True)
    booked = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(booked) == 1 and len(refused) == 1, results
    assert isinstance(refused[0], InvalidInput) and "already have a session" in refused[0].message
    assert "choose another slot" in refused[0].message
    # the next slot is free; another specialist's booking of the first slot is no clash
    other = booked[0].task_id == first and second or first
    assert (await service.act(li, other, "schedule", Details(slot_start=slot[1]))
            ).business_status == "scheduled"
    await service.act(li, third, "hand-over", Details(to_user="dr-zhou"))
    zhou = specialist("dr-zhou")
    assert (await service.act(zhou, third, "schedule", Details(slot_start=slot[0]))
            ).business_status == "scheduled"
