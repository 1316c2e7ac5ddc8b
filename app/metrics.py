"""Prometheus metrics: what operators watch (gate outcomes, sweeps, executions)."""

from __future__ import annotations

from prometheus_client import Counter

GATE_SCRIPTS = Counter(
    "twokey_gate_scripts_total",
    "Gate scripts run against Redis, by script and result code.",
    ["script", "code"],
)
SWEEPS = Counter("twokey_sweeps_total", "Sweeper passes, by result.", ["result"])
AUDIT_FAULTS = Counter(
    "twokey_audit_faults_total",
    "Audit sealing faults, counted on every sweep while they last (alert on any): "
    "unsealable_old_events, seal_list_shrank, seal_list_damaged, seal_mark_damaged.",
    ["fault"],
)
