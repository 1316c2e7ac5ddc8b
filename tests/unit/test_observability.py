"""The alert rules and the dashboard name only metrics twokey exposes, and are well formed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

import app.metrics  # noqa: F401  (registers every metric)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "manifests" / "prometheus" / "twokey-alerts.yaml"
DASHBOARD = ROOT / "manifests" / "grafana" / "twokey-dashboard.json"
NAME = re.compile(r"\btwokey_[a-z0-9_]+")
REQUIRED_ALERTS = {
    "TwokeyExecutionFailed",
    "TwokeySweeperStalled",
    "TwokeyRedisUnreachable",
    "TwokeyAuditUnsealed",
    "TwokeyBreakGlassUsed",
}


def exposed_names() -> set[str]:
    """Every series name /metrics can carry, from the registry's TYPE lines."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith("# TYPE twokey_"):
            _, _, name, kind = line.split()
            name = name.removesuffix("_total")
            names.update(name + suffix for suffix in suffixes.get(kind, ("",)))
    return names


def rule_exprs() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule["expr"] for group in doc["groups"] for rule in group["rules"]}


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in doc["panels"] for target in panel["targets"]]


def test_every_metric_a_rule_or_panel_names_is_exposed() -> None:
    exposed = exposed_names()
    named = {m for expr in [*rule_exprs().values(), *dashboard_exprs()] for m in NAME.findall(expr)}
    assert named, "no twokey metric named at all"
    assert named - exposed == set()


def test_the_alerts_operators_need_exist_with_severity_and_words() -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert REQUIRED_ALERTS <= {rule["alert"] for rule in rules}
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_dashboard_is_importable_json_with_unique_panels() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"] and doc["uid"]
    ids = [panel["id"] for panel in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        assert panel["type"] in {"timeseries", "stat"}
        assert panel["targets"] and all(t["refId"] for t in panel["targets"])


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool") or str(Path(sys.prefix) / "bin" / "promtool")
    if not Path(promtool).exists():
        pytest.skip("promtool is not installed (Debian: the prometheus package)")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
