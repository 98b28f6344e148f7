"""Who acts in a workflow: a member of staff at a site, a node, an operator tool, or the
gateway itself — derived from the caller's certificate, never from what it says alone.

Two ways in for staff, both over mutual TLS:

* a **person certificate** from the consortium CA (``federation ca issue --person``): the
  user id, site and staff roles are all the certificate's;
* a **node acting for its own staff**: the node's certificate gives the site, and the
  request names the practitioner and the role the node vouches for. The site is always
  the certificate's, never the request's, and a node cannot vouch for a regional role.

Operators (tools) read but hold no staff role. The gateway acts as ``system`` for what
it does on its own (time-limit escalations, a node's receipt of a result).
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.errors import InvalidInput, PermissionDenied
from federation.security.identity import (
    SITE_ROLES,
    STAFF_ROLES,
    PeerIdentity,
    validate_name,
    validate_staff_role,
)

__all__ = ["STAFF_ROLES", "NODE_VOUCHED_ROLES", "Principal", "principal_of", "SYSTEM"]

#: roles a node may vouch for on behalf of its own staff (regional roles need a person cert)
NODE_VOUCHED_ROLES = SITE_ROLES


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # 'person' | 'node' | 'operator' | 'system'
    user_id: str
    site_id: str | None
    roles: frozenset[str] = frozenset()
    via: str | None = None  # 'node' when a node vouched for this person

    def describe(self) -> str:
        """``dr-wang (doctor) at county-a`` — for messages and the exchange log."""
        if self.kind == "system":
            return "the gateway"
        roles = f" ({', '.join(sorted(self.roles))})" if self.roles else ""
        where = f" at {self.site_id}" if self.site_id else ""
        via = " via its site's node" if self.via == "node" else ""
        return f"{self.user_id}{roles}{where}{via}"

    @property
    def actor_id(self) -> str:
        """What history rows record: ``county-a/dr-wang``, ``operator:alice``, ``system``."""
        if self.kind == "system":
            return "system"
        if self.kind == "operator":
            return f"operator:{self.user_id}"
        return f"{self.site_id}/{self.user_id}"


#: the gateway acting on its own
SYSTEM = Principal(kind="system", user_id="gateway", site_id=None)


def principal_of(peer: PeerIdentity, acting_for: tuple[str, str] | None = None) -> Principal:
    """The principal of a call: ``acting_for`` is ``(practitioner id, staff role)`` as a
    node sends it for its staff; persons and operators must not send one."""
    if peer.role == "person":
        if acting_for and any(acting_for):
            raise InvalidInput("a person certificate acts for its holder only; leave the "
                               "practitioner fields of the request empty")
        return Principal("person", peer.name, peer.site_id, frozenset(peer.staff_roles))
    if peer.role == "node":
        if not acting_for or not all(acting_for):
            raise InvalidInput(
                f"site {peer.site_id}'s node must name the practitioner it acts for and "
                "their staff role (practitioner.user_id and practitioner.role)")
        user_id, role = acting_for
        validate_name(user_id, "practitioner id")
        validate_staff_role(role)
        if role not in NODE_VOUCHED_ROLES:
            raise PermissionDenied(
                f"a node may vouch for {', '.join(NODE_VOUCHED_ROLES)} only; a {role} acts "
                "with their own person certificate")
        return Principal("node", user_id, peer.site_id, frozenset({role}), via="node")
    if peer.role == "operator":
        return Principal("operator", peer.name, None)
    raise PermissionDenied(f"a {peer.role} certificate does not act in workflows")

