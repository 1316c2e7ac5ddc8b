"""Pure aggregation of verified audit events into every figure of the report. No I/O.

Events arrive shard by shard, each shard in seq order (app/report/source.py). A request lives in
its target's shard, so all of a request's events, and all of a target's, arrive together: the
builder keeps one small ``Track`` per request of the current shard, folds them into the totals
when the shard ends and forgets them. Memory grows with one shard's requests and with the rows
the report must list (executions, break-glass uses, ...), never with the number of events.

Only what the trail says is counted. Facts the trail does not carry (a tier's rules, names, a
break-glass justification, which connector ran) are added later as context and labelled so.
"""

from __future__ import annotations

import bisect
import json
from array import array
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.audit.chain import stream_id_ms

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
SYSTEM_ACTOR = "twokey"
AUTO_REVOKE_TIER = "auto_revoke"
ROTATE = "rotate-secret"
UNVERIFIED_KEPT = 1_000
"""Unverified events listed one by one (all are counted); the rest is a number."""

OUTCOMES = (
    "completed",
    "failed",
    "unknown",
    "interrupted",
    "denied",
    "rejected_by_owner",
    "expired",
    "cancelled",
    "open",
)
"""Final states as the report groups them; ``open`` is pending, ready or executing at the end."""
EXECUTED_OUTCOMES = ("completed", "failed", "unknown", "interrupted")
SPEED_BINS_MS = (60_000, 5 * 60_000, 15 * 60_000, 3_600_000, 4 * 3_600_000, DAY_MS)
SPEED_BIN_LABELS = ("< 1 min", "1-5 min", "5-15 min", "15-60 min", "1-4 h", "4-24 h", "> 24 h")


@dataclass(frozen=True)
class TierFacts:
    """What the policy says of a tier (context: the trail only names the tier)."""

    label: str = ""
    privileged: bool = False
    alert_security: bool = False
    owner_confirmation: bool = True
    approvals: int = 1


@dataclass(frozen=True)
class PolicyFacts:
    tiers: Mapping[str, TierFacts] = field(default_factory=dict)
    strictest_tier: str = ""
    """Where a flagged target or a velocity escalation puts a request."""
    flag_window_ms: int = 7 * DAY_MS


@dataclass
class Track:
    """One request's story as its verified events tell it."""

    rid: str
    shard: int
    action: str = ""
    target: str = ""
    tier: str = ""
    ticket: str = ""
    requester: str = ""
    via: str = ""
    opened_at: int | None = None
    breakglass: bool = False
    flagged_at_open: bool = False
    state: str = ""
    owner_at: int | None = None
    owner_by: str = ""
    owner_live: bool = False
    approvers: dict[str, int] = field(default_factory=dict)
    """Approvals still counting (withdrawn ones removed), approver -> when."""
    approved_ever: list[tuple[str, int]] = field(default_factory=list)
    claimed_at: int | None = None
    claim_owner: str = ""
    claim_approvers: tuple[str, ...] = ()
    claim_gated: bool = False
    finished_at: int | None = None
    outcome: str = ""
    decided_by: str = ""
    decided_at: int | None = None
    expired_from: str = ""
    escalated: bool = False
    reminded: bool = False
    review_closed_at: int | None = None
    reviewer: str = ""
    review_kind: str = ""
    review_note: str = ""
    incidents: list[tuple[str, int, str, str]] = field(default_factory=list)
    """(kind, at, actor, reason) of rejections, disputes and refused attempts."""
    secret_undelivered: bool = False
    late_results: int = 0


def _percentiles(values: array[int]) -> dict[str, int | None]:
    """Nearest-rank p50/p90/p99 and max, in ms (None when there are no values)."""
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: int) -> int:
        return ordered[max(0, -(-p * n // 100) - 1)]

    return {"count": n, "p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1]}


def _bin_of(ms: int) -> int:
    return bisect.bisect_right(SPEED_BINS_MS, ms)


class ReportBuilder:
    """Feed it verified events (``evidence``) and unverified ones; ``finish`` gives the figures.

    ``since_ms``/``until_ms``: the period. A request is reported when it opened in the period;
    what happened to it is taken up to ``until_ms``. Refusals, rejections and disputes are
    counted when they happened in the period, whenever their request opened.
    """

    def __init__(self, facts: PolicyFacts, since_ms: int, until_ms: int) -> None:
        self.facts = facts
        self.since = since_ms
        self.until = until_ms
        self.bucket_ms = WEEK_MS if until_ms - since_ms > 62 * DAY_MS else DAY_MS
        self._tracks: dict[str, Track] = {}
        self._flagged_until: dict[str, int] = {}
        self.evidence_events = 0
        self.events_in_period = 0
        self.events_after_until = 0
        self.unverified_count = 0
        self.unverified_in_period = 0
        self.unverified_rows: list[dict[str, Any]] = []
        self.unverified_by_why: Counter[str] = Counter()
        # 1. volume
        self.volume: Counter[tuple[int, str, str, str]] = Counter()
        # 2. speed
        self.speed: dict[str, dict[str, array[int]]] = defaultdict(
            lambda: {"owner": array("q"), "approval": array("q"), "execution": array("q")}
        )
        self.speed_bins: dict[str, list[int]] = defaultdict(lambda: [0] * len(SPEED_BIN_LABELS))
        self.expired: list[dict[str, Any]] = []
        self.stalled: Counter[str] = Counter()
        self.escalated = 0
        self.reminded = 0
        # 3. separation of duties
        self.executions: list[dict[str, Any]] = []
        self.gate_kinds: Counter[str] = Counter()
        # 4. fraud
        self.refusals_by_reason: Counter[str] = Counter()
        self.incidents_by_agent: dict[str, Counter[str]] = defaultdict(Counter)
        self.incidents_by_target: dict[str, Counter[str]] = defaultdict(Counter)
        self.owner_rejections: list[dict[str, Any]] = []
        self.disputes: list[dict[str, Any]] = []
        self.flagged_targets: set[str] = set()
        self.opened_while_flagged = 0
        self.velocity_escalations = 0
        self.velocity_refusals = 0
        # 5-7
        self.breakglass: list[dict[str, Any]] = []
        self.privileged: list[dict[str, Any]] = []
        self.rotations: Counter[tuple[str, str]] = Counter()
        self.rotation_rows: list[dict[str, Any]] = []
        self.last_rotation: dict[str, int] = {}
        self.nhi_targets: set[str] = set()
        self.secrets_undelivered = 0

    # --- feeding -------------------------------------------------------------------------------

    def evidence(self, shard: int, event: dict[str, Any]) -> None:
        """One verified event (source.EventSink)."""
        self.evidence_events += 1
        at = event.get("at")
        if not isinstance(at, int) or at >= self.until:
            self.events_after_until += 1
            return
        if at >= self.since:
            self.events_in_period += 1
        rid = str(event.get("rid", ""))
        if event.get("kind") == "open_refused":  # refused before any request existed
            if self.since <= at:
                self._count_open_refused(event)
            return
        track = self._tracks.get(rid)
        if track is None:
            track = self._tracks[rid] = Track(rid, shard)
        self._apply(track, event, at)

    def unverified(self, shard: int, stream_id: str, fields: Mapping[str, str], why: str) -> None:
        """An event the chain does not vouch for: listed apart, never counted (EventSink)."""
        self.unverified_count += 1
        self.unverified_by_why[why] += 1
        written = stream_id_ms(stream_id)
        if written is not None and self.since <= written < self.until:
            self.unverified_in_period += 1
        if len(self.unverified_rows) < UNVERIFIED_KEPT:
            row: dict[str, Any] = {"shard": shard, "stream_id": stream_id, "why": why}
            row["seq"] = fields.get("seq", "")[:24]
            row["written_at"] = written
            raw = fields.get("e", "")
            # What it claims to be (untrusted, shown as such): kind and request id only.
            try:
                claimed = json.loads(raw)
            except (ValueError, RecursionError):  # not one of ours: nested past any limit
                claimed = None
            if isinstance(claimed, dict):
                row["kind"] = str(claimed.get("kind", ""))[:40]
                row["rid"] = str(claimed.get("rid", ""))[:40]
            self.unverified_rows.append(row)

    def shard_done(self, shard: int) -> None:
        """Fold the shard's requests into the totals and forget them (source.EventSink)."""
        for track in self._tracks.values():
            self._fold(track)
        self._tracks.clear()
        self._flagged_until.clear()

    def _apply(self, t: Track, e: dict[str, Any], at: int) -> None:
        kind = str(e.get("kind", ""))
        actor = str(e.get("actor", ""))
        to = e.get("to")
        if isinstance(to, str) and to:
            t.state = to
        if kind in ("opened", "breakglass_opened"):
            t.opened_at = at
            t.breakglass = kind == "breakglass_opened"
            t.action, t.target = str(e.get("action", "")), str(e.get("target", ""))
            t.tier, t.ticket = str(e.get("tier", "")), str(e.get("ticket", ""))
            t.requester, t.via = actor, str(e.get("via", ""))
            t.flagged_at_open = self._flagged_until.get(t.target, 0) > at
        elif kind == "owner_confirmed":
            if t.owner_at is None:
                t.owner_at = at
            t.owner_by, t.owner_live = actor, True
        elif kind == "owner_confirmation_withdrawn":
            t.owner_live = False
        elif kind == "approved":
            t.approvers[actor] = at
            t.approved_ever.append((actor, at))
        elif kind == "approval_withdrawn":
            t.approvers.pop(actor, None)
        elif kind == "execution_started":
            t.claimed_at = at
            t.claim_owner = t.owner_by if t.owner_live else ""
            t.claim_approvers = tuple(t.approvers)
            t.claim_gated = bool(t.claim_owner or t.claim_approvers)
        elif kind in ("executed", "execution_unrecorded"):
            t.finished_at = at
            t.outcome = str(e.get("outcome", ""))
        elif kind == "interrupted":
            t.finished_at = at
            t.outcome = "interrupted"
        elif kind in ("denied", "cancelled"):
            t.decided_by, t.decided_at = actor, at
        elif kind == "rejected_by_owner":
            t.decided_by, t.decided_at = actor, at
            t.incidents.append((kind, at, actor, str(e.get("reason", ""))))
            self._flag(t.target, at)
        elif kind == "disputed":
            t.incidents.append((kind, at, actor, str(e.get("reason", ""))))
            self._flag(t.target, at)
        elif kind == "refused":
            t.incidents.append((kind, at, actor, str(e.get("reason", ""))))
        elif kind == "expired":
            t.expired_from = str(e.get("from", ""))
            t.decided_at = at
        elif kind == "escalated":
            t.escalated = True
        elif kind == "reminded":
            t.reminded = True
        elif kind in ("review_closed", "review_closed_by_operator"):
            t.review_closed_at, t.reviewer, t.review_kind = at, actor, kind
            t.review_note = str(e.get("reason", ""))
        elif kind == "secret_undelivered":
            t.secret_undelivered = True
        elif kind == "late_result":
            t.late_results += 1

    def _flag(self, target: str, at: int) -> None:
        """A rejection or dispute flags the target for the fraud window (dispute.lua)."""
        self._flagged_until[target] = at + self.facts.flag_window_ms
        if self.since <= at:
            self.flagged_targets.add(target)

    # --- folding one request --------------------------------------------------------------------

    def _in_period(self, at: int | None) -> bool:
        return at is not None and self.since <= at < self.until

    def _fold(self, t: Track) -> None:
        for kind, at, actor, reason in t.incidents:
            if self._in_period(at):
                self._count_incident(t, kind, at, actor, reason)
        if t.action == ROTATE and t.outcome == "completed" and t.finished_at is not None:
            self.last_rotation[t.target] = max(self.last_rotation.get(t.target, 0), t.finished_at)
        if t.action == ROTATE and t.target:
            self.nhi_targets.add(t.target)
        if t.breakglass and t.opened_at is not None:
            review_open = t.review_closed_at is None
            if self._in_period(t.opened_at) or self._in_period(t.review_closed_at) or review_open:
                self._breakglass_row(t)
        if not self._in_period(t.opened_at):
            return
        assert t.opened_at is not None
        outcome = self._outcome(t)
        bucket = (t.opened_at - self.since) // self.bucket_ms
        self.volume[(bucket, t.action, t.tier, outcome)] += 1
        self._speed(t)
        if outcome == "expired":
            self._expired_row(t)
        self.escalated += t.escalated
        self.reminded += t.reminded
        self.secrets_undelivered += t.secret_undelivered
        if t.claimed_at is not None:
            self._execution_row(t, outcome)
        strictest = t.tier == self.facts.strictest_tier and bool(t.tier)
        if strictest and t.flagged_at_open:
            self.opened_while_flagged += 1
        elif strictest and not t.breakglass:
            self.velocity_escalations += 1
        facts = self.facts.tiers.get(t.tier, TierFacts())
        if facts.privileged or facts.alert_security or t.breakglass or strictest:
            self.privileged.append(
                {
                    "rid": t.rid,
                    "opened_at": t.opened_at,
                    "action": t.action,
                    "target": t.target,
                    "tier": t.tier,
                    "requester": t.requester,
                    "outcome": outcome,
                    "privileged_tier": facts.privileged,
                    "security_alerted": facts.alert_security or t.breakglass or strictest,
                }
            )
        if t.action == ROTATE:
            self.rotation_rows.append(
                {"rid": t.rid, "target": t.target, "outcome": outcome, "at": t.finished_at}
            )

    def _outcome(self, t: Track) -> str:
        if t.outcome in EXECUTED_OUTCOMES:
            return t.outcome
        if t.state in OUTCOMES:
            return t.state
        return "open"

    def _count_open_refused(self, event: dict[str, Any]) -> None:
        reason = str(event.get("reason", "")) or "policy"
        if reason == "velocity":
            self.velocity_refusals += 1
        label = f"open refused ({reason})"
        self.incidents_by_agent[str(event.get("actor", ""))][label] += 1
        self.incidents_by_target[str(event.get("target", ""))][label] += 1

    def _count_incident(self, t: Track, kind: str, at: int, actor: str, reason: str) -> None:
        label = {"rejected_by_owner": "this wasn't me", "disputed": "disputed after change"}.get(
            kind, f"refused {reason}"
        )
        if kind == "refused":
            self.refusals_by_reason[reason] += 1
            agent = actor
        else:
            agent = t.requester
            row = {"rid": t.rid, "at": at, "target": t.target, "requester": t.requester}
            row.update({"action": t.action, "outcome": self._outcome(t), "owner": actor})
            (self.owner_rejections if kind == "rejected_by_owner" else self.disputes).append(row)
        self.incidents_by_agent[agent][label] += 1
        self.incidents_by_target[t.target][label] += 1

    def _speed(self, t: Track) -> None:
        assert t.opened_at is not None
        speed = self.speed[t.tier]
        if t.owner_at is not None:
            speed["owner"].append(t.owner_at - t.opened_at)
        counted = [
            when for _, when in t.approved_ever if t.claimed_at is None or when <= t.claimed_at
        ]
        if counted:
            speed["approval"].append(max(counted) - t.opened_at)
        if t.finished_at is not None and t.outcome in EXECUTED_OUTCOMES:
            took = t.finished_at - t.opened_at
            speed["execution"].append(took)
            self.speed_bins[t.tier][_bin_of(took)] += 1

    def _stalled_at(self, t: Track) -> str:
        """Where an expired request was waiting when its time ran out."""
        facts = self.facts.tiers.get(t.tier)
        needed = facts.approvals if facts else None
        waits = []
        if t.owner_at is None and (facts is None or facts.owner_confirmation):
            waits.append("owner confirmation")
        if needed is not None and len(t.approvers) < needed and not t.breakglass:
            waits.append(f"approvals ({len(t.approvers)} of {needed})")
        elif needed is None and not t.approvers:
            waits.append("approval")
        return " and ".join(waits) or f"{t.expired_from or 'ready'}: gates held, never claimed"

    def _expired_row(self, t: Track) -> None:
        where = self._stalled_at(t)
        self.stalled[where] += 1
        self.expired.append(
            {
                "rid": t.rid,
                "opened_at": t.opened_at,
                "expired_at": t.decided_at,
                "action": t.action,
                "target": t.target,
                "tier": t.tier,
                "requester": t.requester,
                "stalled_at": where,
                "approvals": len(t.approvers),
                "owner_confirmed": t.owner_at is not None,
            }
        )

    def _execution_row(self, t: Track, outcome: str) -> None:
        automatic = t.requester == SYSTEM_ACTOR and t.tier == AUTO_REVOKE_TIER
        if automatic:
            gate = "owner's dispute"
        elif t.claim_owner and t.claim_approvers:
            gate = "owner + approval"
        elif t.claim_owner:
            gate = "owner only"
        elif t.claim_approvers:
            gate = "approval only"
        else:
            gate = "none"
        if t.breakglass:
            gate = f"break-glass, {gate}" if gate != "none" else "break-glass (review)"
        self.gate_kinds[gate] += 1
        conflicts = sorted({a for a in t.claim_approvers if a in (t.requester, t.target)})
        if t.claim_owner and t.claim_owner == t.requester and not automatic:
            conflicts.append(t.claim_owner)
        self.executions.append(
            {
                "rid": t.rid,
                "ticket": t.ticket,
                "claimed_at": t.claimed_at,
                "finished_at": t.finished_at,
                "action": t.action,
                "target": t.target,
                "tier": t.tier,
                "requester": t.requester,
                "owner_confirmed_by": t.claim_owner,
                "approvers": list(t.claim_approvers),
                "breakglass": t.breakglass,
                "gate": gate,
                "lacks_gate": gate == "none",
                "sod_conflict": conflicts,
                "outcome": outcome,
            }
        )

    def _breakglass_row(self, t: Track) -> None:
        end = t.review_closed_at if t.review_closed_at is not None else self.until
        assert t.opened_at is not None
        self.breakglass.append(
            {
                "rid": t.rid,
                "opened_at": t.opened_at,
                "action": t.action,
                "target": t.target,
                "requester": t.requester,
                "outcome": self._outcome(t),
                "review_open": t.review_closed_at is None,
                "reviewer": t.reviewer,
                "reviewed_as": {
                    "review_closed": "security reviewer",
                    "review_closed_by_operator": "operator (CLI)",
                }.get(t.review_kind, ""),
                "review_note": t.review_note,
                "review_closed_at": t.review_closed_at,
                "review_open_ms": end - t.opened_at,
            }
        )

    # --- the figures -----------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Every figure, JSON-ready (ids, not names: names are context added later)."""
        for track in self._tracks.values():  # a caller that never said shard_done
            self._fold(track)
        self._tracks.clear()
        return {
            "volume": self._volume_figures(),
            "speed": self._speed_figures(),
            "separation_of_duties": self._sod_figures(),
            "fraud": self._fraud_figures(),
            "breakglass": self._breakglass_figures(),
            "privileged": self._privileged_figures(),
            "nhi_secrets": self._nhi_figures(),
        }

    def _volume_figures(self) -> dict[str, Any]:
        by_bucket: dict[int, Counter[str]] = defaultdict(Counter)
        by_action: dict[str, Counter[str]] = defaultdict(Counter)
        by_tier: dict[str, Counter[str]] = defaultdict(Counter)
        total: Counter[str] = Counter()
        for (bucket, action, tier, outcome), n in self.volume.items():
            by_bucket[bucket][outcome] += n
            by_action[action][outcome] += n
            by_tier[tier][outcome] += n
            total[outcome] += n
        buckets = -(-(self.until - self.since) // self.bucket_ms)
        return {
            "bucket": "week" if self.bucket_ms == WEEK_MS else "day",
            "requests": sum(total.values()),
            "by_outcome": {o: total[o] for o in OUTCOMES},
            "per_bucket": [
                {"start": self.since + b * self.bucket_ms, **{o: by_bucket[b][o] for o in OUTCOMES}}
                for b in range(buckets)
            ],
            "by_action": {a: {o: c[o] for o in OUTCOMES} for a, c in sorted(by_action.items())},
            "by_tier": {t: {o: c[o] for o in OUTCOMES} for t, c in sorted(by_tier.items())},
        }

    def _speed_figures(self) -> dict[str, Any]:
        tiers = {
            tier: {step: _percentiles(values) for step, values in steps.items()}
            for tier, steps in sorted(self.speed.items())
        }
        self.expired.sort(key=lambda r: (r["opened_at"], r["rid"]))
        return {
            "by_tier": tiers,
            "distribution": {
                "bins": list(SPEED_BIN_LABELS),
                "by_tier": {t: list(b) for t, b in sorted(self.speed_bins.items())},
            },
            "expired": len(self.expired),
            "stalled_at": dict(self.stalled.most_common()),
            "expired_requests": self.expired,
            "escalated": self.escalated,
            "reminded": self.reminded,
        }

    def _sod_figures(self) -> dict[str, Any]:
        self.executions.sort(key=lambda r: (not r["lacks_gate"], r["claimed_at"], r["rid"]))
        return {
            "executions": len(self.executions),
            "lacking_gate": sum(r["lacks_gate"] for r in self.executions),
            "with_owner_confirmation": sum(bool(r["owner_confirmed_by"]) for r in self.executions),
            "with_approval": sum(bool(r["approvers"]) for r in self.executions),
            "sod_conflicts": sum(bool(r["sod_conflict"]) for r in self.executions),
            "by_gate": dict(self.gate_kinds.most_common()),
            "by_outcome": {
                o: sum(r["outcome"] == o for r in self.executions) for o in EXECUTED_OUTCOMES
            },
            "rows": self.executions,
        }

    def _fraud_figures(self) -> dict[str, Any]:
        def table(source: dict[str, Counter[str]]) -> list[dict[str, Any]]:
            rows = [{"who": who, "total": sum(c.values()), **dict(c)} for who, c in source.items()]
            return sorted(rows, key=lambda r: (-r["total"], r["who"]))

        self.owner_rejections.sort(key=lambda r: (r["at"], r["rid"]))
        self.disputes.sort(key=lambda r: (r["at"], r["rid"]))
        return {
            "owner_rejections": len(self.owner_rejections),
            "disputes": len(self.disputes),
            "refused_attempts": sum(self.refusals_by_reason.values()),
            "refusals_by_reason": dict(sorted(self.refusals_by_reason.items())),
            "flagged_accounts": sorted(self.flagged_targets),
            "opened_while_flagged": self.opened_while_flagged,
            "velocity_escalations": self.velocity_escalations,
            "velocity_refusals": self.velocity_refusals,
            "by_agent": table(self.incidents_by_agent),
            "by_target": table(self.incidents_by_target),
            "owner_rejection_rows": self.owner_rejections,
            "dispute_rows": self.disputes,
        }

    def _breakglass_figures(self) -> dict[str, Any]:
        self.breakglass.sort(key=lambda r: (not r["review_open"], -r["review_open_ms"], r["rid"]))
        return {
            "uses": sum(self._in_period(r["opened_at"]) for r in self.breakglass),
            "reviews_open": sum(r["review_open"] for r in self.breakglass),
            "reviews_closed": sum(not r["review_open"] for r in self.breakglass),
            "rows": self.breakglass,
        }

    def _privileged_figures(self) -> dict[str, Any]:
        self.privileged.sort(key=lambda r: (r["opened_at"], r["rid"]))
        outcomes: Counter[str] = Counter(r["outcome"] for r in self.privileged)
        return {
            "requests": len(self.privileged),
            "security_alerted": sum(r["security_alerted"] for r in self.privileged),
            "by_outcome": {o: outcomes[o] for o in OUTCOMES},
            "rows": self.privileged,
        }

    def _nhi_figures(self) -> dict[str, Any]:
        self.rotation_rows.sort(key=lambda r: (r["at"] or 0, r["rid"]))
        ages: list[dict[str, Any]] = []
        for nhi in sorted(self.nhi_targets | set(self.last_rotation)):
            at = self.last_rotation.get(nhi)
            age = self.until - at if at is not None else None
            ages.append({"nhi": nhi, "rotated_at": at, "age_ms": age})
        return {
            "rotations": len(self.rotation_rows),
            "rotation_rows": self.rotation_rows,
            "secret_age": ages,
            "secrets_undelivered": self.secrets_undelivered,
        }
