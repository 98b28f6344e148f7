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
