"""Consortium CA, mutual TLS and peer identity.

* :mod:`.ca` — the CA on disk: issue node/gateway/operator certificates, revoke, CRL.
* :mod:`.identity` — who a certificate names (SAN URIs) and whether the CRL revoked it.
* :mod:`.tls` — gRPC credentials from a certificate folder; the caller of an RPC.
* :mod:`.rotation` — TLS files followed on disk: certificate rotation without a restart.
* :mod:`.signing` — signatures by the gateway's key, verified against the consortium CA.
* :mod:`.privacy` — the key ring that encrypts resident IDs and phones at rest (AES-GCM).
"""

from __future__ import annotations

from federation.security.ca import (
    GATEWAY_SERVER_NAME,
    CertificateAuthority,
    IssuedCertificate,
    IssuedRecord,
    init_ca,
    node_server_name,
)
from federation.security.identity import (
    ROLES,
    TIERS,
    PeerIdentity,
    RevocationList,
    RevokedEntry,
    identity_from_pem,
)
from federation.security.tls import (
    CertificateValidity,
    TlsMaterial,
    channel_credentials,
    check_certificate_validity,
    peer_identity,
    server_credentials,
)

__all__ = [
    "GATEWAY_SERVER_NAME",
    "ROLES",
    "TIERS",
    "CertificateAuthority",
    "CertificateValidity",
    "IssuedCertificate",
    "IssuedRecord",
    "PeerIdentity",
    "RevocationList",
    "RevokedEntry",
    "TlsMaterial",
    "channel_credentials",
    "check_certificate_validity",
    "identity_from_pem",
    "init_ca",
    "node_server_name",
    "peer_identity",
    "server_credentials",
]
