"""``federation consult …`` for a requester and a specialist against a running gateway, and
``verify`` offline: a delivered report verifies, one signed by a key the CA did not
certify is refused with a clear message."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from federation.cli import cli
from federation.consult.report import diagnostic_report, provenance, sign_report
from federation.referral.fhir import bundle
from federation.security.signing import Signer
from federation.synth.studies import write_ecg_study

pytestmark = pytest.mark.asyncio(loop_scope="module")
NOW = dt.datetime.now(dt.UTC)


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


async def test_cli_for_a_requester_and_a_specialist(world, tmp_path: Path) -> None:
    wang = ["--gateway", world.address, "--credentials", str(world.pki.root / "cdr-wang")]
    li = ["--gateway", world.address, "--credentials", str(world.pki.root / "csp-li")]
    patient = world.linked("county-a")[5]
    folder = write_ecg_study(world.studies["county-a"], "ecg-cli-1", patient, seconds=3)
    code, out = await asyncio.to_thread(
        _cli, "consult", "request", patient, "--kind", "ecg", "--question", "心悸",
        "--study", "ecg-cli-1", *wang)
    assert code == 2 and "consent" in out and "nothing was sent" in out
    code, out = await asyncio.to_thread(
        _cli, "consult", "request", patient, "--kind", "ecg", "--question", "心悸",
        "--study", "ecg-cli-1", "--urgency", "urgent", "--consent", "verbal", *wang)
    assert code == 0, out
    cid = re.search(r"consult (con-[0-9a-f]+) sent to pool city-1-ecg", out).group(1)
    code, out = await asyncio.to_thread(_cli, "consult", "inbox", "--limit", "200", *li)
    assert code == 0 and cid in out
    code, out = await asyncio.to_thread(_cli, "consult", "claim", cid, *li)
    assert code == 0 and "claimed" in out and "city-1/csp-li" in out
    code, out = await asyncio.to_thread(_cli, "consult", "claim", cid, *li)
    assert code == 2 and "cannot claim" in out
    code, out = await asyncio.to_thread(_cli, "consult", "fetch-study", cid, "ecg-cli-1",
                                        "--out", str(tmp_path), *li)
    assert code == 0 and "SHA-256 verified" in out
    assert (tmp_path / "ecg-cli-1" / "ecg-12lead.csv").read_bytes() == \
        (folder / "ecg-12lead.csv").read_bytes()
    code, out = await asyncio.to_thread(_cli, "consult", "report", cid, "--conclusion",
                                        "阵发性室上性心动过速", "--code", "6456007", *li)
    assert code == 0 and "reported (signed)" in out, out
    code, out = await asyncio.to_thread(_cli, "consult", "ack", cid, *wang)
    assert code == 0 and "closed" in out
    code, out = await asyncio.to_thread(_cli, "consult", "status", cid, *wang)
    assert code == 0 and "Report.v1" in out and "History" in out and "ack" in out

    # the report as the requester's node received it verifies offline with the CA
    delivered = next(json.loads(i.payload) for i in world.nodes["county-a"].inbox.items()
                     if json.loads(i.payload).get("id") == f"{cid}-r1-delivery")
    path = tmp_path / "delivered.json"
    path.write_text(json.dumps(delivered, ensure_ascii=False), encoding="utf-8")
    ca = str(world.pki.root / "ca" / "ca.crt")
    code, out = await asyncio.to_thread(_cli, "consult", "verify", str(path), "--ca", ca)
    assert code == 0 and f"DiagnosticReport/{cid}-r1: signature valid" in out
    assert "signed by csp-li (specialist) at city-1" in out


async def test_verify_refuses_a_key_the_ca_did_not_certify(world, tmp_path: Path) -> None:
    foreign = world.pki.root / "foreign"
    report = diagnostic_report("con-x", 1, kind="ecg", conclusion="正常心电图", codes=[],
                               author_site="city-1", author_user="csp-li",
                               subject={"reference": "Patient/p"},
                               issued=NOW)
    signed = sign_report(report, Signer((foreign / "foreign.crt").read_bytes(),
                                        (foreign / "foreign.key").read_bytes()))
    prov = provenance(signed, when=NOW, site_id="city-1", user_id="csp-li")
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(bundle("b", [report, prov], NOW)), encoding="utf-8")
    code, out = await asyncio.to_thread(_cli, "consult", "verify", str(path), "--ca",
                                        str(world.pki.root / "ca" / "ca.crt"))
    assert code == 2 and "CA did not issue" in out
