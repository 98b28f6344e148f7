"""The consortium certificate authority, kept in one folder on disk.

    <ca_dir>/ca.crt       the CA certificate every node, gateway and tool trusts
    <ca_dir>/ca.key       its ECDSA P-256 key (mode 0600; keep the folder offline in production)
    <ca_dir>/index.json   every certificate issued: serial, kind, holder, tier, validity,
                          revocation date and reason
    <ca_dir>/crl.pem      the signed CRL (RFC 5280 §5) that gateways and nodes follow

Issued certificates name their holder in SAN URIs (see :mod:`federation.security.identity`)
and also carry DNS names: ``gateway.federation.internal`` for the gateway and
``<site>.nodes.federation.internal`` for a node, which peers use as the TLS target name so
that a node's server certificate is checked against the site the gateway meant to reach.

Writes are atomic (temporary file + ``os.replace``) so a gateway reading ``crl.pem`` never
sees half a file, and read-modify-write of the index holds an advisory lock.
:meth:`CertificateAuthority.rotate_node` writes a new key and certificate over a running
node's files the same way, so that the node takes them up without a restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.errors import ConfigError, InvalidInput
from federation.security.identity import (
    URN_PREFIX,
    normalize_serial,
    validate_name,
    validate_site_id,
    validate_staff_role,
    validate_tier,
)

try:  # advisory locking of the index; POSIX only (a Windows CA host simply goes without)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "GATEWAY_SERVER_NAME",
    "DEFAULT_HOSTS",
    "REVOCATION_REASONS",
    "CertificateAuthority",
    "IssuedCertificate",
    "IssuedRecord",
    "init_ca",
    "node_server_name",
]

#: the TLS name every gateway certificate carries; clients dial the gateway with it
GATEWAY_SERVER_NAME = "gateway.federation.internal"
_NODE_DOMAIN = "nodes.federation.internal"
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")
#: reasons accepted by :meth:`CertificateAuthority.revoke` (RFC 5280 §5.3.1 names)
REVOCATION_REASONS = ("unspecified", "key_compromise", "affiliation_changed", "superseded",
                      "cessation_of_operation", "privilege_withdrawn")
CRL_VALIDITY = dt.timedelta(days=7)
_CLOCK_SKEW = dt.timedelta(minutes=5)
_INDEX_FORMAT = 1


def node_server_name(site_id: str) -> str:
    """The DNS name in a node's certificate that the gateway uses as its TLS target name."""
    return f"{validate_site_id(site_id)}.{_NODE_DOMAIN}"


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """What :meth:`CertificateAuthority.issue_node` and friends wrote."""

    serial: str
    kind: str  # 'node' | 'gateway' | 'operator' | 'person'
    name: str
    site_id: str | None
    tier: str | None
    cert_path: Path
    key_path: Path
    ca_path: Path
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str


@dataclass(frozen=True, slots=True)
class IssuedRecord:
    """One line of ``index.json``."""

    serial: str
    kind: str
    name: str
    site_id: str | None
    tier: str | None
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    revoked_at: dt.datetime | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("not_before", "not_after", "revoked_at"):
            out[key] = out[key].isoformat() if out[key] else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IssuedRecord:
        def when(key: str) -> dt.datetime | None:
            return dt.datetime.fromisoformat(data[key]) if data.get(key) else None

        return cls(
            serial=data["serial"], kind=data["kind"], name=data["name"],
            site_id=data.get("site_id"), tier=data.get("tier"),
            not_before=when("not_before"), not_after=when("not_after"),  # type: ignore[arg-type]
            fingerprint_sha256=data.get("fingerprint_sha256", ""),
            revoked_at=when("revoked_at"), reason=data.get("reason"),
        )


# ---------------------------------------------------------------------------- files


def _write_atomic(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write via a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _replace_pair(key_path: Path, key_pem: bytes, cert_path: Path, cert_pem: bytes) -> None:
    """Write a key and its certificate over the files in use: both in full (and synced) to
    temporary files next to them first, then one rename each. An existing file's mode and,
    where allowed, owner are kept (a node's key is often group-readable by its service)."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data, private in ((key_path, key_pem, True), (cert_path, cert_pem, False)):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                _keep_mode(fh.fileno(), path, 0o600 if private else 0o644)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def _keep_mode(fd: int, like: Path, default: int) -> None:
    try:
        st = like.stat()
    except FileNotFoundError:
        os.fchmod(fd, default)
        return
    os.fchmod(fd, st.st_mode & 0o777)
    with contextlib.suppress(PermissionError):
        os.fchown(fd, st.st_uid, st.st_gid)


def _hosts_of(cert_path: Path, site_id: str) -> list[str]:
    """The DNS names and IP addresses in the node certificate at ``cert_path`` (other than
    the site's own node name), or the defaults when there is no readable certificate."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return list(DEFAULT_HOSTS)
    names = [n for n in san.get_values_for_type(x509.DNSName) if n != node_server_name(site_id)]
    return names + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _san_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip()
        if not host:
            raise InvalidInput("an empty host name cannot go into a certificate")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host.lower()))
    return names


def _aware(value: dt.datetime, what: str) -> dt.datetime:
    if value.tzinfo is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime (e.g. datetime.now(UTC))")
    return value.astimezone(dt.UTC)


# ---------------------------------------------------------------------------- the CA


class CertificateAuthority:
    """A consortium CA loaded from its folder. Build one with :func:`init_ca` or :meth:`load`."""

    def __init__(self, ca_dir: Path, certificate: x509.Certificate,
                 key: ec.EllipticCurvePrivateKey) -> None:
        self._dir = Path(ca_dir)
        self._cert = certificate
        self._key = key

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, ca_dir: Path) -> CertificateAuthority:
        ca_dir = Path(ca_dir)
        for name in ("ca.crt", "ca.key"):
            if not (ca_dir / name).is_file():
                raise ConfigError(
                    f"the consortium CA file {ca_dir / name} does not exist; create the CA with "
                    f"`federation ca init --dir {ca_dir}`"
                )
        try:
            cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
        except ValueError:
            raise ConfigError(f"{ca_dir / 'ca.crt'} is not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{ca_dir / 'ca.key'} is not an unencrypted PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or (
            key.public_key().public_numbers() != cert.public_key().public_numbers()
        ):
            raise ConfigError(f"{ca_dir / 'ca.key'} is not the key of {ca_dir / 'ca.crt'}")
        return cls(ca_dir, cert, key)

    # ------------------------------------------------------------------ facts

    @property
    def ca_dir(self) -> Path:
        return self._dir

    @property
    def cert_path(self) -> Path:
        return self._dir / "ca.crt"

    @property
    def crl_path(self) -> Path:
        return self._dir / "crl.pem"

    @property
    def index_path(self) -> Path:
        return self._dir / "index.json"

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def ca_pem(self) -> bytes:
        return _cert_pem(self._cert)

    @property
    def subject_cn(self) -> str:
        return str(self._cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    @property
    def consortium(self) -> str:
        attrs = self._cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(attrs[0].value) if attrs else self.subject_cn

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate (hex), for out-of-band comparison at each site."""
        return self._cert.fingerprint(hashes.SHA256()).hex()

    # ------------------------------------------------------------------ issuing

    def issue_node(
        self, site_id: str, tier: str, out_dir: Path, *, hosts: Sequence[str] = DEFAULT_HOSTS,
        days: int = 397, not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """A site's node-agent certificate (client to the gateway, server to the gateway)."""
        validate_site_id(site_id)
        validate_tier(tier)
        uris = [f"{URN_PREFIX}role:node", f"{URN_PREFIX}site:{site_id}", f"{URN_PREFIX}tier:{tier}"]
        return self._issue("node", site_id, out_dir, uris, [node_server_name(site_id), *hosts],
                           days, not_before, not_after, site_id=site_id, tier=tier)

    def issue_gateway(
        self, out_dir: Path, *, name: str = "gateway", hosts: Sequence[str] = DEFAULT_HOSTS,
        days: int = 397, not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> IssuedCertificate:
        validate_name(name, "gateway name")
        return self._issue("gateway", name, out_dir, [f"{URN_PREFIX}role:gateway"],
                           [GATEWAY_SERVER_NAME, *hosts], days, not_before, not_after)

    def issue_operator(
        self, name: str, out_dir: Path, *, hosts: Sequence[str] = DEFAULT_HOSTS,
        days: int = 397, not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """A client certificate for a person or tool (the CLI, the demo tour, a console)."""
        validate_name(name, "operator name")
        uris = [f"{URN_PREFIX}role:operator", f"{URN_PREFIX}operator:{name}"]
        return self._issue("operator", name, out_dir, uris, list(hosts), days, not_before,
                           not_after)

    def issue_person(
        self, user_id: str, site_id: str, roles: Sequence[str], out_dir: Path, *,
        days: int = 397, not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """A member of staff's client certificate (doctors in China hold CA certificates):
        the site they work at and their staff roles, which workflows check per move."""
        validate_name(user_id, "user id")
        validate_site_id(site_id)
        if not roles:
            raise InvalidInput("a person certificate needs at least one staff role "
                               "(--staff-role doctor)")
        uris = [f"{URN_PREFIX}role:person", f"{URN_PREFIX}user:{user_id}",
                f"{URN_PREFIX}site:{site_id}"]
        uris += [f"{URN_PREFIX}staff-role:{validate_staff_role(r)}" for r in sorted(set(roles))]
        return self._issue("person", user_id, out_dir, uris, [], days, not_before, not_after,
                           site_id=site_id)

    def _validity(self, days: int, not_before: dt.datetime | None,
                  not_after: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        start = _aware(not_before, "not_before") if not_before else now - _CLOCK_SKEW
        if not_after:
            end = _aware(not_after, "not_after")
        elif days > 0:
            end = now + dt.timedelta(days=days)
        else:
            raise InvalidInput(f"days must be positive, got {days}")
        end = min(end, self._cert.not_valid_after_utc)  # never outlive the CA
        if end <= start:
            raise InvalidInput(f"certificate would end ({end:%Y-%m-%d}) before it starts "
                               f"({start:%Y-%m-%d})")
        return start, end

    def _issue(
        self, kind: str, name: str, out_dir: Path, uris: list[str], hosts: Sequence[str],
        days: int, not_before: dt.datetime | None, not_after: dt.datetime | None,
        *, site_id: str | None = None, tier: str | None = None,
    ) -> IssuedCertificate:
        out_dir = Path(out_dir)
        base = out_dir.name or name
        key, cert = self._build(kind, name, uris, hosts, days, not_before, not_after)
        issued = self._issued(cert, kind, name, out_dir / f"{base}.crt", out_dir / f"{base}.key",
                              out_dir / "ca.crt", site_id=site_id, tier=tier)
        _write_atomic(issued.key_path, _key_pem(key), private=True)
        _write_atomic(issued.cert_path, _cert_pem(cert))
        _write_atomic(issued.ca_path, self.ca_pem)
        self._record_issued(issued)
        return issued

    def rotate_node(
        self, site_id: str, cert_path: Path, key_path: Path, *, tier: str | None = None,
        hosts: Sequence[str] | None = None, days: int = 397,
    ) -> IssuedCertificate:
        """A fresh key and certificate for a site's node, written over the node's own files
        so that a running node takes them up without a restart (see
        :mod:`federation.security.rotation`).

        The tier is that of the site's newest certificate in the index, and the host names
        and addresses those of the certificate now at ``cert_path``, unless given. Both
        files are written in full first, then renamed into place one after the other (a
        node that looks in between sees a key that does not fit, and keeps its current
        pair until the certificate follows). The previous certificate is not revoked: it
        stays valid for the overlap, until it expires or ``revoke`` is run for it."""
        validate_site_id(site_id)
        tier = validate_tier(tier) if tier else self._tier_of(site_id)
        hosts = list(hosts) if hosts else _hosts_of(Path(cert_path), site_id)
        uris = [f"{URN_PREFIX}role:node", f"{URN_PREFIX}site:{site_id}", f"{URN_PREFIX}tier:{tier}"]
        key, cert = self._build("node", site_id, uris, [node_server_name(site_id), *hosts],
                                days, None, None)
        issued = self._issued(cert, "node", site_id, Path(cert_path), Path(key_path),
                              self.cert_path, site_id=site_id, tier=tier)
        _replace_pair(issued.key_path, _key_pem(key), issued.cert_path, _cert_pem(cert))
        self._record_issued(issued)
        return issued

    def _tier_of(self, site_id: str) -> str:
        tiers = [r.tier for r in self.list_issued() if r.kind == "node" and r.site_id == site_id]
        if not tiers or not tiers[-1]:
            raise InvalidInput(
                f"this CA has issued no node certificate to site '{site_id}'; issue the first "
                f"one with `federation ca issue --site {site_id} --tier …`")
        return tiers[-1]

    def _issued(self, cert: x509.Certificate, kind: str, name: str, cert_path: Path,
                key_path: Path, ca_path: Path, *, site_id: str | None,
                tier: str | None) -> IssuedCertificate:
        return IssuedCertificate(
            serial=normalize_serial(cert.serial_number), kind=kind, name=name, site_id=site_id,
            tier=tier, cert_path=cert_path, key_path=key_path, ca_path=ca_path,
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        )

    def _record_issued(self, issued: IssuedCertificate) -> None:
        record = IssuedRecord(issued.serial, issued.kind, issued.name, issued.site_id,
                              issued.tier, issued.not_before, issued.not_after,
                              issued.fingerprint_sha256)
        with self._index() as index:
            index["issued"].append(record.to_json())

    def _build(
        self, kind: str, name: str, uris: list[str], hosts: Sequence[str], days: int,
        not_before: dt.datetime | None, not_after: dt.datetime | None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        start, end = self._validity(days, not_before, not_after)
        key = ec.generate_private_key(ec.SECP256R1())
        alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        for general in _san_hosts(hosts):
            if general not in alt_names:
                alt_names.append(general)
        ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.consortium),
            ]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return key, cert

    # ------------------------------------------------------------------ index and CRL

    @contextlib.contextmanager
    def _index(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write ``index.json`` under an advisory lock."""
        with open(self._dir / ".lock", "a+b") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            index = self._read_index()
            yield index
            _write_atomic(self.index_path, (json.dumps(index, indent=2) + "\n").encode())

    def _read_index(self) -> dict[str, Any]:
        if not self.index_path.exists():
            return {"format": _INDEX_FORMAT, "crl_number": 0, "issued": []}
        try:
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
            index.setdefault("issued", [])
            index.setdefault("crl_number", 0)
            return index
        except (ValueError, AttributeError):
            raise ConfigError(f"{self.index_path} is not a valid CA index (JSON)") from None

    def list_issued(self) -> list[IssuedRecord]:
        return [IssuedRecord.from_json(e) for e in self._read_index()["issued"]]

    def revoke(self, serial_hex: str | None = None, *, site_id: str | None = None,
               reason: str = "unspecified") -> list[IssuedRecord]:
        """Revoke by serial, or every certificate of a site; re-sign ``crl.pem``.

        Returns the matching records (already-revoked ones keep their first date and
        reason); an empty list when nothing matched.
        """
        if (serial_hex is None) == (site_id is None):
            raise InvalidInput("revoke needs exactly one of a serial number or a site id")
        if reason not in REVOCATION_REASONS:
            raise InvalidInput(f"revocation reason {reason!r} is not one of "
                               f"{', '.join(REVOCATION_REASONS)}")
        wanted = normalize_serial(serial_hex) if serial_hex is not None else None
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        matched: list[IssuedRecord] = []
        with self._index() as index:
            for i, raw in enumerate(index["issued"]):
                record = IssuedRecord.from_json(raw)
                if record.serial != wanted and (site_id is None or record.site_id != site_id):
                    continue
                if record.revoked_at is None:
                    record = replace(record, revoked_at=now, reason=reason)
                    index["issued"][i] = record.to_json()
                matched.append(record)
            if matched:
                self._sign_crl(index)
        return matched

    def refresh_crl(self) -> Path:
        """Re-sign the CRL with a fresh next-update (run it at least weekly, e.g. from cron)."""
        with self._index() as index:
            self._sign_crl(index)
        return self.crl_path

    def _sign_crl(self, index: dict[str, Any]) -> None:
        """RFC 5280 §5: issuer, this/next update, AKI and CRL number; one entry per revocation."""
        index["crl_number"] = int(index.get("crl_number", 0)) + 1
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(now)
            .next_update(now + CRL_VALIDITY)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .add_extension(x509.CRLNumber(index["crl_number"]), critical=False)
        )
        for record in map(IssuedRecord.from_json, index["issued"]):
            if record.revoked_at is None:
                continue
            entry = (x509.RevokedCertificateBuilder()
                     .serial_number(int(record.serial, 16))
                     .revocation_date(record.revoked_at))
            if record.reason and record.reason != "unspecified":
                # RFC 5280 §5.3.1: omit the extension rather than write 'unspecified'
                entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags[record.reason]),
                                            critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(self._key, hashes.SHA256())
        _write_atomic(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))


# ---------------------------------------------------------------------------- init


def init_ca(ca_dir: Path, *, consortium: str = "Demo Regional Consortium",
            days: int = 3650) -> CertificateAuthority:
    """Create the consortium CA in ``ca_dir``; if one is there already, load and return it."""
    ca_dir = Path(ca_dir)
    if (ca_dir / "ca.crt").exists() or (ca_dir / "ca.key").exists():
        return CertificateAuthority.load(ca_dir)
    if not consortium.strip():
        raise InvalidInput("the consortium name must not be empty")
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"{consortium} CA"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium),
    ])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    # key first: a crash between the two writes leaves a folder load() reports clearly
    _write_atomic(ca_dir / "ca.key", _key_pem(key), private=True)
    _write_atomic(ca_dir / "ca.crt", _cert_pem(cert))
    authority = CertificateAuthority(ca_dir, cert, key)
    with authority._index() as index:
        authority._sign_crl(index)
    return authority
