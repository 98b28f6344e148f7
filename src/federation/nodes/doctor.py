"""``federation node doctor``: check a site's set-up and say in plain words what to fix.

One line per check, ✓ or ✗ (``!`` for a warning that does not fail the run), and after
a ✗ the fix. The checks follow what a node needs to work, in that order:

* its certificate — readable, the key belongs to it, inside its validity dates, signed
  by the consortium CA in ``tls.ca`` (RFC 5280 §6 path validation, one level), not on
  the CRL, and issued to the ``site_id`` of ``site.toml``;
* its gateway — TCP, the TLS handshake both ways, gRPC health, what the gateway reads
  from the certificate and whether its registry knows the site, and the clock skew
  between the two machines (from ``Diagnostics.CheckCaller``'s server time);
* its sources — each database or export readable; each SQL mapping valid and matching
  the database (the mapping loader's own errors, with file and line);
* its state directory — there (or creatable) and writable.

The run changes nothing anywhere; :func:`run_doctor` returns the findings, and the CLI
prints them and exits non-zero when any failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from federation.errors import FederationError
from federation.nodes.adapters import load_mapping, open_adapter
from federation.nodes.adapters.sql import SqlAdapter
from federation.nodes.doctor_gateway import probe_grpc, probe_tcp, probe_tls
from federation.security.identity import RevocationList, identity_from_certificate
from federation.security.tls import TlsMaterial, check_certificate_validity
from federation.settings import NodeSettings, SourceSettings

__all__ = ["Finding", "run_doctor", "render", "MAX_CLOCK_SKEW"]

#: beyond this the audit trail's times disagree across sites, and at 5 minutes the
#: consortium CA's back-dating no longer covers a freshly issued certificate
MAX_CLOCK_SKEW = dt.timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # shown with '!', does not fail the run

    @property
    def mark(self) -> str:
        return "✓" if self.ok and not self.warning else ("!" if self.ok else "✗")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def run_doctor(settings: NodeSettings, *, timeout: float = 5.0,
                     clock: Callable[[], dt.datetime] = _utcnow) -> list[Finding]:
    """Every check, in order; ``clock`` is this machine's time (tests shift it)."""
    findings = list(_certificate_checks(settings, clock()))
    files_ok = findings[0].ok
    replicas = settings.gateway.split(",")
    for address in replicas:            # every replica the node may reach must work
        checked = await _gateway_checks(settings, address, timeout, clock, with_tls=files_ok)
        if len(replicas) > 1:
            checked = [dataclasses.replace(f, check=f"{f.check} ({address})") for f in checked]
        findings += checked
    findings += list(_source_checks(settings))
    findings.append(_state_dir_check(settings.state_dir))
    return findings


def render(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{f.mark} {f.check}: {f.detail}")
        if f.fix and not (f.ok and not f.warning):
            lines.append(f"    → {f.fix}")
    failed = sum(not f.ok for f in findings)
    lines.append("all checks passed" if not failed else
                 f"{failed} check{'s' if failed > 1 else ''} failed")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- certificate


def _certificate_checks(settings: NodeSettings, now: dt.datetime) -> Iterator[Finding]:
    tls = settings.tls
    try:
        TlsMaterial.load(tls.cert, tls.key, tls.ca)
    except FederationError as exc:
        # load() also refuses a foreign CA; read what can be read to say more below
        if "was not signed by the CA" not in exc.message:
            yield Finding("certificate files", False, exc.message,
                          "point tls.cert / tls.key / tls.ca in site.toml at the files "
                          "`federation ca issue` wrote for this site")
            return
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    cas = x509.load_pem_x509_certificates(tls.ca.read_bytes())
    yield Finding("certificate files", True, f"{tls.cert.name}, its key and {tls.ca.name}")

    validity = check_certificate_validity(tls.cert.read_bytes(), now)
    yield Finding("certificate dates", validity.ok, validity.message,
                  "ask the consortium administrator for a new certificate: "
                  f"`federation ca issue --site {settings.site_id} --tier <tier>`"
                  if validity.status == "expired" else
                  "set this machine's clock right (timedatectl set-ntp true)")

    trusted = _issued_by_any(cert, cas)
    issuer = cert.issuer.rfc4514_string()
    yield Finding(
        "trusted by the consortium CA", trusted,
        f"signed by {cas[0].subject.rfc4514_string()}" if trusted else
        f"issued by '{issuer}', not by the CA in {tls.ca}",
        "this certificate belongs to another CA; ask the consortium administrator for one "
        "issued by the consortium CA, or fix tls.ca if it points at the wrong ca.crt")

    yield _revocation_check(settings, cert, trusted)

    try:
        me = identity_from_certificate(cert)
    except FederationError as exc:
        yield Finding("site id", False, exc.message,
                      f"issue a node certificate with `federation ca issue --site "
                      f"{settings.site_id}`")
        return
    matches = me.role == "node" and me.site_id == settings.site_id
    yield Finding(
        "site id", matches,
        f"certificate and site.toml both say '{settings.site_id}' ({me.tier})" if matches else
        f"site.toml says site_id = '{settings.site_id}' but the certificate is for "
        f"{me.role} '{me.name}'",
        f"use the certificate issued to {settings.site_id}, or correct site_id in site.toml")


def _issued_by_any(cert: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def _revocation_check(settings: NodeSettings, cert: x509.Certificate, trusted: bool) -> Finding:
    crl_path = settings.tls.crl
    if crl_path is None or not crl_path.exists():
        where = "tls.crl is not set" if crl_path is None else f"{crl_path} does not exist"
        return Finding("not revoked", True, f"not checked here ({where}); the gateway checks "
                       "its own CRL on every call", "copy the consortium's crl.pem next to "
                       "ca.crt and set tls.crl, so this node refuses revoked peers too",
                       warning=True)
    if not trusted:
        return Finding("not revoked", True, "not checked: the certificate is from another CA",
                       warning=True)
    try:
        crl = RevocationList(crl_path, settings.tls.ca.read_bytes())
    except FederationError as exc:
        return Finding("not revoked", False, exc.message,
                       "replace tls.crl with the consortium's current crl.pem")
    entry = crl.is_revoked(format(cert.serial_number, "x"))
    if entry is not None:
        return Finding("not revoked", False,
                       f"serial {entry.serial} was revoked on {entry.revoked_at:%Y-%m-%d} "
                       f"(reason {entry.reason})",
                       "ask the consortium administrator for a new certificate")
    stale = crl.next_update is not None and crl.next_update < _utcnow()
    return Finding("not revoked", True,
                   f"not on the CRL ({len(crl)} revoked in {crl_path.name})"
                   + (f"; the CRL is past its next update ({crl.next_update:%Y-%m-%d})"
                      if stale else ""),
                   "fetch the consortium's current crl.pem" if stale else "", warning=stale)


# ---------------------------------------------------------------------------- gateway


async def _gateway_checks(settings: NodeSettings, address: str, timeout: float,
                          clock: Callable[[], dt.datetime], *, with_tls: bool) -> list[Finding]:
    tcp = await asyncio.to_thread(probe_tcp, address, timeout)
    findings = [Finding("gateway reachable", tcp.ok, tcp.detail, tcp.fix)]
    if not tcp.ok:
        return findings + [Finding("clock skew", False, "not measured: the gateway cannot "
                                   "be reached", "fix the gateway connection first")]
    if not with_tls:  # no usable certificate files: nothing more can be tried
        return findings
    tls = await asyncio.to_thread(probe_tls, address, settings, timeout)
    findings.append(Finding("gateway TLS", tls.ok, tls.detail, tls.fix))
    if not tls.ok:
        return findings
    material = TlsMaterial(ca_pem=settings.tls.ca.read_bytes(),
                           cert_pem=settings.tls.cert.read_bytes(),
                           key_pem=settings.tls.key.read_bytes())
    rpc, view = await probe_grpc(address, material, timeout, clock=clock)
    findings.append(Finding("gateway gRPC", rpc.ok, rpc.detail, rpc.fix))
    if view is None:
        return findings
    if not view.registry_member:
        findings.append(Finding(
            "consortium registry", False,
            f"the gateway's registry has no site '{view.name}'",
            f"ask the consortium administrator to run `federation site add --id {view.name} "
            f"--tier {view.tier} --name …` on the gateway"))
    elif view.registry_tier != view.tier:
        findings.append(Finding(
            "consortium registry", False,
            f"the registry lists '{view.name}' as {view.registry_tier}, the certificate says "
            f"{view.tier}", f"reissue the certificate with --tier {view.registry_tier}"))
    else:
        state = view.node_state or "never registered"
        findings.append(Finding("consortium registry", True,
                                f"'{view.name}' is a {view.tier} member; its node is {state}"))
    skew = view.skew.total_seconds()
    within = abs(view.skew) <= MAX_CLOCK_SKEW
    direction = "behind" if skew > 0 else "ahead of"
    findings.append(Finding(
        "clock skew", within,
        f"this machine is {abs(skew):.1f} s {direction} the gateway (round trip "
        f"{view.round_trip.total_seconds() * 1000:.0f} ms; limit "
        f"{MAX_CLOCK_SKEW.total_seconds():.0f} s)",
        "synchronise this machine's clock (timedatectl set-ntp true, or chrony/ntpd "
        "against the consortium's time server)"))
    return findings


# ---------------------------------------------------------------------------- sources


def _all_sources(source: SourceSettings) -> list[SourceSettings]:
    return [source, *source.extra]


def _source_checks(settings: NodeSettings) -> Iterator[Finding]:
    for source in _all_sources(settings.source):
        label = f"source {source.kind} {source.path}"
        yield _source_readable(source, label)
        if source.kind == "sql":
            yield _mapping_check(source)


def _source_readable(source: SourceSettings, label: str) -> Finding:
    fix = (f"check that {source.path} is the site's {source.kind} source and that the "
           f"node's user (e.g. federation) can read it")
    if source.kind == "sql":
        return _sqlite_readable(source.path, label, fix)
    try:
        adapter = open_adapter(source.kind, source.path, source.mapping)
        try:
            count = adapter.count_patients()
        finally:
            adapter.close()
    except FederationError as exc:
        return Finding(label, False, exc.message, fix)
    return Finding(label, True, f"readable; {count} patient rows")


def _sqlite_readable(path: Path, label: str, fix: str) -> Finding:
    if not path.is_file():
        return Finding(label, False, f"{path} does not exist or is not a file", fix)
    if not os.access(path, os.R_OK):
        return Finding(label, False, f"{path} is not readable by this user", fix)
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        try:
            tables = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Finding(label, False, f"{path} cannot be read as a SQLite database: {exc}", fix)
    return Finding(label, True, f"readable SQLite database, {tables} tables")


def _mapping_check(source: SourceSettings) -> Finding:
    label = f"mapping {source.mapping}"
    if source.mapping is None:
        return Finding("mapping", False, "a 'sql' source needs a mapping",
                       "set [source] mapping = \"vendor_a\" (a packaged mapping) or the path "
                       "of your mapping TOML file")
    try:
        mapping = load_mapping(source.mapping)
    except FederationError as exc:
        return Finding(label, False, exc.message, "correct the mapping file where it says")
    try:
        adapter = SqlAdapter(source.path, mapping)
    except FederationError as exc:
        if not source.path.is_file() or "cannot read table" in exc.message:
            return Finding(label, True, f"{mapping.source.name} is valid; not compared with "
                           "the database, which cannot be read (see above)", warning=True)
        return Finding(label, False, exc.message,
                       "correct the mapping (file and line above) to the database's own "
                       "table and column names")
    try:
        count = adapter.count_patients()
    except FederationError as exc:
        return Finding(label, False, exc.message, "correct the mapping where it says")
    finally:
        adapter.close()
    return Finding(label, True, f"{mapping.source.name} matches the database ({count} "
                                "patient rows)")


# ---------------------------------------------------------------------------- state dir


def _state_dir_check(state_dir: Path) -> Finding:
    fix = (f"create {state_dir} and give it to the node's user "
           f"(install -d -o federation -m 0750 {state_dir}), or change state_dir")
    if state_dir.exists() and not state_dir.is_dir():
        return Finding("state dir", False, f"{state_dir} exists but is not a directory", fix)
    if not state_dir.exists():
        parent = next((p for p in state_dir.parents if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            return Finding("state dir", False, f"{state_dir} does not exist and cannot be "
                           f"created under {parent}", fix)
        return Finding("state dir", True, f"{state_dir} will be created at the first start")
    try:
        with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Finding("state dir", False, f"{state_dir} is not writable: {exc.strerror}", fix)
    return Finding("state dir", True, f"{state_dir} is writable")
