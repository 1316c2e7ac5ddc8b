"""Prometheus metrics: what operators watch (requests, gates, executions, sweeps, Redis).

Most are counted from one place, :func:`observe_gate`, which the store calls with every gate
script's answer: each state change is a script, so the scripts' answers are the events. The
sweeper (app/bootstrap.py) times its passes and sets the backlog gauges; app/web.py times the
chat handlers. manifests/prometheus/ and manifests/grafana/ name only metrics defined here
(tests/unit/test_observability.py checks it).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from app.domain.models import Request

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
REQUESTS_OPENED = Counter(
    "twokey_requests_opened_total", "Requests opened, by action and tier.", ["action", "tier"]
)
DECISIONS = Counter(
    "twokey_gate_decisions_total",
    "Gate decisions that changed a request: confirm_owner, reject_by_owner, approve, deny, "
    "cancel, dispute, close_review.",
    ["kind"],
)
OPEN_TO_EXECUTION = Histogram(
    "twokey_open_to_execution_seconds",
    "Seconds from a request's opening to the end of its execution.",
    buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600),
)
EXECUTIONS = Counter(
    "twokey_executions_total",
    "Executions that ended, by connector (the target's system) and outcome.",
    ["connector", "outcome"],
)
EXPIRIES = Counter("twokey_expiries_total", "Requests that expired before they were decided.")
TIMERS = Counter("twokey_timers_total", "Reminders and escalations sent, by kind.", ["kind"])
FRAUD_FLAGS = Counter(
    "twokey_fraud_flags_total", 'Owners who answered "this wasn\'t me" to a pending request.'
)
DISPUTES = Counter("twokey_disputes_total", "Owners who disputed a change already made.")
BREAKGLASS_USES = Counter("twokey_breakglass_uses_total", "Break-glass requests opened.")
TICKET_WRITES = Counter(
    "twokey_ticket_writes_total",
    "Notes and state changes written back to the ticket system, by kind (note, state) and "
    "result (ok, failed); a failure never undoes or blocks a decision.",
    ["kind", "result"],
)
OPEN_REVIEWS = Gauge("twokey_open_reviews", "Break-glass reviews still open (set by the sweeper).")
HANDLER_SECONDS = Histogram(
    "twokey_handler_seconds",
    "Seconds to answer a Slack or Teams delivery over HTTP, by channel.",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
)
REDIS_ERRORS = Counter(
    "twokey_redis_errors_total", "Redis calls that failed, by error type.", ["error"]
)
SWEEP_SECONDS = Histogram(
    "twokey_sweep_seconds",
    "Seconds one sweeper pass took (expiry, timers, recovery, sealing).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAST_SWEEP = Gauge(
    "twokey_last_sweep_timestamp_seconds", "When this replica last finished a sweeper pass."
)
DUE_BACKLOG = Gauge(
    "twokey_due_backlog", "Requests whose next deadline has passed and await the sweeper."
)
AUDIT_UNSEALED_AGE = Gauge(
    "twokey_audit_unsealed_oldest_seconds",
    "Age of the oldest audit event not yet sealed (0 when all are sealed).",
)
AUDIT_FORWARDED = Counter(
    "twokey_audit_forwarded_total",
    "Sealed audit events a SIEM sink acknowledged, by sink (syslog, hec, webhook).",
    ["sink"],
)
AUDIT_FORWARD_FAILURES = Counter(
    "twokey_audit_forward_failures_total",
    "Forwarding attempts that failed, by sink and reason (unreachable, refused, unavailable, "
    "throttled, blocked, redis, error).",
    ["sink", "reason"],
)
AUDIT_FORWARD_LAG = Gauge(
    "twokey_audit_forward_lag_seconds",
    "Age of the oldest sealed audit event not yet forwarded to the SIEM (0 when none).",
    ["sink"],
)

_DECISION_SCRIPTS = frozenset(
    {"confirm_owner", "reject_by_owner", "approve", "deny", "cancel", "dispute", "close_review"}
)
_ENDED = frozenset({"completed", "failed", "unknown", "interrupted"})


def observe_gate(script: str, code: str, request: Request | None) -> None:
    """Count one gate script's answer; ``request`` is the stored request it returned (or None).

    Only changes are counted (code OK, or a timer that fired), so a double click counts once.
    """
    GATE_SCRIPTS.labels(script, code).inc()
    if request is None:
        return
    if script == "tick":
        if code == "EXPIRED":
            EXPIRIES.inc()
        elif code in ("REMIND", "ESCALATE"):
            TIMERS.labels("reminder" if code == "REMIND" else "escalation").inc()
        elif code == "INTERRUPTED":
            _ended(request)
        return
    if code != "OK":
        return
    if script == "open":
        REQUESTS_OPENED.labels(request.action.value, request.plan.tier).inc()
        if request.plan.breakglass:
            BREAKGLASS_USES.inc()
    elif script in _DECISION_SCRIPTS:
        DECISIONS.labels(script).inc()
        if script == "reject_by_owner":
            FRAUD_FLAGS.inc()
        elif script == "dispute":
            DISPUTES.inc()
    elif script in ("record_result", "claim_lost"):
        _ended(request)


def _ended(request: Request) -> None:
    state = str(request.state.value)
    if state not in _ENDED:
        return
    EXECUTIONS.labels(request.target_system or "default", state).inc()
    if request.finished_at and request.created_at:
        OPEN_TO_EXECUTION.observe(max(request.finished_at - request.created_at, 0) / 1000)
