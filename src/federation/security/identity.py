"""Who is on the other end of a federation call, and whether the consortium still trusts them.

A federation certificate names its holder in the SubjectAlternativeName as URIs
(RFC 5280 §4.2.1.6), which are authoritative; the subject DN only mirrors them for people
reading ``openssl x509 -text``::

    urn:federation:role:node        urn:federation:site:county-a    urn:federation:tier:county
    urn:federation:role:gateway
    urn:federation:role:operator    urn:federation:operator:demo-tour
    urn:federation:role:person      urn:federation:user:dr-wang     urn:federation:site:county-a
                                    urn:federation:staff-role:doctor  (one or more)

Revocation is a plain X.509 CRL (RFC 5280 §5) signed by the consortium CA and written by
``federation ca revoke``; :class:`RevocationList` follows the file so a long-running
gateway or node refuses a revoked certificate within seconds, without a restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from federation.errors import AuthenticationError, CertificateRevoked, ConfigError, InvalidInput

__all__ = [
    "ROLES",
    "STAFF_ROLES",
    "SITE_ROLES",
    "CONSORTIUM_ROLES",
    "TIERS",
    "URN_PREFIX",
    "PeerIdentity",
    "RevokedEntry",
    "RevocationList",
    "identity_from_pem",
    "identity_from_certificate",
    "normalize_serial",
    "validate_site_id",
    "validate_tier",
    "validate_name",
    "validate_staff_role",
]

log = logging.getLogger("federation.security")

URN_PREFIX = "urn:federation:"
ROLES = ("node", "gateway", "operator", "person")
#: what a member of staff does at a site; a person certificate names one or more
STAFF_ROLES = ("doctor", "specialist", "nurse", "site-admin", "regional-admin", "auditor")
#: roles a site may vouch for (node-signed assertions, a node acting for its staff); the
#: consortium roles come only from the consortium (its CA, or an account at the gateway)
SITE_ROLES = ("doctor", "specialist", "nurse", "site-admin")
CONSORTIUM_ROLES = ("regional-admin", "auditor")
TIERS = ("township", "county", "city")

_SITE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")


# ---------------------------------------------------------------------------- validation


def validate_site_id(site_id: str) -> str:
    """A site id is a DNS label: it becomes ``<site>.nodes.federation.internal``."""
    if not isinstance(site_id, str) or not _SITE_ID.match(site_id):
        raise InvalidInput(
            f"site id {site_id!r} is not valid: use 2-63 lowercase letters, digits and '-', "
            f"starting with a letter or digit (e.g. 'county-a', 'township-a1')"
        )
    return site_id


def validate_tier(tier: str) -> str:
    if tier not in TIERS:
        raise InvalidInput(f"tier {tier!r} is not valid: use one of {', '.join(TIERS)}")
    return tier


def validate_name(name: str, what: str = "name") -> str:
    """Operator and gateway names: like a site id, plus '.' and '_'."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"{what} {name!r} is not valid: use 2-63 lowercase letters, digits, '.', '_' and "
            f"'-', starting with a letter or digit"
        )
    return name


def normalize_serial(serial: str | int) -> str:
    """Lowercase hex without leading zeros; accepts ``0x``, ``AB:CD`` and int forms."""
    if isinstance(serial, int):
        return format(serial, "x")
    text = serial.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return format(int(text, 16), "x")
    except ValueError:
        raise InvalidInput(f"serial {serial!r} is not a hexadecimal number") from None


# ---------------------------------------------------------------------------- identity


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The holder of a consortium certificate, as read from that certificate."""

    role: str  # 'node' | 'gateway' | 'operator' | 'person'
    name: str  # the site id for nodes, the user id for persons
    site_id: str | None  # a node's site, a person's site
    tier: str | None  # nodes only
    serial: str  # lowercase hex
    fingerprint_sha256: str  # lowercase hex of the DER certificate
    not_after: dt.datetime  # aware, UTC
    staff_roles: tuple[str, ...] = ()  # persons only: doctor, specialist, nurse …

    def describe(self) -> str:
        """``site county-a`` / ``person dr-wang at county-a`` / ``operator demo-tour``."""
        if self.role == "node":
            return f"site {self.site_id}"
        if self.role == "person":
            return f"person {self.name} at {self.site_id}"
        return f"{self.role} {self.name}"


def validate_staff_role(role: str) -> str:
    if role not in STAFF_ROLES:
        raise InvalidInput(f"staff role {role!r} is not valid: use one of {', '.join(STAFF_ROLES)}")
    return role


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else "(none)"


def _federation_urns(cert: x509.Certificate) -> dict[str, list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return {}
    found: dict[str, list[str]] = {}
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(URN_PREFIX):
            key, _, value = uri[len(URN_PREFIX):].partition(":")
            found.setdefault(key, []).append(value)
    return found


def _single(urns: dict[str, list[str]], key: str, cn: str) -> str:
    values = urns.get(key, [])
    if len(values) != 1:
        raise AuthenticationError(
            f"certificate CN={cn} must carry exactly one {URN_PREFIX}{key}:… URI, found "
            f"{len(values)}; issue a new one with `federation ca issue`"
        )
    return values[0]


def identity_from_certificate(cert: x509.Certificate) -> PeerIdentity:
    """Read the federation identity from a certificate's SAN URIs (chain is not checked here:
    TLS has done that before a server ever sees the certificate)."""
    cn = _common_name(cert)
    urns = _federation_urns(cert)
    if not urns.get("role"):
        raise AuthenticationError(
            f"certificate CN={cn} carries no {URN_PREFIX}role:… — it was not issued by "
            f"`federation ca issue`"
        )
    role = _single(urns, "role", cn)
    site_id = tier = None
    staff_roles: tuple[str, ...] = ()
    try:
        if role == "node":
            site_id = validate_site_id(_single(urns, "site", cn))
            tier = validate_tier(_single(urns, "tier", cn))
            name = site_id
        elif role == "operator":
            name = validate_name(_single(urns, "operator", cn), "operator name")
        elif role == "gateway":
            name = cn
        elif role == "person":
            name = validate_name(_single(urns, "user", cn), "user id")
            site_id = validate_site_id(_single(urns, "site", cn))
            staff_roles = tuple(sorted({validate_staff_role(r)
                                        for r in urns.get("staff-role", [])}))
            if not staff_roles:
                raise AuthenticationError(
                    f"person certificate CN={cn} names no {URN_PREFIX}staff-role:…; issue one "
                    f"with `federation ca issue --person … --staff-role doctor`")
        else:
            raise AuthenticationError(
                f"certificate CN={cn} carries the unknown role {role!r}; known roles are "
                f"{', '.join(ROLES)}"
            )
    except InvalidInput as exc:
        raise AuthenticationError(f"certificate CN={cn}: {exc.message}") from None
    return PeerIdentity(
        role=role,
        name=name,
        site_id=site_id,
        tier=tier,
        serial=normalize_serial(cert.serial_number),
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        not_after=cert.not_valid_after_utc,
        staff_roles=staff_roles,
    )


def identity_from_pem(pem: bytes) -> PeerIdentity:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise AuthenticationError(
            "the presented certificate is not a readable PEM certificate") from None
    return identity_from_certificate(cert)


# ---------------------------------------------------------------------------- revocation


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    serial: str
    revoked_at: dt.datetime
    reason: str  # ReasonFlags name, e.g. 'key_compromise'; 'unspecified' when absent


_FileStamp = tuple[int, int, int]  # (mtime_ns, size, inode): os.replace changes the inode


class RevocationList:
    """The consortium CRL at ``crl_path``, verified against the CA and followed on disk.

    * A missing file means nothing is revoked (a CA that never revoked anything).
    * A CRL that is not signed by the CA is refused with :class:`ConfigError` when the
      list is built. When a *reload* finds a bad or vanished file, the last good list stays
      in force (and an error is logged): deleting or corrupting the file must not
      un-revoke a certificate, nor turn every call into an error.
    * The file is stat'ed at most every ``recheck_seconds`` (``clock`` is injectable).
    """

    def __init__(
        self,
        crl_path: Path,
        ca_pem: bytes,
        *,
        recheck_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = Path(crl_path)
        try:
            self._cas = x509.load_pem_x509_certificates(ca_pem)
        except ValueError:
            raise ConfigError(
                "the CA certificate given for the CRL check is not valid PEM") from None
        self._recheck = recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, RevokedEntry] = {}
        self._next_update: dt.datetime | None = None
        self._stamp: _FileStamp | None = None
        self._checked_at = clock()
        stamp = self._stat()
        if stamp is not None:
            self._entries, self._next_update = self._read()
            self._stamp = stamp

    @property
    def path(self) -> Path:
        return self._path

    @property
    def next_update(self) -> dt.datetime | None:
        """When the CA promised a fresher CRL; ``None`` while no CRL file exists."""
        return self._next_update

    def __len__(self) -> int:
        self._maybe_reload()
        return len(self._entries)

    def is_revoked(self, serial_hex: str) -> RevokedEntry | None:
        self._maybe_reload()
        return self._entries.get(normalize_serial(serial_hex))

    def check(self, identity: PeerIdentity) -> None:
        """Raise :class:`CertificateRevoked` if ``identity``'s certificate is on the CRL."""
        entry = self.is_revoked(identity.serial)
        if entry is None:
            return
        raise CertificateRevoked(
            f"certificate serial {entry.serial} for {identity.describe()} was revoked on "
            f"{entry.revoked_at:%Y-%m-%d %H:%M} UTC (reason {entry.reason}); ask the consortium "
            f"administrator to issue a new one with `federation ca issue`"
        )

    # ------------------------------------------------------------------ loading

    def _stat(self) -> _FileStamp | None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._checked_at < self._recheck:
            return
        with self._lock:
            if now - self._checked_at < self._recheck:
                return
            self._checked_at = now
            stamp = self._stat()
            if stamp == self._stamp:
                return
            if stamp is None:
                log.error("CRL %s has disappeared; keeping the %d revocations already loaded",
                          self._path, len(self._entries))
                self._stamp = None
                return
            try:
                entries, next_update = self._read()
            except ConfigError as exc:
                log.error("%s; keeping the %d revocations already loaded", exc, len(self._entries))
                self._stamp = stamp  # do not re-read the same bad file on every check
                return
            self._entries, self._next_update, self._stamp = entries, next_update, stamp
            log.info("reloaded CRL %s: %d revoked certificate(s)", self._path, len(entries))

    def _read(self) -> tuple[dict[str, RevokedEntry], dt.datetime | None]:
        try:
            data = self._path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the CRL {self._path}: {exc.strerror}") from None
        try:
            crl = x509.load_pem_x509_crl(data)
        except ValueError:
            raise ConfigError(f"{self._path} is not a PEM certificate revocation list") from None
        if not any(ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key())
                   for ca in self._cas):
            raise ConfigError(
                f"the CRL {self._path} is not signed by the consortium CA (issuer "
                f"{crl.issuer.rfc4514_string()}); refusing it — regenerate it with "
                f"`federation ca revoke` on the consortium CA"
            )
        next_update = crl.next_update_utc
        if next_update is not None and next_update < dt.datetime.now(dt.UTC):
            log.warning("CRL %s is past its next update (%s); the CA should re-sign it",
                        self._path, next_update.isoformat())
        return {e.serial: e for e in map(_entry, crl)}, next_update


def _entry(revoked: x509.RevokedCertificate) -> RevokedEntry:
    try:
        reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
    except x509.ExtensionNotFound:
        reason = "unspecified"
    return RevokedEntry(
        normalize_serial(revoked.serial_number), revoked.revocation_date_utc, reason)
