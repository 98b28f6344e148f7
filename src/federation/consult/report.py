"""The consult report: a FHIR DiagnosticReport signed by the specialist who wrote it.

The specialist's tool builds the report (:func:`diagnostic_report`), signs its canonical
JSON — compact, key-sorted UTF-8, without ``meta`` (which the gateway uses to mark a
superseded version) — with the private key of their person certificate
(:func:`sign_report`), and sends report, signature and certificate. The gateway checks
the signature before it stores anything (:func:`verify_report`) and carries it in a
Provenance (FHIR R4 §6.3: ``Provenance.signature`` with the author's-signature type,
``sigFormat`` and the signer's certificate). Anyone holding the consortium CA
certificate can check a report later (``federation consult verify``): a key the CA did not
certify, a certificate of another role, or one altered byte is an
:class:`~federation.errors.IntegrityError`. No I/O here.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from federation.consult.fhir import (
    CONSULT_SYSTEM,
    KIND_CATEGORY,
    REPORT_MARK_SYSTEM,
    V2_0074,
    iso,
    practitioner_ref,
)
from federation.errors import IntegrityError, InvalidInput
from federation.security.identity import PeerIdentity
from federation.security.signing import Signer, verify_certified_signature

__all__ = ["SIG_FORMAT", "SignedReport", "canonical", "diagnostic_report", "sign_report",
           "provenance", "verify_report", "verify_bundle", "mark_superseded"]

SIG_FORMAT = "application/vnd.federation.ecdsa-sha256+der"
SIGNER_CERT_URL = f"{CONSULT_SYSTEM}:signer-certificate"
#: ASTM E1762-95 signature type "Author's Signature" (FHIR signature-type value set)
AUTHOR_SIGNATURE = {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1",
                    "display": "Author's Signature"}


@dataclass(frozen=True, slots=True)
class SignedReport:
    report: dict[str, Any]
    signature: bytes
    cert_pem: bytes


def canonical(report: Mapping[str, Any]) -> bytes:
    """The bytes a report's signature covers: its JSON without ``meta``, keys sorted."""
    return orjson.dumps({k: v for k, v in report.items() if k != "meta"},
                        option=orjson.OPT_SORT_KEYS)


def diagnostic_report(consult_id: str, version: int, *, kind: str, conclusion: str,
                      codes: Sequence[Mapping[str, str]], author_site: str, author_user: str,
                      subject: Mapping[str, Any], issued: dt.datetime,
                      replaces: str | None = None) -> dict[str, Any]:
    """The report's version ``version`` (``status`` final, amended from version 2)."""
    if not conclusion.strip():
        raise InvalidInput("a report needs its conclusion text")
    code, display = KIND_CATEGORY[kind]
    body: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": f"{consult_id}-r{version}",
        "identifier": [{"system": CONSULT_SYSTEM + ":report", "value": f"{consult_id}-r{version}"}],
        "basedOn": [{"reference": f"ServiceRequest/{consult_id}"}],
        "status": "final" if version == 1 else "amended",
        "category": [{"coding": [{"system": V2_0074, "code": code, "display": display}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "11488-4",
                             "display": "Consult note"}]},
        "subject": dict(subject), "issued": iso(issued),
        "performer": [practitioner_ref(author_site, author_user)],
        "resultsInterpreter": [practitioner_ref(author_site, author_user)],
        "conclusion": conclusion,
    }
    coded = [{"coding": [{k: v for k, v in c.items() if k in ("system", "code", "display") and v}],
              **({"text": c["text"]} if c.get("text") else {})} for c in codes if c.get("code")]
    if coded:
        body["conclusionCode"] = coded
    if replaces:
        body["extension"] = [{"url": f"{CONSULT_SYSTEM}:replaces",
                              "valueReference": {"reference": f"DiagnosticReport/{replaces}"}}]
    return body


def sign_report(report: dict[str, Any], signer: Signer) -> SignedReport:
    """Sign ``report`` with the key of ``signer``'s (person) certificate."""
    return SignedReport(report, signer.sign(canonical(report)), signer.cert_pem)


def provenance(signed: SignedReport, *, when: dt.datetime, site_id: str, user_id: str,
               replaces: str | None = None) -> dict[str, Any]:
    """The Provenance that carries the signature and the signer's certificate."""
    report_id = signed.report["id"]
    cert = x509.load_pem_x509_certificate(signed.cert_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    who = practitioner_ref(site_id, user_id)
    body: dict[str, Any] = {
        "resourceType": "Provenance", "id": f"{report_id}-signature",
        "target": [{"reference": f"DiagnosticReport/{report_id}"}],
        "recorded": iso(when),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "UPDATE" if replaces else "CREATE"}]},
        "agent": [{"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "author"}]}, "who": who}],
        "signature": [{"type": [AUTHOR_SIGNATURE], "when": iso(when), "who": who,
                       "targetFormat": "application/fhir+json", "sigFormat": SIG_FORMAT,
                       "data": base64.b64encode(signed.signature).decode(),
                       "extension": [{"url": SIGNER_CERT_URL,
                                      "valueBase64Binary": base64.b64encode(der).decode()}]}],
    }
    if replaces:
        body["entity"] = [{"role": "revision",
                           "what": {"reference": f"DiagnosticReport/{replaces}"}}]
    return body


def _signature_parts(prov: Mapping[str, Any]) -> tuple[bytes, bytes, dt.datetime, str]:
    try:
        sig = prov["signature"][0]
        data = base64.b64decode(sig["data"], validate=True)
        der = next(base64.b64decode(e["valueBase64Binary"]) for e in sig.get("extension", [])
                   if e.get("url") == SIGNER_CERT_URL)
        when = dt.datetime.fromisoformat(sig["when"])
        target = prov["target"][0]["reference"]
    except (KeyError, IndexError, StopIteration, ValueError, TypeError):
        raise IntegrityError("the Provenance carries no complete signature (data, when, "
                             "signer certificate, target)") from None
    pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    return data, pem, when, target


def verify_report(report: Mapping[str, Any], prov: Mapping[str, Any], ca_pem: bytes, *,
                  signature: bytes | None = None, cert_pem: bytes | None = None
                  ) -> PeerIdentity:
    """Check that a specialist whose person certificate the consortium CA issued signed
    exactly ``report``; return the signer. With ``signature``/``cert_pem`` (the gateway,
    before it builds the Provenance) the Provenance is not consulted."""
    if signature is None or cert_pem is None:
        signature, cert_pem, when, target = _signature_parts(prov)
        if target != f"DiagnosticReport/{report.get('id')}":
            raise IntegrityError(f"the signature is for {target}, not "
                                 f"DiagnosticReport/{report.get('id')}")
    else:
        issued = report.get("issued")
        when = dt.datetime.fromisoformat(issued) if isinstance(issued, str) \
            else dt.datetime.now(dt.UTC)
    signer = verify_certified_signature(canonical(report), signature, cert_pem, ca_pem, when,
                                        role="person", what="the report",
                                        whose="a consortium member of staff's")
    if "specialist" not in signer.staff_roles:
        raise IntegrityError(f"the report was signed by {signer.name}, who is not certified "
                             "as a specialist")
    performer = (report.get("performer") or [{}])[0].get("identifier", {}).get("value")
    if performer != signer.name:
        raise IntegrityError(f"the report names {performer} as its author but was signed by "
                             f"{signer.name}")
    return signer


def verify_bundle(bundle: Mapping[str, Any], ca_pem: bytes) -> list[tuple[str, PeerIdentity]]:
    """Verify every DiagnosticReport in a Bundle against its Provenance (by target);
    [(report id, signer)]. A report without a signature is an IntegrityError."""
    resources = [e.get("resource", {}) for e in bundle.get("entry", [])] \
        if bundle.get("resourceType") == "Bundle" else [dict(bundle)]
    reports = [r for r in resources if r.get("resourceType") == "DiagnosticReport"]
    provs = {p["target"][0]["reference"]: p for p in resources
             if p.get("resourceType") == "Provenance" and p.get("target")}
    if not reports:
        raise InvalidInput("no DiagnosticReport to verify")
    out = []
    for r in reports:
        prov = provs.get(f"DiagnosticReport/{r.get('id')}")
        if prov is None:
            raise IntegrityError(f"DiagnosticReport/{r.get('id')} carries no signature "
                                 "(no Provenance targets it)")
        out.append((str(r["id"]), verify_report(r, prov, ca_pem)))
    return out


def mark_superseded(report: dict[str, Any], by: str, when: dt.datetime) -> dict[str, Any]:
    """An earlier version as it is kept: unchanged but for ``meta`` (outside the
    signature), tagged superseded and naming the version that replaced it."""
    meta = dict(report.get("meta") or {})
    meta["tag"] = [*(meta.get("tag") or []),
                   {"system": REPORT_MARK_SYSTEM, "code": "superseded",
                    "display": f"superseded by DiagnosticReport/{by} at {iso(when)}"}]
    return report | {"meta": meta}
