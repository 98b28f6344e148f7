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


def test_local_codes_no_map_knows_are_counted_not_guessed(consortium):
    import datetime as dt

    from federation.nodes.coding import SiteCoder, Unmapped
    from federation.nodes.model import ConditionRecord, LabResultRecord

    coder = SiteCoder("city-1")
    mapped, gap = coder.code(ConditionRecord(local_id="d1", patient_local_id="p",
                                             text="原发性高血压", local_code="I10.x00"))
    assert (mapped.icd10_code, gap) == ("I10", None)
    kept, gap = coder.code(ConditionRecord(local_id="d2", patient_local_id="p",
                                           text="某病", local_code="Z99.x77"))
    assert kept.icd10_code is None and gap == Unmapped("diagnosis-code", "Z99.x77")
    # county codes already in ICD-10 shape pass as they are
    assert SiteCoder("county-a").icd10("J44.9") == "J44.9"
    when = dt.datetime(2024, 1, 1, 8)
    lab, gap = coder.code(LabResultRecord(local_id="l1", patient_local_id="p", local_code="xyz",
                                          name="空腹血糖", value="5.1", effective=when))
    assert (lab.loinc_code, gap) == ("14771-0", None)        # found by its Chinese name
    lab, gap = coder.code(LabResultRecord(local_id="l2", patient_local_id="p",
                                          local_code="ODD1", name="某项", value="1",
                                          effective=when))
    assert lab.loinc_code is None and gap == Unmapped("lab-code", "ODD1")
    # the site's report counts exactly such codes: none of them has a mapping
    report = _service(consortium, "city-1").quality_report()
    for gap_ in report.unmapped:
        found = coder.icd10(gap_.code) if gap_.kind == "diagnosis-code" \
            else coder.loinc(gap_.code, None)
        assert found is None, gap_
    assert report.to_json()["unmapped_total"] == sum(report.unmapped.values())
