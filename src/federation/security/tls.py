"""gRPC mutual-TLS credentials from a certificate folder, and the peer's identity per call.

Every federation endpoint both proves who it is and demands the same of its peer: servers
require a client certificate signed by the consortium CA (``require_client_auth=True``),
clients check the server's certificate against the same CA. gRPC (BoringSSL) checks the
chain and validity dates during the handshake; a peer that fails never reaches a servicer.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from federation.errors import AuthenticationError, ConfigError
from federation.security.identity import PeerIdentity, identity_from_pem

__all__ = [
    "require_current",
    "TlsMaterial",
    "CertificateValidity",
    "server_credentials",
    "channel_credentials",
    "peer_identity",
    "check_certificate_validity",
]


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"the {what} file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"the {what} file {path} cannot be read: {exc.strerror}") from None


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """PEM bytes for one endpoint: the CA it trusts, its certificate and its key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)  # never in a log line or a traceback

    @classmethod
    def load(cls, cert_path: Path, key_path: Path, ca_path: Path) -> TlsMaterial:
        """Read and cross-check the three files; every problem is a :class:`ConfigError`
        naming the file and what to do."""
        cert_pem = _read(cert_path, "certificate")
        key_pem = _read(key_path, "private key")
        ca_pem = _read(ca_path, "CA certificate")
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise ConfigError(f"{cert_path} is not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"{key_path} is not an unencrypted PEM private key") from None
        try:
            cas = x509.load_pem_x509_certificates(ca_pem)
        except ValueError:
            raise ConfigError(f"{ca_path} is not a PEM CA certificate") from None
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise ConfigError(
                f"the private key {key_path} does not belong to the certificate {cert_path}; "
                f"use the .key file written next to it by `federation ca issue`"
            )
        if not any(_issued_by(cert, ca) for ca in cas):
            raise ConfigError(
                f"the certificate {cert_path} (issued by '{_cn(cert.issuer)}') was not signed "
                f"by the CA in {ca_path} ('{_cn(cas[0].subject)}'); it belongs to another "
                f"consortium CA — issue one from this CA with `federation ca issue`"
            )
        return cls(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def server_credentials(m: TlsMaterial) -> grpc.ServerCredentials:
    """Mutual TLS: the server refuses any client without a certificate from the CA."""
    return grpc.ssl_server_credentials(
        [(m.key_pem, m.cert_pem)], root_certificates=m.ca_pem, require_client_auth=True
    )


def channel_credentials(m: TlsMaterial) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=m.ca_pem, private_key=m.key_pem, certificate_chain=m.cert_pem
    )


# ---------------------------------------------------------------------------- per call


@functools.lru_cache(maxsize=1024)
def _identity_cached(pem: bytes) -> PeerIdentity:
    # keyed by the PEM bytes (dict hash + equality), so a collision cannot confuse two peers;
    # failures are not cached and are re-raised on each call
    return identity_from_pem(pem)


def peer_identity(context: grpc.ServicerContext | grpc.aio.ServicerContext) -> PeerIdentity:
    """The caller's identity from the client certificate of this call's TLS session."""
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert")
    if not pems:
        raise AuthenticationError(
            "the caller presented no client certificate; federation calls need mutual TLS "
            "with a certificate from `federation ca issue`"
        )
    return _identity_cached(bytes(pems[0]))


# ---------------------------------------------------------------------------- diagnostics


@dataclass(frozen=True, slots=True)
class CertificateValidity:
    status: str  # 'valid' | 'expired' | 'not-yet-valid'
    not_before: dt.datetime
    not_after: dt.datetime
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "valid"


def check_certificate_validity(cert_pem: bytes, now: dt.datetime | None = None
                               ) -> CertificateValidity:
    """Whether the certificate is inside its validity window at ``now``, said with dates."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ConfigError("not a PEM certificate") from None
    now = now or dt.datetime.now(dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    who = f"certificate CN={_cn(cert.subject)}"
    if now < start:
        return CertificateValidity(
            "not-yet-valid", start, end,
            f"{who} is not valid until {start:%Y-%m-%d %H:%M} UTC — check this machine's clock")
    if now >= end:
        return CertificateValidity(
            "expired", start, end,
            f"{who} expired on {end:%Y-%m-%d %H:%M} UTC; ask the consortium administrator for "
            f"a new one with `federation ca issue`")
    days = (end - now).days
    return CertificateValidity("valid", start, end,
                               f"{who} is valid until {end:%Y-%m-%d} ({days} days left)")


def require_current(material: TlsMaterial, path: object) -> None:
    """Refuse to start with a certificate outside its validity window (a peer would only
    see a closed socket; better one clear sentence here)."""
    validity = check_certificate_validity(material.cert_pem)
    if not validity.ok:
        raise ConfigError(f"{path}: {validity.message}")
