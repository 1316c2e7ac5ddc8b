"""Every Redis key twokey uses, and why its hash tag is what it is.

Requests are spread over ``SHARDS`` shards. A request lives in the shard of its *target*, so the
request, its shard's expiry index, its shard's audit stream and seals, and the target's fraud
flag and velocity counters all share one hash tag ``{<ns>:sNN}`` and therefore one cluster slot.
That is what lets each gate action be ONE script that checks the state, checks the clock, applies
the change, updates the expiry index and appends the audit event, on a single Redis or a Cluster.

The shard is also written into the request id (its first character after ``TK-``), so any
request id finds its keys without a lookup. ``SHARDS`` is fixed forever: changing it would move
targets to other shards and orphan their history.
"""

from __future__ import annotations

import hashlib
import secrets

from app.domain.models import REQUEST_ID_ALPHABET, REQUEST_ID_PATTERN

SHARDS = 16


def shard_of_target(target_id: str) -> int:
    digest = hashlib.sha256(target_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") % SHARDS


def shard_of_request(request_id: str) -> int:
    if not REQUEST_ID_PATTERN.fullmatch(request_id):
        raise ValueError(f"not a request id: {request_id!r}")
    return REQUEST_ID_ALPHABET.index(request_id[3]) % SHARDS


def new_request_id(target_id: str) -> str:
    """``TK-`` + shard character + 7 random base32 characters (35 bits of randomness)."""
    shard = shard_of_target(target_id)
    tail = "".join(secrets.choice(REQUEST_ID_ALPHABET) for _ in range(7))
    return f"TK-{REQUEST_ID_ALPHABET[shard]}{tail}"


class Keys:
    """Key names under one namespace (default ``tk``; tests use a fresh one each)."""

    def __init__(self, namespace: str = "tk") -> None:
        self.ns = namespace

    def tag(self, shard: int) -> str:
        return f"{{{self.ns}:s{shard:02d}}}"

    def holds_chain(self, shard: int, chain: str | None) -> bool:
        """Whether a chain head recorded outside Redis (shard, chain) is one of this
        namespace's (a head without a chain name is taken at its shard)."""
        return 0 <= shard < SHARDS and chain in (None, self.tag(shard))

    # --- per request (in its target's shard) -------------------------------------------------
    def request(self, request_id: str) -> str:
        return f"{self.tag(shard_of_request(request_id))}:req:{request_id}"

    # --- per shard ---------------------------------------------------------------------------
    def due(self, shard: int) -> str:
        """Sorted set: request id -> next deadline (expiry, reminder, escalation, lease)."""
        return f"{self.tag(shard)}:due"

    def open_requests(self, shard: int) -> str:
        """Sorted set: request id -> opened at, for requests not yet final (for `list`)."""
        return f"{self.tag(shard)}:open"

    def open_index(self, shard: int) -> str:
        """Sorted set, every score 0, of the open requests (as `open`) by who they concern:
        ``r:<requester>|<rid>``, ``o:<owner>|<rid>``, ``a:<role that may decide>|<rid>``.

        `list` reads one person's entries with a lexicographic range (ZRANGEBYLEX), so it costs
        what it returns, not every open request. Per shard, not per person: every gate script
        may finish a request and must name, in KEYS, each key it changes before it has read the
        request, and a request's index entries must share its slot (its target's shard).
        """
        return f"{self.tag(shard)}:open:who"

    def reviews(self, shard: int) -> str:
        """Sorted set: request id -> opened at, for break-glass uses awaiting review."""
        return f"{self.tag(shard)}:reviews"

    def audit(self, shard: int) -> str:
        """Stream of audit events of this shard, in the order they were written."""
        return f"{self.tag(shard)}:audit"

    def audit_seq(self, shard: int) -> str:
        """Counter: the seq of the last audit event appended in this shard."""
        return f"{self.tag(shard)}:audit:seq"

    def sealing_key_ids(self) -> str:
        """Set: the public ids (app/audit/chain.py key_id) of the keys that ever sealed here:
        verify tells a key that never sealed (a mistyped one) from edited events."""
        return f"{{{self.ns}:audit}}:sealed-by"

    def seals(self, shard: int) -> str:
        """List: element i is the HMAC sealing audit event seq i+1 (see app/audit/chain.py)."""
        return f"{self.tag(shard)}:audit:seals"

    def audit_forward_checkpoint(self, shard: int, sink_id: str) -> str:
        """Hash ``seq``/``sid``: the last event of this shard sink ``sink_id`` acknowledged
        (app/audit/forward.py). The name is kept as is: a restart resumes from it."""
        return f"{self.tag(shard)}:audit:fwd:{sink_id}"

    def audit_forward_lease(self, shard: int, sink_id: str) -> str:
        """String: the token of the one forwarder that may send this shard to ``sink_id`` now."""
        return self.audit_forward_checkpoint(shard, sink_id) + ":lease"

    # --- per target (in the target's shard) --------------------------------------------------
    def flag(self, target_id: str) -> str:
        """Set after "this wasn't me": later requests on the target get the strictest tier."""
        return f"{self.tag(shard_of_target(target_id))}:flag:{target_id}"

    def step_up_failures(self, target_id: str) -> str:
        """Sorted set: "<request id>|<at>|<n>" -> at, the target's failed owner step-ups within
        the fraud flag window. Per target, not per request: an attacker who fails a step-up
        cannot start the count again by opening a new request (step_up.lua)."""
        return f"{self.tag(shard_of_target(target_id))}:stepfail:{target_id}"

    def target_history(self, target_id: str) -> str:
        """Sorted set: "<request id>|<action>" -> opened at, for velocity limits per target."""
        return f"{self.tag(shard_of_target(target_id))}:hist:{target_id}"

    # --- per person (their own slot) --------------------------------------------------------
    def refusals(self, principal_id: str) -> str:
        """Sorted set: "<request id>|<code>|<at>" -> at, refused attempts by one person, for the
        policy's fraud.refusals alert."""
        return f"{{{self.ns}:r:{principal_id}}}:refused"

    # --- per requester (its own slot; see RedisRequestStore.reserve_requester) --------------
    def requester_history(self, requester_id: str) -> str:
        """Sorted set: "<request id>|<action>" -> reserved at, for velocity limits per requester.

        A requester's requests are spread over every shard (they shard by target), so this
        cannot live in a request's slot: an open reserves here first, atomically against the
        limits, and releases the reservation if the request is not opened after all.
        """
        return f"{{{self.ns}:r:{requester_id}}}:hist"

    # --- tickets (their own slot; see RedisRequestStore.use_ticket) -------------------------
    def ticket_use(self, system: str, number: str) -> str:
        """String: the request a ticket backs (policy ``tickets.one_request_per_ticket``). The
        number is hashed, so what an agent typed cannot stretch or shape the key."""
        digest = hashlib.sha256(f"{system}|{number.casefold()}".encode()).hexdigest()[:32]
        return f"{{{self.ns}:t:{digest}}}:used"

    # --- channel-side idempotency and message references --------------------------------------
    def once(self, scope: str, key: str) -> str:
        return f"{{{self.ns}:once}}:{scope}:{key}"

    def once_near(self, request_id: str, scope: str, key: str) -> str:
        """A once-only claim in a request's slot, so its gate script can check and set it (see
        app/delivery.py and the delivery check in lua/common.lua)."""
        return f"{self.tag(shard_of_request(request_id))}:once:{scope}:{key}"

    def conversation(self, platform: str, person: str) -> str:
        """String: JSON conversation reference to message ``person`` 1:1 on ``platform``. The
        person id is hashed, so a chat id cannot stretch or shape the key."""
        digest = hashlib.sha256(f"{platform}|{person}".encode()).hexdigest()[:32]
        return f"{self.ns}:conv:{platform}:{digest}"

    def step_up_code(self, request_id: str) -> str:
        """The digest of a request's live one-time code, beside the request (same slot); it
        expires with the code, so a code never outlives its 10 minutes even unused."""
        return f"{self.tag(shard_of_request(request_id))}:code:{request_id}"

    def message_refs(self, request_id: str) -> str:
        """Hash: channel ref name -> JSON MessageRef, in the request's slot."""
        return f"{self.tag(shard_of_request(request_id))}:refs:{request_id}"

    # --- directory answers, cached briefly (app/store/directory_cache.py) ---------------------
    def directory_cache(self, kind: str, key: str) -> str:
        """One cached directory answer. ``key`` (an email or id someone typed) is hashed, so
        it cannot stretch or shape the key; single-key commands only, so no hash tag."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"{self.ns}:dir:{kind}:{digest}"
