"""Who acts: principals from person certificates and from nodes vouching for their staff —
the site is always the certificate's."""

from __future__ import annotations

import datetime as dt

import pytest

from federation.errors import InvalidInput, PermissionDenied
from federation.security.identity import PeerIdentity
from federation.security.principal import principal_of

LATER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def peer(role: str, name: str, site: str | None, roles: tuple[str, ...] = ()) -> PeerIdentity:
    return PeerIdentity(role, name, site, "county" if role == "node" else None, "1a", "ff",
                        LATER, roles)


def test_a_person_acts_as_their_certificate_says():
    who = principal_of(peer("person", "dr-wang", "county-a", ("doctor",)))
    assert (who.kind, who.user_id, who.site_id, who.roles) == (
        "person", "dr-wang", "county-a", frozenset({"doctor"}))
    assert who.actor_id == "county-a/dr-wang"
    with pytest.raises(InvalidInput, match="acts for its holder only"):
        principal_of(peer("person", "dr-wang", "county-a", ("doctor",)), ("dr-li", "doctor"))


def test_a_node_vouches_for_its_own_staff_at_its_own_site():
    who = principal_of(peer("node", "county-a", "county-a"), ("dr-wang", "doctor"))
    assert (who.kind, who.site_id, who.roles, who.via) == (
        "node", "county-a", frozenset({"doctor"}), "node")
    assert "via its site's node" in who.describe()
    with pytest.raises(InvalidInput, match="must name the practitioner"):
        principal_of(peer("node", "county-a", "county-a"))
    with pytest.raises(PermissionDenied, match="a node may vouch for"):
        principal_of(peer("node", "county-a", "county-a"), ("boss", "regional-admin"))
    with pytest.raises(InvalidInput, match="staff role"):
        principal_of(peer("node", "county-a", "county-a"), ("dr-wang", "surgeon"))
    with pytest.raises(InvalidInput, match="practitioner id"):
        principal_of(peer("node", "county-a", "county-a"), ("Dr Wang", "doctor"))


def test_operators_hold_no_staff_role_and_gateways_do_not_act():
    assert principal_of(peer("operator", "alice", None)).roles == frozenset()
    with pytest.raises(PermissionDenied):
        principal_of(peer("gateway", "gateway", None))
