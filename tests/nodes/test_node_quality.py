"""The node's quality pass counts what it serves and keeps a recent report."""

from __future__ import annotations

from federation.nodes.adapters import open_adapter
from federation.nodes.service import NodeService


def _service(consortium, site_id: str) -> NodeService:
    spec = next(s for s in consortium.sites if s.site_id == site_id)
    adapter = open_adapter(spec.source_kind, spec.source_path, spec.mapping)
    return NodeService(site_id, spec.tier, adapter, spec.source_kind)


def test_report_counts_every_patient_and_visit(consortium):
    service = _service(consortium, "county-b")
    report = service.quality_report()
    assert report.mapped["Patient"] == service.patient_count()
    visits = sum(len(service._adapter.encounters(local))
                 for local in service._adapter.iter_patient_ids())
    assert report.mapped["Encounter"] == visits
    assert report.quarantined == ()


def test_recent_report_is_reused_and_refresh_rescans(consortium):
    service = _service(consortium, "township-b1")
    first = service.quality_report()
    assert service.quality_report() is first
    again = service.quality_report(refresh=True)
    assert again is not first and again.mapped == first.mapped
    assert again.generated_at >= first.generated_at
