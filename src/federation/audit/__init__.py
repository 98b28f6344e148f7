"""The tamper-evident audit trail: every cross-site exchange as a FHIR AuditEvent in a
Merkle log in the style of Certificate Transparency (RFC 6962 / RFC 9162).

* :mod:`.merkle` — tree hashing, compact ranges, inclusion and consistency proofs (pure);
* :mod:`.events` — exchange-log rows as FHIR R4 AuditEvents (IHE BALP), canonical bytes;
* :mod:`federation.store.audit_append` — appending leaves in the exchange's own
  transaction (in the store, which calls it);
* :mod:`.log` — reading the log, proofs from stored tiles, signed tree heads;
* :mod:`.tree_heads` — signing tree heads with the gateway's CA-certified key;
* :mod:`.verify` — recomputing the whole log from the store (administrators);
* :mod:`.receipts` — a node's receipts: fetched, checked, kept, and a forked log caught;
* :mod:`.service` — the ``Audit`` gRPC service (tree heads, proofs, receipts);
* :mod:`.refusals` — calls the role policy refused, logged and audited too;
* :mod:`.reports` — administrators' reports and anomaly rules; :mod:`.http` their API;
* :mod:`.cli` — ``federation audit verify|report|sign`` and ``federation keys …``.
"""
