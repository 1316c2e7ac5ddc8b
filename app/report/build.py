"""`twokey report`: verify and aggregate the trail in one streaming pass, then add context.

Three steps, each replaceable: ``source.read_verified`` streams and verifies, ``ReportBuilder``
counts what verified, and ``_add_context`` puts names and the facts the trail does not carry
(break-glass justifications, connectors, NHI systems) beside the ids. Context is labelled as
such in every format: evidence is what the chain vouches for; context helps a person read it.
Nothing secret is ever read: requests keep no secrets, and the audit key only checks seals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr

from app.audit.chain import ChainHead
from app.domain.models import Action, Principal, PrincipalKind, Request
from app.domain.opening import connector_for
from app.domain.policy import Policy
from app.ports import Directory, IdentityProvider
from app.report.aggregate import PolicyFacts, ReportBuilder, TierFacts
from app.report.controls import control_rows
from app.report.source import ShardCheck, read_verified
from app.store.keys import Keys

REPORT_VERSION = 1
MAX_LOOKUPS = 2_000
"""Directory and request look-ups per report; past it, ids are shown as they are."""


@dataclass
class Context:
    """Where names and facts beyond the trail come from; each one optional."""

    directory: Directory | None = None
    connectors: Sequence[IdentityProvider] = ()
    request: Callable[[str], Awaitable[Request | None]] | None = None
    """The stored request (kept for the policy's retention), for break-glass justifications."""
    _principals: dict[str, Principal | None] = field(default_factory=dict)

    async def principal(self, principal_id: str) -> Principal | None:
        if self.directory is None or not principal_id:
            return None
        if principal_id not in self._principals:
            if len(self._principals) >= MAX_LOOKUPS:
                return None
            try:
                self._principals[principal_id] = await self.directory.get(principal_id)
            except Exception:  # a directory that cannot answer: the id is shown instead
                self._principals[principal_id] = None
        return self._principals[principal_id]


def facts_from_policy(policy: Policy) -> PolicyFacts:
    """What the report needs to know of the policy: tiers, the strictest tier, the flag window."""
    tiers = {
        name: TierFacts(
            label=tier.label or name,
            privileged=tier.privileged,
            alert_security=tier.alert_security,
            owner_confirmation=tier.owner_confirmation,
            approvals=tier.approvals,
        )
        for name, tier in policy.tiers.items()
    }
    return PolicyFacts(
        tiers=tiers,
        strictest_tier=policy.strictest_tier,
        flag_window_ms=policy.fraud.flag_window * 1000,
    )


async def build_report(
    redis: aioredis.Redis,
    keys: Keys,
    audit_key: SecretStr,
    facts: PolicyFacts,
    *,
    since_ms: int,
    until_ms: int,
    context: Context | None = None,
    anchors: Iterable[ChainHead] | None = None,
    previous_keys: Sequence[SecretStr] = (),
) -> dict[str, Any]:
    """The whole report as JSON-ready data: what HTML, PDF and JSON are all rendered from."""
    seconds, micros = await redis.time()
    generated = int(seconds) * 1000 + int(micros) // 1000
    builder = ReportBuilder(facts, since_ms, until_ms)
    anchor_list = list(anchors) if anchors is not None else None
    checks = await read_verified(
        redis, keys, audit_key, builder, anchors=anchor_list, previous_keys=previous_keys
    )
    sections = builder.finish()
    report: dict[str, Any] = {
        "report": "twokey evidence report",
        "version": REPORT_VERSION,
        "namespace": keys.ns,
        "period": {"since": since_ms, "until": until_ms, "bucket": sections["volume"]["bucket"]},
        "generated_at": generated,
        "verification": _verification(builder, checks, anchor_list),
        **sections,
    }
    report["controls"] = control_rows(report)
    await _add_context(report, context or Context())
    return report


def _verification(
    builder: ReportBuilder, checks: list[ShardCheck], anchors: list[ChainHead] | None
) -> dict[str, Any]:
    return {
        "ok": all(c.ok for c in checks),
        "events": sum(c.events for c in checks),
        "evidence": builder.evidence_events,
        "evidence_in_period": builder.events_in_period,
        "unverified": builder.unverified_count,
        "unverified_in_period": builder.unverified_in_period,
        "unverified_by_why": dict(builder.unverified_by_why),
        "anchors_given": len(anchors) if anchors is not None else None,
        "shards": [
            {
                "shard": c.shard,
                "chain": c.chain,
                "events": c.events,
                "sealed": c.sealed,
                "evidence": c.evidence,
                "head_seq": c.head_seq,
                "head_mac": c.head_mac,
                "ok": c.ok,
                "problem": c.problem,
                "problem_kind": c.problem_kind,
            }
            for c in checks
        ],
        "unverified_events": builder.unverified_rows,
    }


async def _add_context(report: dict[str, Any], context: Context) -> None:
    """Names for ids, and facts the trail does not carry, under ``context`` keys."""
    ids: set[str] = set()
    for row in report["separation_of_duties"]["rows"]:
        ids.update([row["requester"], row["target"], row["owner_confirmed_by"], *row["approvers"]])
    for key in ("breakglass", "privileged"):
        for row in report[key]["rows"]:
            ids.update([row["requester"], row["target"], row.get("reviewer", "")])
    for row in report["speed"]["expired_requests"]:
        ids.update([row["requester"], row["target"]])
    fraud = report["fraud"]
    ids.update(r["who"] for r in fraud["by_agent"])
    ids.update(r["who"] for r in fraud["by_target"])
    ids.update(fraud["flagged_accounts"])
    nhi = report["nhi_secrets"]
    ids.update(r["nhi"] for r in nhi["secret_age"])
    names: dict[str, str] = {}
    for principal_id in sorted(i for i in ids if i):
        found = await context.principal(principal_id)
        if found is not None and found.name != principal_id:
            names[principal_id] = found.name
    report["names"] = names

    connectors: dict[tuple[str, str], str] = {}
    for row in report["separation_of_duties"]["rows"]:
        pair = (row["action"], row["target"])
        if pair not in connectors:
            connectors[pair] = await _connector(context, *pair)
        row["connector"] = connectors[pair]
    for row in report["privileged"]["rows"]:
        found = await context.principal(row["target"])
        nhi_target = row["action"] == Action.ROTATE_SECRET.value or (
            found is not None and found.kind is PrincipalKind.NHI
        )
        row["target_kind"] = "production NHI" if nhi_target else "privileged person"
    lookups = 0
    for row in report["breakglass"]["rows"]:
        request = None
        if context.request is not None and lookups < MAX_LOOKUPS:
            lookups += 1
            try:
                request = await context.request(row["rid"])
            except Exception:  # context only: the row stands without it
                request = None
        row["justification"] = request.justification if request is not None else None
    by_system: dict[str, dict[str, int]] = {}
    for row in nhi["rotation_rows"]:
        found = await context.principal(row["target"])
        system = (found.system if found is not None else None) or "unknown"
        row["system"] = system
        counts = by_system.setdefault(system, {})
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    nhi["by_system"] = dict(sorted(by_system.items()))
    for row in nhi["secret_age"]:
        found = await context.principal(row["nhi"])
        row["system"] = found.system if found is not None else None
        row["owner"] = found.owner_id if found is not None else None


async def _connector(context: Context, action: str, target_id: str) -> str:
    """The connector configured now for this change ("" when it cannot be told)."""
    if not context.connectors:
        return ""
    found = await context.principal(target_id)
    if found is None:
        return ""
    try:
        return connector_for(list(context.connectors), Action(action), found).name
    except Exception:  # no configured connector can make it any more
        return ""
