"""The exchange log: who asked which site for what, and how it went."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from federation.errors import InvalidInput
from federation.store import ExchangeEntry, GatewayStore

S = dt.timedelta(seconds=1)


@pytest.fixture
def entry(t0: dt.datetime) -> ExchangeEntry:
    return ExchangeEntry(
        at=t0, correlation_id="c0ffee", requester_kind="node", requester_id="county-a",
        requester_site="county-a", target_site="city-1", operation="NodeAgent/SearchPatients",
        purpose="TREAT", patient_ref="sha256:9f86d0", outcome="ok", status_code="OK",
        detail="", records=2, duration_ms=12.5,
    )


def test_logged_entry_reads_back_with_its_id(store: GatewayStore, entry: ExchangeEntry) -> None:
    first = store.log_exchange(entry)
    second = store.log_exchange(replace(entry, correlation_id="beef"))
    assert second > first
    [latest, earliest] = store.list_exchanges()
    assert earliest == replace(entry, id=first)
    assert latest.id == second and latest.at.tzinfo is dt.UTC


def test_list_by_site_since_and_limit(store: GatewayStore, entry: ExchangeEntry,
                                      t0: dt.datetime) -> None:
    store.log_exchange(entry)                                               # county-a → city-1
    store.log_exchange(replace(entry, at=t0 + S, requester_site="county-b",
                               requester_id="county-b", target_site="county-a"))
    store.log_exchange(replace(entry, at=t0 + 2 * S, requester_kind="operator",
                               requester_id="admin", requester_site=None, target_site="county-b"))
    assert [e.at for e in store.list_exchanges(site="county-a")] == [t0 + S, t0]
    assert [e.target_site for e in store.list_exchanges(site="county-b")] == [
        "county-b", "county-a"]
    assert len(store.list_exchanges(since=t0 + S)) == 2
    assert [e.at for e in store.list_exchanges(limit=1)] == [t0 + 2 * S]
    assert store.list_exchanges(site="township-a1") == []


def test_counts_by_outcome(store: GatewayStore, entry: ExchangeEntry) -> None:
    assert store.exchange_counts() == {"ok": 0, "error": 0, "timeout": 0, "refused": 0}
    for outcome in ["ok", "ok", "timeout", "refused"]:
        store.log_exchange(replace(entry, outcome=outcome))
    assert store.exchange_counts() == {"ok": 2, "error": 0, "timeout": 1, "refused": 1}


def test_detail_is_capped_at_500(store: GatewayStore, entry: ExchangeEntry) -> None:
    store.log_exchange(replace(entry, outcome="error", detail="x" * 2000))
    assert len(store.list_exchanges()[0].detail) == 500


@pytest.mark.parametrize("field,value", [("outcome", "maybe"), ("requester_kind", "robot")])
def test_unknown_vocabulary_is_refused(store: GatewayStore, entry: ExchangeEntry, field: str,
                                       value: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        store.log_exchange(replace(entry, **{field: value}))
    assert store.list_exchanges() == []


def test_concurrent_callers_share_commits_and_each_gets_its_own_ids(
        store: GatewayStore, entry: ExchangeEntry) -> None:
    """Group commit: 32 threads × 10 exchanges — every id distinct and each caller's own,
    one AuditEvent leaf per exchange, leaf indexes without a gap, in the log's order."""
    import threading

    from sqlalchemy import text

    barrier = threading.Barrier(32)
    got: dict[int, list[int]] = {}

    def caller(n: int) -> None:
        barrier.wait()
        got[n] = [store.log_exchange(replace(entry, correlation_id=f"c{n}-{k}"))
                  for k in range(10)]

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for n in sorted(got) for i in got[n]]
    assert len(ids) == len(set(ids)) == 320
    with store.engine.connect() as conn:
        mine = dict(conn.execute(text("SELECT id, correlation_id FROM exchange_log")).all())
        leaves = conn.execute(text("SELECT idx, exchange_id FROM audit_leaf ORDER BY idx")).all()
    for n, logged in got.items():               # each caller got the ids of its own rows
        assert [mine[i] for i in logged] == [f"c{n}-{k}" for k in range(10)]
    assert [idx for idx, _ in leaves] == list(range(320))
    assert sorted(e for _, e in leaves) == sorted(ids)
    assert [e for _, e in leaves] == sorted(ids)    # leaves in the order of the log


def test_a_failing_request_in_a_shared_commit_fails_alone(
        store: GatewayStore, entry: ExchangeEntry, monkeypatch) -> None:
    """If the shared transaction fails, each request is retried alone: only the caller
    whose rows cannot be written gets the error."""
    import threading

    real = store._append_log

    def flaky(rows):  # noqa: ANN001, ANN202 - the store's own signature
        if any(r["correlation_id"] == "poison" for r in rows):
            raise RuntimeError("cannot write this one")
        return real(rows)

    monkeypatch.setattr(store, "_append_log", flaky)
    hold = threading.Lock()
    hold.acquire()
    results: dict[str, object] = {}

    def caller(name: str) -> None:
        try:
            results[name] = store.log_exchange(replace(entry, correlation_id=name))
        except RuntimeError as exc:
            results[name] = exc

    # queue three requests behind a writer that waits, so that they share one commit
    with store._log_writer:
        threads = [threading.Thread(target=caller, args=(n,))
                   for n in ("good-1", "poison", "good-2")]
        for t in threads:
            t.start()
        import time
        deadline = time.monotonic() + 5
        while len(store._log_queue) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(store._log_queue) == 3
    for t in threads:
        t.join()
    assert isinstance(results["poison"], RuntimeError)
    assert isinstance(results["good-1"], int) and isinstance(results["good-2"], int)
    assert {e.correlation_id for e in store.list_exchanges()} == {"good-1", "good-2"}
