"""A staff assertion's ``jti`` is used once (RFC 7523 §3), on SQLite and PostgreSQL: the
first use is recorded, a replay is refused, a used ``jti`` is forgotten once expired."""

from __future__ import annotations

import datetime as dt

import pytest

from federation.errors import Conflict
from federation.store import GatewayStore

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
LATER = T0 + dt.timedelta(minutes=5)


def test_first_use_passes_and_a_replay_is_refused(sites: GatewayStore) -> None:
    sites.consume_assertion("jti-1", "county-a", LATER, T0)
    sites.consume_assertion("jti-2", "county-a", LATER, T0)      # another assertion
    with pytest.raises(Conflict) as refused:
        sites.consume_assertion("jti-1", "county-a", LATER, T0 + dt.timedelta(seconds=1))
    assert refused.value.code == "assertion-replayed"
    assert "already used" in refused.value.message


def test_an_expired_use_is_forgotten(sites: GatewayStore) -> None:
    sites.consume_assertion("jti-1", "county-a", LATER, T0)
    # past its expiry the assertion itself is refused by its exp claim; its row goes
    sites.consume_assertion("jti-1", "county-a", LATER + dt.timedelta(minutes=5),
                            LATER + dt.timedelta(seconds=1))
