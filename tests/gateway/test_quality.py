"""Per-site data quality: the node's full pass, gathered by the gateway, shown by the CLI."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import shutil
import urllib.request

from click.testing import CliRunner

from federation.cli import cli
from federation.nodes.agent import start_node
from tests.conftest import bearer, node_settings, staff_token


def _broken_township(consortium, tmp_path):
    """township-a1's CSV export plus two rows a person would type wrong."""
    spec = next(s for s in consortium.sites if s.site_id == "township-a1")
    folder = tmp_path / "township-a1-export"
    shutil.copytree(spec.source_path, folder)
    patients = folder / "patients.csv"
    with patients.open(encoding="utf-8-sig", newline="") as fh:
        existing = list(csv.reader(fh))
    header, template = existing[0], existing[-1]
    birth = next(i for i, name in enumerate(header) if "出生" in name)
    name = next(i for i, name in enumerate(header) if "姓名" in name)
    rows = []
    for key, who, born in (("SM99001", "王某某", "1962-13-45"), ("SM99002", "李某某", "1962/02/30")):
        row = list(template)
        row[0], row[name], row[birth] = key, who, born
        rows.append(row)
    with patients.open("a", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return folder


def _get(url: str, token: str):
    with urllib.request.urlopen(urllib.request.Request(url, headers=bearer(token)),
                                timeout=30) as r:
        return json.load(r)


async def test_quality_report_lists_quarantined_records_with_reasons(
        gateway, start_nodes, pki, consortium, tmp_path):
    folder = _broken_township(consortium, tmp_path)
    settings = node_settings(pki, consortium, "township-a1", gateway.grpc_port, tmp_path)
    settings = dataclasses.replace(settings, source=dataclasses.replace(settings.source,
                                                                        path=folder))
    node = await start_node(settings)
    await start_nodes(gateway, "county-a")
    try:
        await asyncio.wait_for(node.link.status.connected_event.wait(), 10)
        base = f"http://127.0.0.1:{gateway.http_port}"
        token = await asyncio.to_thread(staff_token, gateway, pki, site="township-a1",
                                        roles=("site-admin",), purpose="HOPERAT")
        report = await asyncio.to_thread(_get, base + "/api/quality", token)
        sites = {s["site_id"]: s for s in report["sites"]}
        assert set(sites) == {"township-a1", "county-a"}
        bad = sites["township-a1"]
        keys = {e["local_key"] for e in bad["quarantined"]}
        assert any("SM99001" in k for k in keys) and any("SM99002" in k for k in keys)
        assert bad["quarantined_total"] == sum(bad["quarantined_by_reason"].values())
        text = json.dumps(bad, ensure_ascii=False)
        assert "王某某" not in text and "1962-13-45" not in text   # reasons name shapes only
        assert "1962/02/30" not in text
        assert bad["mapped"]["Patient"] > 0 and bad["mapped"]["Encounter"] > 0
        assert sites["county-a"]["quarantined_total"] == 0
        assert {i["site_id"] for i in report["issues"]} == {
            "city-1", "county-b", "township-a2", "township-b1"}
        rows = gateway.store.list_exchanges(limit=20)
        assert {r.target_site for r in rows if r.correlation_id == report["correlation_id"]} \
            == {"township-a1", "county-a"}

        result = await asyncio.to_thread(
            CliRunner().invoke, cli,
            ["sites", "quality", "--gateway-url", base, "--site", "township-a1",
             "--token-file", "-"], input=token)
        assert result.exit_code == 0, result.output
        assert "township-a1" in result.output and "SM99001" in result.output

        missing = await asyncio.to_thread(
            CliRunner().invoke, cli, ["sites", "quality", "--gateway-url", base,
                                      "--site", "nowhere", "--token-file", "-"], input=token)
        assert missing.exit_code == 2 and "nowhere" in missing.output
    finally:
        await node.stop(0.1)
