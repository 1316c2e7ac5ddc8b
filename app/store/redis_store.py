"""The Redis adapter of the RequestStore port: one Lua script per gate action.

No read-modify-write happens in Python: each method is one script call that checks the state and
the Redis clock, applies the change, re-indexes the next deadline and appends the audit event
(see lua/common.lua). Script result codes map to domain outcomes here and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import wraps
from importlib import resources
from typing import Any, ParamSpec, TypeVar, cast

import redis.asyncio as aioredis
import structlog
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.delivery import Repeated, pending_for
from app.domain.errors import TrailDamaged, Unavailable
from app.domain.models import Action, Approval, Request, RequestState
from app.domain.policy import Signals, VelocityLimit
from app.metrics import AUDIT_FAULTS, REDIS_ERRORS, observe_gate
from app.ports import GateCode, GateReply, Reservation
from app.store.connect import (
    every_primary,
    follow_redirect,
    is_cluster,
    keyless,
    on_node,
    slot_owner,
)
from app.store.keys import SHARDS, Keys, new_request_id, shard_of_request, shard_of_target

log = structlog.get_logger("twokey.store")

AUDIT_DAMAGED = (
    "twokey cannot write its audit trail for this request (its record in the database is "
    "damaged), so nothing was changed. Please tell your security team: twokey's log names it "
    "(audit_counter_damaged)."
)

_STATIC_FIELDS = (
    "id",
    "ticket",
    "action",
    "target_id",
    "target_name",
    "target_kind",
    "target_system",
    "owner_id",
    "requester_id",
    "requester_name",
    "reason_code",
    "note",
    "justification",
    "plan",
    "ticket_details",
)
_SCRIPTS = (
    "open",
    "confirm_owner",
    "reject_by_owner",
    "approve",
    "deny",
    "cancel",
    "claim",
    "record_result",
    "tick",
    "dispute",
    "close_review",
    "annotate",
    "claim_lost",
    "withdraw_gates",
    "step_up",
    "verify_approver",
    "refuse_sign_in",
)
UNAVAILABLE_MESSAGE = (
    "twokey cannot reach its database right now, so nothing was changed. "
    "Please try again in a minute; if it persists, tell the twokey operators."
)

DURABLE_WAIT_MS = 1_000
PERSISTENCE_FRESH_S = 30.0
"""How long what :meth:`RedisRequestStore.check_persistence` found is trusted by claims: a
replica that was away (and so not waited on) is waited on again once it is back."""
"""How long a claim may wait to reach the append-only file or a replica before nothing runs
(shorter than the client's socket timeout, 5 s in bootstrap, so the wait itself never times out)."""

CLAIM_ATTEMPTS = 5
"""Redirects and TRYAGAIN answers a Cluster claim follows before it fails closed."""

CLUSTER_MOVING = (ClusterError, TryAgainError, AskError, SlotNotCoveredError)
"""A Cluster whose slots are moving or failing over, past the client's retries: unavailable
for now (never a cross-slot error: that is a bug and is raised as such)."""

P = ParamSpec("P")
T = TypeVar("T")


def fails_closed(
    func: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Invariant 6: a Redis outage becomes one clear `Unavailable`, never a half-done change."""

    @wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError, *CLUSTER_MOVING) as exc:
            REDIS_ERRORS.labels(type(exc).__name__).inc()
            raise Unavailable(UNAVAILABLE_MESSAGE) from exc
        except RedisError as exc:
            REDIS_ERRORS.labels(type(exc).__name__).inc()
            if "NOSCRIPT" in str(exc) or "BUSY" in str(exc) or "LOADING" in str(exc):
                raise Unavailable(UNAVAILABLE_MESSAGE) from exc
            raise

    return wrapper


def _load_script_text(name: str) -> str:
    lua = resources.files("app.store").joinpath("lua")
    return lua.joinpath("common.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


def request_from_hash(flat: dict[str, str]) -> Request:
    """Rebuild a Request from its stored hash: the frozen doc plus the moving gate fields."""
    doc: dict[str, Any] = json.loads(flat["doc"])
    ttl = int(flat.get("approval_ttl_ms", "0"))

    def opt(field: str) -> int | None:
        value = int(flat.get(field, "0") or 0)
        return value or None

    approvals = sorted(
        (
            Approval(approver_id=field[5:], approved_at=int(at), valid_until=int(at) + ttl)
            for field, at in flat.items()
            if field.startswith("appr:")
        ),
        key=lambda a: a.approved_at,
    )
    return Request(
        **doc,
        state=RequestState(flat["state"]),
        created_at=int(flat["created_at"]),
        expires_at=int(flat["expires_at"]),
        owner_confirmed_at=opt("owner_at"),
        approvals=tuple(approvals),
        decided_by=flat.get("decided_by") or None,
        decision_reason=flat.get("decision_reason", ""),
        decided_at=opt("decided_at"),
        claimed_at=opt("claimed_at"),
        lease_until=opt("lease_until"),
        finished_at=opt("finished_at"),
        outcome_detail=flat.get("outcome_detail", ""),
        gate_note=flat.get("gate_note", ""),
        reminded=flat.get("reminded") == "1",
        escalated=flat.get("escalated") == "1",
        review_open=flat.get("review_open") == "1",
        reviewed_by=flat.get("reviewed_by") or None,
        dispute_until=opt("dispute_until"),
        disputed_at=opt("disputed_at"),
        events=int(flat.get("events", "0")),
        step_up_verifier=flat.get("stepup_verifier", ""),
        step_up_manager=flat.get("stepup_manager", ""),
        step_up_at=opt("stepup_at"),
        step_up_failures=int(flat.get("stepup_fail", "0") or 0),
        step_up_changed_at=opt("stepup_changed"),
        approvals_unverified=tuple(
            sorted(
                (
                    Approval(approver_id=f[9:], approved_at=int(at), valid_until=int(at) + ttl)
                    for f, at in flat.items()
                    if f.startswith("apprwait:")
                ),
                key=lambda a: a.approved_at,
            )
        ),
    )


@dataclass(frozen=True)
class Persistence:
    """What the Redis server keeps across a restart or failover, read once at start-up."""

    aof: bool
    appendfsync: str
    replicas: int
    waitaof: bool

    @property
    def risk(self) -> str:
        """What a restart or failover could lose, in words for the start-up log ('' if none)."""
        if not self.aof and self.replicas == 0:
            return (
                "no append-only file and no replica: a restart loses every request, approval "
                "and claim since the last snapshot"
            )
        if self.aof and not self.waitaof and self.appendfsync != "always" and not self.replicas:
            return (
                f"appendfsync {self.appendfsync} without WAITAOF (Redis < 7.2): a crash can lose "
                "the last second of writes, including a claim in progress"
            )
        return ""


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


class RedisRequestStore:
    """Requests, their gates and indexes on Redis (single server or Cluster)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys | None = None,
        *,
        claim_grace_ms: int = 5_000,
    ) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self.claim_grace_ms = claim_grace_ms
        self.shards = SHARDS
        self.persistence: Persistence | None = None
        """Set by :meth:`check_persistence`; until then claims are not waited on."""
        self.persistence_checked_at = 0.0
        """time.monotonic() of the last check; claims check again past PERSISTENCE_FRESH_S."""
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(_load_script_text(name)) for name in _SCRIPTS
        }
        self._reserve = redis.register_script(
            resources.files("app.store").joinpath("lua", "reserve_requester.lua").read_text()
        )
        self._open_refused = redis.register_script(
            resources.files("app.store").joinpath("lua", "open_refused.lua").read_text()
        )
        self._release_ticket = redis.register_script(
            resources.files("app.store").joinpath("lua", "release_ticket.lua").read_text()
        )

    # ---- plumbing ----------------------------------------------------------------------------

    def _gate_keys(self, request_id: str) -> list[str]:
        shard = shard_of_request(request_id)
        k = self.keys
        return [
            k.request(request_id),
            k.due(shard),
            k.open_requests(shard),
            k.audit(shard),
            k.audit_seq(shard),
        ]

    async def _run(
        self,
        script: str,
        request_id: str,
        args: Sequence[Any],
        extra_keys: Sequence[str] = (),
        client: aioredis.Redis | None = None,
    ) -> GateReply:
        # The shard's open-requests-by-person index is always the last key (see common.lua).
        who = self.keys.open_index(shard_of_request(request_id))
        # A delivery this call carries is checked (and marked) by this script: one round trip.
        delivery = pending_for(request_id)
        once: list[str] = []
        argv = [request_id, *args]
        if delivery is not None:
            once = [self.keys.once_near(request_id, delivery.scope, delivery.key)]
            argv.append(delivery.keep_s)
        keys = [*self._gate_keys(request_id), *extra_keys, *once, who]
        raw = await self._scripts[script](keys=keys, args=argv, client=client)
        if delivery is not None:
            delivery.taken = True
        word, detail, flat = _text(raw[0]), _text(raw[1]), _pairs(raw[2])
        if word == "AUDIT_DAMAGED":
            AUDIT_FAULTS.labels("audit_counter_damaged").inc()
            log.error(
                "audit_counter_damaged",
                shard=shard_of_request(request_id),
                hint="the shard's audit event counter in Redis is not a count: nothing can be "
                "changed there until it is looked at; treat as a security incident and run "
                "`twokey audit verify`",
            )
            raise TrailDamaged(AUDIT_DAMAGED)
        request = request_from_hash(flat) if flat else None
        observe_gate(script, word, request)
        if word == "REPEATED":
            raise Repeated("This delivery was acted on before.")
        return GateReply(code=gate_code(script, word), detail=detail, request=request)

    def new_request_id(self, target_id: str) -> str:
        return new_request_id(target_id)

    @fails_closed
    async def now(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    @fails_closed
    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # ---- opening -----------------------------------------------------------------------------

    @fails_closed
    async def signals(
        self,
        target_id: str,
        requester_id: str,
        velocity: Sequence[VelocityLimit],
        now: int,
    ) -> Signals:
        """What the policy needs to know of the target: fraud flag and recent history.

        Per-requester counts are not read here but taken, atomically, by
        :meth:`reserve_requester`; ``requester_id`` is no longer used."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.flag(target_id))
            pipe.zrangebyscore(
                self.keys.target_history(target_id),
                now - _longest(velocity),
                "+inf",
                withscores=True,
            )
            flagged, target_hist = await pipe.execute()
        target_count = {
            str(index): _count(target_hist, limit, now)
            for index, limit in enumerate(velocity)
            if limit.per == "target"
        }
        return Signals(target_flagged=bool(flagged), target_count=target_count)

    @fails_closed
    async def audit_refused_open(
        self, target_id: str, actor: str, via: str, role: str, ticket: str, action: str, reason: str
    ) -> None:
        """Audit a request refused before it existed, in the target's shard (one script)."""
        shard = shard_of_target(target_id)
        await self._open_refused(
            keys=[self.keys.audit(shard), self.keys.audit_seq(shard)],
            args=[actor, via, role, ticket, action, target_id, reason],
        )

    @fails_closed
    async def reserve_requester(
        self,
        requester_id: str,
        request_id: str,
        action: Action,
        velocity: Sequence[VelocityLimit],
    ) -> Reservation:
        """Hold the request's place in the requester's history, atomically against their limits.

        The history lives in the requester's own slot (their requests spread over every target
        shard), so open.lua cannot see it: it is checked and written here, in one script, before
        the request opens, and released if it does not. A crash in between leaves the place
        held for the window: it counts against the requester, never for them.
        """
        mine = [(index, limit) for index, limit in enumerate(velocity) if limit.per == "requester"]
        limits = [
            [
                limit.window * 1000,
                ",".join(a.value for a in limit.actions or ()),
                limit.limit,
                1 if limit.then == "refuse" else 0,
            ]
            for _, limit in mine
        ]
        keep_ms = max(_longest(velocity), 86_400_000)
        raw = await self._reserve(
            keys=[self.keys.requester_history(requester_id)],
            args=[f"{request_id}|{action.value}", keep_ms, json.dumps(limits)],
        )
        counts = {str(index): int(seen) for (index, _), seen in zip(mine, raw[1:], strict=True)}
        return Reservation(admitted=int(raw[0]) == 1, counts=counts)

    @fails_closed
    async def release_requester(self, requester_id: str, request_id: str, action: Action) -> None:
        """Give back a place :meth:`reserve_requester` held for a request that did not open."""
        await self.redis.zrem(
            self.keys.requester_history(requester_id), f"{request_id}|{action.value}"
        )

    @fails_closed
    async def use_ticket(self, system: str, number: str, request_id: str, keep_ms: int) -> str:
        """Mark the ticket as backing ``request_id``, atomically (SET NX): the request id that
        holds it, ours when we got it, another's when that request used it first."""
        key = self.keys.ticket_use(system, number)
        held = await self.redis.set(key, request_id, nx=True, px=keep_ms, get=True)
        return request_id if held is None else _text(held)

    @fails_closed
    async def release_ticket(self, system: str, number: str, request_id: str) -> None:
        """Give back a ticket :meth:`use_ticket` marked for a request that did not open."""
        await self._release_ticket(keys=[self.keys.ticket_use(system, number)], args=[request_id])

    @fails_closed
    async def open(
        self,
        request: Request,
        signals: Signals,
        velocity: Sequence[VelocityLimit],
        *,
        via: str,
        role: str,
    ) -> GateReply:
        """Write a new request; code STALE means flags/velocity moved: evaluate again."""
        plan = request.plan
        fields = self._frozen_fields(request)
        checks = [
            [
                limit.window * 1000,
                ",".join(a.value for a in limit.actions or ()),
                signals.target_count.get(str(index), 0),
            ]
            for index, limit in enumerate(velocity)
            if limit.per == "target"
        ]
        keep_ms = max(_longest(velocity), 86_400_000)
        target = request.target_id
        return await self._run(
            "open",
            request.id,
            [
                json.dumps(fields),
                "1" if signals.target_flagged else "0",
                json.dumps(checks),
                plan.request_ttl * 1000,
                (plan.remind_after or 0) * 1000,
                (plan.escalate_after or 0) * 1000,
                "1" if plan.breakglass else "0",
                via,
                keep_ms,
                role,
            ],
            extra_keys=[
                self.keys.flag(target),
                self.keys.target_history(target),
                self.keys.reviews(shard_of_target(target)),
            ],
        )

    def _frozen_fields(self, request: Request) -> dict[str, str]:
        """The fields a request is written with when it opens (and written back if lost)."""
        plan = request.plan
        doc = request.model_dump(mode="json", include=set(_STATIC_FIELDS))
        return {
            "rid": request.id,
            "doc": json.dumps(doc, separators=(",", ":")),
            "ticket": request.ticket,
            "action": request.action.value,
            "target": request.target_id,
            "owner": request.owner_id,
            "requester": request.requester_id,
            "tier": plan.tier,
            "approver_role": plan.approver_role,
            "escalate_to": plan.escalate_to or "",
            "reason_code": request.reason_code,
            "needs_owner": "1" if plan.owner_confirmation else "0",
            "approvals_needed": str(plan.approvals_needed),
            "approval_ttl_ms": str(plan.approval_ttl * 1000),
            "retention_ms": str(plan.retention * 1000),
            "claim_grace_ms": str(self.claim_grace_ms),
            "dispute_window_ms": str(plan.dispute_window * 1000),
            "needs_stepup": "1" if plan.owner_step_up else "0",
            "stepup_ttl_ms": str(plan.step_up_ttl * 1000),
            "stepup_max_fail": str(plan.step_up_max_failures),
            "needs_apprv": "1" if plan.approver_step_up else "0",
        }

    # ---- gate actions ------------------------------------------------------------------------

    @fails_closed
    async def confirm_owner(self, request_id: str, actor: str, via: str) -> GateReply:
        return await self._run("confirm_owner", request_id, [actor, via])

    @fails_closed
    async def reject_by_owner(
        self, request_id: str, actor: str, via: str, flag_window_s: int, target_id: str
    ) -> GateReply:
        return await self._run(
            "reject_by_owner",
            request_id,
            [actor, via, flag_window_s * 1000],
            extra_keys=[self.keys.flag(target_id)],
        )

    @fails_closed
    async def start_step_up(
        self,
        request: Request,
        verifier: str,
        actor: str,
        via: str,
        *,
        code_digest: str = "",
        manager: str = "",
        flag_window_s: int,
    ) -> GateReply:
        return await self._step_up(
            request, "start", actor, via, verifier, code_digest, flag_window_s, manager
        )

    @fails_closed
    async def withdraw_unsent_code(
        self, request: Request, verifier: str, code_digest: str, *, flag_window_s: int
    ) -> GateReply:
        return await self._step_up(
            request, "unsent", "twokey", verifier, verifier, code_digest, flag_window_s
        )

    @fails_closed
    async def record_push(
        self, request: Request, verifier: str, outcome: str, *, flag_window_s: int
    ) -> GateReply:
        return await self._step_up(
            request, "push", request.owner_id, verifier, verifier, outcome, flag_window_s
        )

    @fails_closed
    async def verify_approver(
        self, request_id: str, approver: str, outcome: str, via: str
    ) -> GateReply:
        return await self._run("verify_approver", request_id, [approver, outcome, via])

    @fails_closed
    async def refuse_sign_in(
        self, request_id: str, approver: str, code: GateCode, why: str, via: str
    ) -> GateReply:
        return await self._run("refuse_sign_in", request_id, [approver, code.value, why, via])

    @fails_closed
    async def attest_step_up(
        self, request: Request, actor: str, via: str, confirmed: bool, *, flag_window_s: int
    ) -> GateReply:
        answer = "yes" if confirmed else "no"
        return await self._step_up(request, "attest", actor, via, "", answer, flag_window_s)

    @fails_closed
    async def check_step_up_code(
        self,
        request: Request,
        actor: str,
        via: str,
        code_digests: Sequence[str],
        *,
        flag_window_s: int,
    ) -> GateReply:
        if not code_digests or any(not d.isalnum() for d in code_digests):
            raise ValueError("code digests are hex strings, at least one")
        digests = ",".join(code_digests)
        return await self._step_up(request, "code", actor, via, "", digests, flag_window_s)

    async def _step_up(
        self,
        request: Request,
        op: str,
        actor: str,
        via: str,
        verifier: str,
        digest: str,
        flag_window_s: int,
        manager: str = "",
    ) -> GateReply:
        plan = request.plan
        # a code lives code_ttl; a push or a manager's answer is not asked again before it
        # could have come (push_timeout and a margin)
        ttl_s = plan.code_ttl if digest or op != "start" else plan.push_timeout + 30
        return await self._run(
            "step_up",
            request.id,
            [
                op,
                actor,
                via,
                verifier,
                digest,
                ttl_s * 1000,
                plan.code_attempts,
                flag_window_s * 1000,
                manager,
            ],
            extra_keys=[
                self.keys.flag(request.target_id),
                self.keys.step_up_code(request.id),
                self.keys.step_up_failures(request.target_id),
            ],
        )

    @fails_closed
    async def approve(
        self, request_id: str, actor: str, via: str, roles: Sequence[str]
    ) -> GateReply:
        return await self._run("approve", request_id, [actor, via, _csv(roles)])

    @fails_closed
    async def deny(
        self, request_id: str, actor: str, via: str, roles: Sequence[str], reason: str
    ) -> GateReply:
        return await self._run("deny", request_id, [actor, via, _csv(roles), reason])

    @fails_closed
    async def cancel(
        self, request_id: str, actor: str, via: str, roles: Sequence[str]
    ) -> GateReply:
        return await self._run("cancel", request_id, [actor, via, _csv(roles)])

    @fails_closed
    async def claim(self, request_id: str, actor: str, lease_ms: int, token: str) -> GateReply:
        """Claim execution; OK only once the claim is as durable as the deployment allows.

        Invariant 3 under lost writes: before any connector runs, the claim is fsynced to the
        append-only file (WAITAOF) and/or copied to a replica (WAIT) where the server has them.
        A claim that cannot be made durable in time replies NOT_DURABLE: run nothing.
        """
        args: list[Any] = [actor, lease_ms, token]
        if self.persistence is None:
            return await self._claim_then_wait(request_id, args, self.redis)
        if time.monotonic() - self.persistence_checked_at > PERSISTENCE_FRESH_S:
            # a weaker deployment seen once (a replica away) must not be trusted for good
            await self.check_persistence()
        # WAIT and WAITAOF count the writes of the connection they are sent on: the claim and
        # its wait share one connection, or an idle pooled one would answer "durable" at once.
        if is_cluster(self.redis):
            return await self._claim_on_cluster(request_id, args)
        async with self.redis.client() as pinned:
            return await self._claim_then_wait(request_id, args, pinned)

    async def _claim_on_cluster(self, request_id: str, args: list[Any]) -> GateReply:
        """The claim and its wait on one connection to the primary that owns the request's slot.

        A MOVED or ASK answer means the script did not run there: it runs again, followed by its
        wait, on the node the answer points to. TRYAGAIN (the slot's keys are split between two
        nodes mid-migration) is retried briefly. Past that the claim fails closed (Unavailable):
        nothing runs unless the claim is shown durable on the node that holds it."""
        node = await slot_owner(self.redis, self.keys.request(request_id))
        asking = False
        for attempt in range(CLAIM_ATTEMPTS):
            async with on_node(node, asking=asking) as pinned:
                try:
                    return await self._claim_then_wait(
                        request_id, args, cast(aioredis.Redis, pinned)
                    )
                except AskError as redirect:  # MovedError is one too
                    node, asking = await follow_redirect(self.redis, node, redirect)
                except TryAgainError:
                    await asyncio.sleep(0.05 * (attempt + 1))
        raise ClusterError("the claim's hash slot kept moving; nothing was claimed")

    async def _claim_then_wait(
        self, request_id: str, args: list[Any], client: aioredis.Redis
    ) -> GateReply:
        reply = await self._run("claim", request_id, args, client=client)
        if reply.code is not GateCode.OK:
            return reply
        try:
            durable = await self._claim_is_durable(self.keys.request(request_id), client)
        except (RedisError, OSError):  # e.g. the primary went away right after the claim
            durable = False
        if not durable:
            return reply.model_copy(update={"code": GateCode.NOT_DURABLE})
        return reply

    async def _claim_is_durable(self, key: str, client: aioredis.Redis) -> bool:
        if self.persistence is None:
            return True
        if await self._waited_for(self.persistence, key, client):
            return True
        # The deployment may have changed under us (a failover left the new primary without a
        # replica, AOF turned off): ask again, and hold the claim to what is there now.
        before = self.persistence
        now = await self.check_persistence()
        if now != before:
            log.warning("redis_persistence_changed", replicas=now.replicas, aof=now.aof)
            return await self._waited_for(now, key, client)
        return False

    async def _waited_for(self, persistence: Persistence, key: str, client: aioredis.Redis) -> bool:
        try:  # on a Cluster, on the node that holds the claim
            if persistence.waitaof:
                local, _ = await keyless(client, "WAITAOF", 1, 0, DURABLE_WAIT_MS, key=key)
                if int(local) < 1:
                    return False
            if persistence.replicas > 0:
                copies = await keyless(client, "WAIT", 1, DURABLE_WAIT_MS, key=key)
                if int(copies) < 1:
                    return False
        except ResponseError:
            return False
        return True

    @fails_closed
    async def check_persistence(self) -> Persistence:
        """What a restart of this Redis could lose; claims are then made durable accordingly.

        On a Cluster, the weakest primary counts (a request may live on any of them)."""
        if is_cluster(self.redis):
            return await self._check_cluster_persistence()
        info = await self.redis.info("persistence")
        aof = str(info.get("aof_enabled", "0")) == "1"
        try:
            appendfsync = _text((await self.redis.config_get("appendfsync")).get("appendfsync", ""))
        except ResponseError:  # CONFIG is disabled on some managed services
            appendfsync = "unknown"
        replication = await self.redis.info("replication")
        replicas = int(replication.get("connected_slaves", 0) or 0)
        waitaof = False
        if aof:
            try:
                await self.redis.waitaof(1, 0, DURABLE_WAIT_MS)
                waitaof = True
            except ResponseError:  # Redis before 7.2: no WAITAOF
                waitaof = False
        self.persistence = Persistence(
            aof=aof, appendfsync=appendfsync, replicas=replicas, waitaof=waitaof
        )
        self.persistence_checked_at = time.monotonic()
        return self.persistence

    async def _check_cluster_persistence(self) -> Persistence:
        found = []
        for node in await every_primary(self.redis):
            info = await keyless(self.redis, "INFO", "persistence", node=node)
            replication = await keyless(self.redis, "INFO", "replication", node=node)
            aof = str(info.get("aof_enabled", "0")) == "1"
            waitaof = False
            if aof:
                try:
                    await keyless(self.redis, "WAITAOF", 1, 0, DURABLE_WAIT_MS, node=node)
                    waitaof = True
                except ResponseError:
                    waitaof = False
            try:
                config = await keyless(self.redis, "CONFIG GET", "appendfsync", node=node)
                appendfsync = _text(config.get("appendfsync", ""))
            except ResponseError:
                appendfsync = "unknown"
            replicas = int(replication.get("connected_slaves", 0) or 0)
            found.append(Persistence(aof, appendfsync, replicas, waitaof))
        if not found:  # fail closed: "every primary is durable" must not hold for none
            raise ClusterError("the Cluster client knows no primaries")
        self.persistence = Persistence(
            aof=all(p.aof for p in found),
            appendfsync=found[0].appendfsync if found else "unknown",
            replicas=min((p.replicas for p in found), default=0),
            waitaof=all(p.waitaof for p in found),
        )
        self.persistence_checked_at = time.monotonic()
        return self.persistence

    @fails_closed
    async def claim_lost(
        self, request: Request, token: str, outcome: str, detail: str, dispute_window_s: int
    ) -> GateReply:
        """The provider acted but the claim is gone: end interrupted (see claim_lost.lua)."""
        fields = {
            **self._frozen_fields(request),
            "created_at": str(request.created_at),
            "expires_at": str(request.expires_at),
            "claimed_at": str(request.claimed_at or 0),
        }
        return await self._run(
            "claim_lost",
            request.id,
            [token, outcome, detail, json.dumps(fields), dispute_window_s * 1000],
        )

    @fails_closed
    async def note_refusal(self, actor: str, request_id: str, code: str, window_ms: int) -> int:
        """Count a refused attempt by ``actor``; returns how many fell within the window."""
        key = self.keys.refusals(actor)
        now = await self.now()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {f"{request_id}|{code}|{now}": now})
            pipe.zremrangebyscore(key, "-inf", now - window_ms)
            pipe.zcard(key)
            pipe.pexpire(key, window_ms)
            _, _, count, _ = await pipe.execute()
        return int(count)

    @fails_closed
    async def withdraw_gates(
        self,
        request_id: str,
        approvers: Sequence[str],
        owner: bool,
        why: str,
        *,
        step_up: bool = False,
    ) -> GateReply:
        ids = ",".join(a for a in approvers if a and "," not in a)
        flags = ["1" if owner else "0", why, "1" if step_up else "0"]
        return await self._run("withdraw_gates", request_id, [ids, *flags])

    @fails_closed
    async def record_result(
        self,
        request_id: str,
        token: str,
        state: RequestState,
        detail: str,
        reason: str,
        dispute_window_s: int,
    ) -> GateReply:
        return await self._run(
            "record_result",
            request_id,
            [token, state.value, detail, reason, dispute_window_s * 1000],
        )

    @fails_closed
    async def annotate(
        self, request_id: str, kind: str, actor: str, reason: str, outcome: str
    ) -> GateReply:
        return await self._run("annotate", request_id, [kind, actor, reason, outcome])

    @fails_closed
    async def tick(self, request_id: str) -> GateReply:
        return await self._run("tick", request_id, [])

    @fails_closed
    async def dispute(
        self, request_id: str, actor: str, via: str, flag_window_s: int, target_id: str
    ) -> GateReply:
        return await self._run(
            "dispute",
            request_id,
            [actor, via, flag_window_s * 1000],
            extra_keys=[self.keys.flag(target_id)],
        )

    @fails_closed
    async def close_review(
        self, request_id: str, actor: str, via: str, note: str, *, by_operator: bool = False
    ) -> GateReply:
        role, kind = ("security", "review_closed")
        if by_operator:
            role, kind = ("operator", "review_closed_by_operator")
        shard = shard_of_request(request_id)
        return await self._run(
            "close_review",
            request_id,
            [actor, via, note, role, kind],
            extra_keys=[self.keys.reviews(shard)],
        )

    # ---- reading -----------------------------------------------------------------------------

    @fails_closed
    async def get(self, request_id: str) -> Request | None:
        flat = await self.redis.hgetall(self.keys.request(request_id))
        return request_from_hash(_decoded(flat)) if flat else None

    @fails_closed
    async def due(self, shard: int, now: int, limit: int = 200) -> list[str]:
        """Requests whose next deadline has passed: cost grows with how many are due only."""
        ids = await self.redis.zrangebyscore(self.keys.due(shard), "-inf", now, start=0, num=limit)
        return [_text(i) for i in ids]

    @fails_closed
    async def open_requests(self) -> list[Request]:
        return await self._requests_in(self.keys.open_requests)

    @fails_closed
    async def open_requests_for(self, principal_id: str, roles: Sequence[str]) -> list[Request]:
        """Open requests this person asked for or owns, or a role they hold may decide.

        One lexicographic range per shard and entry kind on the shard's open index, then only
        the requests found: the cost follows what is returned, not how many are open.
        """
        prefixes = [f"r:{principal_id}|", f"o:{principal_id}|", *(f"a:{r}|" for r in roles)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in range(SHARDS):
                for prefix in prefixes:
                    # Request ids are ASCII: every "<prefix><rid>" sorts below "<prefix>\x7f".
                    pipe.zrangebylex(self.keys.open_index(shard), f"[{prefix}", f"({prefix}\x7f")
            found = await pipe.execute()
        entries: dict[str, list[tuple[int, str]]] = {}
        for position, members in enumerate(found):
            for member in members:
                text = _text(member)
                entries.setdefault(text.rpartition("|")[2], []).append(
                    (position // len(prefixes), text)
                )
        if not entries:
            return []
        ids = list(entries)
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hgetall(self.keys.request(rid))
            hashes = await pipe.execute()
        requests = [request_from_hash(_decoded(h)) for h in hashes if h]
        gone = [e for rid, h in zip(ids, hashes, strict=True) if not h for e in entries[rid]]
        if gone:  # a request deleted by hand leaves entries behind: drop them, once
            async with self.redis.pipeline(transaction=False) as pipe:
                for shard, member in gone:
                    pipe.zrem(self.keys.open_index(shard), member)
                await pipe.execute()
        return sorted(requests, key=lambda r: r.created_at)

    @fails_closed
    async def index_open_requests(self) -> int:
        """Give requests opened before the by-person index existed their entries (at start-up;
        idempotent: entries are a set). Returns how many requests were looked at."""
        looked = 0
        for shard in range(SHARDS):
            ids = [_text(i) for i in await self.redis.zrange(self.keys.open_requests(shard), 0, -1)]
            if not ids:
                continue
            async with self.redis.pipeline(transaction=False) as pipe:
                for rid in ids:
                    pipe.hmget(
                        self.keys.request(rid),
                        ["requester", "owner", "approver_role", "escalated", "escalate_to"],
                    )
                rows = await pipe.execute()
            members: dict[str, float] = {}
            for rid, row in zip(ids, rows, strict=True):
                requester, owner, role, escalated, escalate_to = (_text(v or "") for v in row)
                if not requester:
                    continue
                members[f"r:{requester}|{rid}"] = 0
                members[f"o:{owner}|{rid}"] = 0
                if role:
                    members[f"a:{role}|{rid}"] = 0
                if escalated == "1" and escalate_to:
                    members[f"a:{escalate_to}|{rid}"] = 0
            if members:
                await self.redis.zadd(self.keys.open_index(shard), members)
            looked += len(ids)
        return looked

    @fails_closed
    async def open_reviews(self) -> list[Request]:
        return await self._requests_in(self.keys.reviews)

    async def _requests_in(self, index: Callable[[int], str]) -> list[Request]:
        found: list[Request] = []
        for shard in range(SHARDS):
            ids = [_text(i) for i in await self.redis.zrange(index(shard), 0, -1)]
            if not ids:
                continue
            async with self.redis.pipeline(transaction=False) as pipe:
                for rid in ids:
                    pipe.hgetall(self.keys.request(rid))
                hashes = await pipe.execute()
            found.extend(request_from_hash(_decoded(h)) for h in hashes if h)
        return sorted(found, key=lambda r: r.created_at)

    @fails_closed
    async def check_eviction_policy(self) -> str:
        """The server's maxmemory-policy: anything but noeviction may drop pending approvals."""
        try:
            config = await self.redis.config_get("maxmemory-policy")
        except ResponseError as exc:
            words = str(exc)
            if "config" in words.lower() or "NOPERM" in words:
                return "unknown"  # CONFIG is disabled (or not granted) on some managed services
            raise  # e.g. SELECT of a database the server does not have
        return _text(config.get("maxmemory-policy", "unknown"))


def _csv(roles: Sequence[str]) -> str:
    """Roles as the scripts read them; a comma inside a role name could forge another."""
    return ",".join(r for r in roles if r and "," not in r)


def _longest(velocity: Sequence[VelocityLimit]) -> int:
    return max((limit.window * 1000 for limit in velocity), default=0)


def _count(history: Sequence[tuple[Any, float]], limit: VelocityLimit, now: int) -> int:
    since = now - limit.window * 1000
    wanted = {a.value for a in limit.actions} if limit.actions else None
    seen = 0
    for member, score in history:
        action = _text(member).rpartition("|")[2]
        if score >= since and (wanted is None or action in wanted):
            seen += 1
    return seen


def gate_code(script: str, word: str) -> GateCode:
    """A script's answer as a GateCode, once, here; a word this twokey does not know is a
    conflict (the request changed under a newer script), never guessed at."""
    try:
        return GateCode(word)
    except ValueError:
        log.error("gate_code_unknown", script=script, code=word[:40])
        return GateCode.CONFLICT


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decoded(flat: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in flat.items()}
