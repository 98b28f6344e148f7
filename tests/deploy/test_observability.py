"""deploy/observability: every metric the Grafana dashboard and the alert rules use is one
the gateway exports (``exported_metric_names()``), except the audit verifier's
counter, which the audit trail brings and deploy/README.md documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from federation.gateway.ops_metrics import exported_metric_names

REPO = Path(__file__).resolve().parents[2]
OBS = REPO / "deploy" / "observability"
#: exported by the audit trail (federation.audit), documented in deploy/README.md
FROM_AUDIT = {"federation_audit_verify_failures_total"}
_METRIC = re.compile(r"\bfederation_[a-z0-9_]+\b")


def _names(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


def _balanced(expr: str) -> bool:
    depth = 0
    for ch in re.sub(r'"[^"]*"', "", expr):
        depth += {"(": 1, ")": -1, "{": 1, "}": -1, "[": 1, "]": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def _rules() -> list[dict]:
    doc = yaml.safe_load((OBS / "alert-rules.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dash = json.loads((OBS / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_alert_rules_use_only_exported_metrics():
    known = exported_metric_names() | FROM_AUDIT
    used = set()
    for rule in _rules():
        assert _balanced(rule["expr"]), rule["alert"]
        names = _names(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, (rule["alert"], names - known)
        used |= names
    alerts = {r["alert"] for r in _rules()}
    assert {"FederationNodeDown", "FederationSyncLag", "FederationOutboxBacklog",
            "FederationAuditVerificationFailed"} <= alerts
    assert FROM_AUDIT <= used


def test_every_rule_says_what_and_how_bad():
    for rule in _rules():
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_dashboard_uses_only_exported_metrics():
    known = exported_metric_names() | FROM_AUDIT
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    for expr in exprs:
        assert _balanced(expr), expr
        assert _names(expr) and _names(expr) <= known, (expr, _names(expr) - known)
    shown = set().union(*map(_names, exprs))
    for gauge in ("federation_node_up", "federation_sync_lag_seconds",
                  "federation_inbox_pending_items", "federation_empi_review_open"):
        assert gauge in shown


def test_a_misspelt_metric_would_be_caught():
    assert not _names("rate(federation_exchange_total[5m])") <= exported_metric_names()


def test_the_audit_metric_is_documented():
    readme = (REPO / "deploy" / "README.md").read_text()
    assert "federation_audit_verify_failures_total" in readme
