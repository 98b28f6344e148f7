"""The node's quality pass counts what it serves and keeps a recent report."""

from __future__ import annotations

from federation.nodes.adapters import open_sources
from federation.nodes.service import NodeService


def _service(consortium, site_id: str) -> NodeService:
    spec = next(s for s in consortium.sites if s.site_id == site_id)
    adapter = open_sources(spec.source_settings())
    return NodeService(site_id, spec.tier, adapter, spec.source_kind)


def test_report_counts_every_patient_and_visit(consortium):
    service = _service(consortium, "county-b")
    report = service.quality_report()
    assert report.mapped["Patient"] == service.patient_count()
    visits = sum(len(service._adapter.encounters(local))
                 for local in service._adapter.iter_patient_ids())
    assert report.mapped["Encounter"] == visits
    # the synthetic county-b plants one bad vital sign row and two bad LIS messages
    reasons = {e.local_key.split("#")[0].split(":")[0]: e.reason for e in report.quarantined}
    assert len(report.quarantined) == 3
    assert "not a calendar date" in reasons["vital_signs"]
    assert {e.local_key.split("#")[0] for e in report.quarantined} >= {"oru-bad.hl7"}
    assert any("OBX-5 not numeric" in e.reason for e in report.quarantined)
    # LIS results arrive as Observations and DiagnosticReports of the same patients
    assert report.mapped["Observation"] > 0 and report.mapped["DiagnosticReport"] > 0


def test_recent_report_is_reused_and_refresh_rescans(consortium):
    service = _service(consortium, "township-b1")
    first = service.quality_report()
    assert service.quality_report() is first
    again = service.quality_report(refresh=True)
    assert again is not first and again.mapped == first.mapped
    assert again.generated_at >= first.generated_at
