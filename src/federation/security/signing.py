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
from federation.security.identity import identity_from_pem
from federation.security.tls import TlsMaterial

__all__ = ["Signer", "verify_gateway_signature"]


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
        raise ConfigError("the gateway key must be ECDSA or RSA to sign audit tree heads")


def verify_gateway_signature(payload: bytes, signature: bytes, cert_pem: bytes | str,
                             ca_pem: bytes, at: dt.datetime) -> None:
    """Raise :class:`IntegrityError` unless a consortium gateway certificate, valid at
    ``at``, signed ``payload``."""
    pem = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise IntegrityError("the signer certificate is not a PEM certificate") from None
    cas = x509.load_pem_x509_certificates(ca_pem)
    if not any(_issued_by(cert, ca) for ca in cas):
        raise IntegrityError("the tree head was signed by a certificate the consortium CA did "
                             "not issue: it does not come from the consortium's gateway")
    try:
        role = identity_from_pem(pem).role
    except FederationError:
        role = "unknown"
    if role != "gateway":
        raise IntegrityError(f"the tree head was signed by a {role} certificate, not the "
                             "gateway's")
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise IntegrityError(f"the signer certificate was not valid at {at:%Y-%m-%dT%H:%M:%SZ}")
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise IntegrityError("the signer certificate's key type cannot sign tree heads")
    except InvalidSignature:
        raise IntegrityError("the tree head's signature does not verify with the signer "
                             "certificate: it was altered or signed by another key") from None


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
