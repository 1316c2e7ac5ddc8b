"""Building a real twokey core for tests: real Redis, sandbox directory and connector."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from app.connectors.sandbox import SandboxConnector, SandboxDirectory
from app.domain.models import Action, ChatUser
from app.notify import RecordingNotifier
from app.policy.loader import load_policy_text
from app.ports import Directory, ExecutionJournal, IdentityProvider, TicketSystem
from app.service import ServiceOptions, StepUpOptions, TwoKey
from app.store.keys import Keys
from app.store.redis_store import RedisRequestStore

TEST_POLICY = """
version: 1
ticket_pattern: '^(INC|REQ|CHG)-\\d{{3,8}}$'
reason_codes: [lost-device, forgotten-password, locked-out, scheduled-rotation]
roles:
  helpdesk: [helpdesk]
  approver: [helpdesk-leads]
  security: [security]
  breakglass: [security-oncall]
requester_role: helpdesk
tiers:
  standard:
    label: Standard
    owner_confirmation: true
    approvals: 1
    approver_role: approver
    request_ttl: {request_ttl}
    approval_ttl: {approval_ttl}
{timers}  privileged:
    label: Privileged account
    privileged: true
    approvals: 2
    approver_role: security
    alert_security: true
    request_ttl: 1h
    approval_ttl: 15m
  production-nhi:
    label: Production non-human identity
    approvals: 1
    approver_role: security
    alert_security: true
  strictest:
    label: Flagged target
    privileged: true
    approvals: 2
    approver_role: security
    alert_security: true
  breakglass:
    label: Break-glass emergency
    privileged: true
    approvals: 1
    approver_role: security
    alert_security: true
rules:
  - name: flagged
    when: {{flagged: true}}
    tier: strictest
  - name: admins
    when: {{target_groups: [admins]}}
    tier: privileged
  - name: production-nhi
    when: {{target_tags: [production]}}
    tier: production-nhi
  - name: default
    tier: standard
{channels}velocity:
{velocity}fraud:
  flag_window: 7d
  flagged_tier: strictest
disputes:
  window: 24h
  auto_revoke_sessions: true
breakglass:
  role: breakglass
  tier: breakglass
  skip: [approvals]
  min_justification: 20
"""
MINIMAL_POLICY = """\
version: 1
reason_codes: [lost-device]
roles:
  helpdesk: [helpdesk]
  approver: [helpdesk-leads]
tiers:
  standard:
    approvals: 1
rules:
  - name: default
    tier: standard
"""
"""The smallest policy twokey takes: one tier, one rule (a base for connector sections)."""
TARGET_VELOCITY = "  - {per: target, actions: [reset-mfa], limit: 2, window: 24h, then: refuse}\n"


def policy_text(
    request_ttl: str = "4h",
    approval_ttl: str = "30m",
    remind_after: str = "15m",
    escalate_after: str = "1h",
    velocity: str = TARGET_VELOCITY,
    *,
    dm_approvers: bool = False,
    channels: dict[str, dict[str, str]] | None = None,
) -> str:
    """The test policy; an empty remind_after/escalate_after leaves that timer out.

    ``velocity`` is the list of velocity limits (YAML lines; empty for none), ``channels``
    where cards and alerts go, e.g. ``{"approvals": {"slack": "C1"}}``.
    """
    timers = ""
    if remind_after:
        timers += f"    remind_after: {remind_after}\n"
    if escalate_after:
        timers += f"    escalate_after: {escalate_after}\n    escalate_to: security\n"
    if dm_approvers:
        timers += "    dm_approvers: true\n"
    where = ""
    if channels:
        where = "channels:\n" + "".join(
            f"  {kind}:\n" + "".join(f"    {platform}: {cid}\n" for platform, cid in ids.items())
            for kind, ids in channels.items()
        )
    return TEST_POLICY.format(
        request_ttl=request_ttl,
        approval_ttl=approval_ttl,
        timers=timers,
        channels=where,
        velocity=velocity or "  []\n",
    )


def chat(principal_id: str, platform: str = "slack", **extra: object) -> ChatUser:
    """The chat account of a sandbox person (email as in the example directory)."""
    fields: dict[str, object] = {"email": f"{principal_id}@example.com", **extra}
    return ChatUser(
        platform=platform,
        user_id=f"U{principal_id.upper()}",
        **fields,  # type: ignore[arg-type]
    )


@dataclass
class Core:
    service: TwoKey
    store: RedisRequestStore
    notifier: RecordingNotifier
    connector: SandboxConnector
    redis: aioredis.Redis
    keys: Keys

    async def open_mfa_reset(self, target: str = "alice", requester: str = "bob") -> str:
        decision = await self.service.open(
            chat(requester), chat(target), Action.RESET_MFA.value, "INC-1234", "lost-device"
        )
        return decision.request.id


def build_core(
    redis: aioredis.Redis,
    namespace: str,
    *,
    policy: str | None = None,
    lease_s: int = 120,
    claim_grace_ms: int = 5_000,
    connector: SandboxConnector | None = None,
    notifier: RecordingNotifier | None = None,
    directory: Directory | None = None,
    journal: ExecutionJournal | None = None,
    providers: Sequence[IdentityProvider] | None = None,
    step_up: StepUpOptions | None = None,
    tickets: TicketSystem | None = None,
) -> Core:
    keys = Keys(namespace)
    store = RedisRequestStore(redis, keys, claim_grace_ms=claim_grace_ms)
    notifier = notifier or RecordingNotifier()
    connector = connector or SandboxConnector()
    service = TwoKey(
        store,
        directory or SandboxDirectory.example(),
        list(providers) if providers is not None else [connector],
        notifier,
        load_policy_text(policy or policy_text(), "test-policy.yaml"),
        ServiceOptions(lease_s=lease_s),
        journal=journal,
        step_up=step_up,
        tickets=tickets,
    )
    return Core(service, store, notifier, connector, redis, keys)
