"""Signatures by the gateway's CA-certified key, and their verification against the CA.

The gateway signs audit tree heads with the private key of its own TLS certificate
(ECDSA P-256 from ``federation ca issue --gateway``; RSA keys work too). A signature
alone proves nothing: :func:`verify_gateway_signature` also checks that the certificate
that comes with it was issued by the consortium CA, names the gateway role
(``urn:federation:role:gateway``) and was valid when the signature was made — so a tree
head signed by any other key, even a node's certificate from the same CA, is refused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from federation.errors import ConfigError, FederationError, IntegrityError
from federation.security.identity import PeerIdentity, identity_from_pem
from federation.security.tls import TlsMaterial

__all__ = ["Signer", "verify_certified_signature", "verify_gateway_signature"]


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs with the key of a certificate; ``cert_pem`` travels with every signature."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @classmethod
    def from_tls(cls, material: TlsMaterial) -> Signer:
        return cls(material.cert_pem, material.key_pem)

    def sign(self, payload: bytes) -> bytes:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(payload, ec.ECDSA(hashes.SHA256()))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        raise ConfigError("a signing key must be ECDSA or RSA")


def verify_gateway_signature(payload: bytes, signature: bytes, cert_pem: bytes | str,
                             ca_pem: bytes, at: dt.datetime) -> None:
    """Raise :class:`IntegrityError` unless a consortium gateway certificate, valid at
    ``at``, signed ``payload``."""
    verify_certified_signature(payload, signature, cert_pem, ca_pem, at, role="gateway",
                               what="the tree head", whose="the gateway's")


def verify_certified_signature(payload: bytes, signature: bytes, cert_pem: bytes | str,
                               ca_pem: bytes, at: dt.datetime, *, role: str, what: str,
                               whose: str) -> PeerIdentity:
    """Raise :class:`IntegrityError` unless a certificate the consortium CA issued, with
    ``role`` (gateway, person …) and valid at ``at``, signed ``payload``; return the
    signer's identity. ``what`` / ``whose`` word the errors ("the report", "a person's")."""
    pem = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise IntegrityError("the signer certificate is not a PEM certificate") from None
    cas = x509.load_pem_x509_certificates(ca_pem)
    if not any(_issued_by(cert, ca) for ca in cas):
        raise IntegrityError(f"{what} was signed by a certificate the consortium CA did "
                             f"not issue: it does not come from {whose} key")
    try:
        identity: PeerIdentity | None = identity_from_pem(pem)
    except FederationError:
        identity = None
    found = identity.role if identity is not None else "unknown"
    if identity is None or found != role:
        raise IntegrityError(f"{what} was signed by a {found} certificate, not {whose}")
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise IntegrityError(f"the signer certificate was not valid at {at:%Y-%m-%dT%H:%M:%SZ}")
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise IntegrityError(f"the signer certificate's key type cannot sign {what}")
    except InvalidSignature:
        raise IntegrityError(f"{what}'s signature does not verify with the signer "
                             "certificate: it was altered or signed by another key") from None
    return identity


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
