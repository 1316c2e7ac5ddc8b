"""The running core as every face (Slack, Teams, the playground) sees it, with no adapter in it.

``app.bootstrap`` builds the concrete runtime (Redis, the store, connectors) and hands it to each
face's ``mount``; faces type it as :class:`Runtime` from here, so they depend on ports and the
service only and never import the composition root, the Redis adapters or ``redis``
(import-linter contracts in pyproject.toml keep it so). What a face may use:

* ``service``: the use cases (and ``service.names``, ``service.approvers_for``);
* ``ledger``: the MessageLedger port (where its messages went, once-only claims);
* ``notifier``: the fan-out it registers its Notifier with (``notifier.add``);
* ``store`` / ``trail``: the RequestStore port and the audit export, for read-only views;
* ``inflight``, ``tasks``, ``closers``, ``stopping``: the lifecycle it must join.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog

from app.domain.policy import Policy
from app.notify import FanoutNotifier
from app.ports import AuditExport, Directory, IdentityProvider, MessageLedger, RequestStore
from app.service import TwoKey
from app.settings import Settings

log = structlog.get_logger("twokey.runtime")


class StartupError(Exception):
    """twokey refuses to start; the message says why and what to set."""


class InFlight:
    """Work a person was answered for, finished before a stopping replica closes its clients.

    A Slack ack answers Slack while the listener goes on (cards, messages, the execution);
    without this, shutdown would close Redis and HTTP under that work and lose it silently.
    """

    def __init__(self) -> None:
        self.accepting = True
        """False once the replica stops: new deliveries are refused (503), never half-done."""
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def track(self, task: asyncio.Task[Any] | None = None) -> None:
        """Keep ``task`` (the running one by default) until it is done."""
        task = task if task is not None else asyncio.current_task()
        if task is None or task.done():
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, within: float) -> bool:
        """Stop accepting and wait for every tracked task (also those started meanwhile) for at
        most ``within`` seconds; cancel what is left. True when everything finished in time."""
        self.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - loop.time())
        if not self._tasks:
            return True
        left = list(self._tasks)
        log.error("shutdown_work_abandoned", tasks=len(left), grace_s=within)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        return False


class Runtime(Protocol):
    """What a face gets from the composition root (``app.bootstrap.Runtime`` implements it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def service(self) -> TwoKey: ...

    @property
    def policy(self) -> Policy: ...

    @property
    def directory(self) -> Directory: ...

    @property
    def store(self) -> RequestStore: ...

    @property
    def trail(self) -> AuditExport: ...

    @property
    def connectors(self) -> Sequence[IdentityProvider]: ...

    @property
    def notifier(self) -> FanoutNotifier: ...

    @property
    def ledger(self) -> MessageLedger: ...

    @property
    def inflight(self) -> InFlight: ...

    @property
    def stopping(self) -> asyncio.Event: ...

    @property
    def tasks(self) -> list[asyncio.Task[None]]: ...

    @property
    def closers(self) -> list[Callable[[], Awaitable[None]]]: ...


CHAT_CREDENTIALS = (
    ("SLACK_BOT_TOKEN", "slack_bot_token"),
    ("SLACK_SIGNING_SECRET", "slack_signing_secret"),
    ("SLACK_APP_TOKEN", "slack_app_token"),
    ("MICROSOFT_APP_ID", "microsoft_app_id"),
    ("MICROSOFT_APP_PASSWORD", "microsoft_app_password"),
)


REACHES_OUT = (
    ("TWOKEY_PUBLIC_URL", "public_url"),
    ("TWOKEY_SMTP_HOST", "smtp_host"),
    ("TWOKEY_SMS_WEBHOOK_URL", "sms_webhook_url"),
    ("TWOKEY_DUO_API_HOST", "duo_api_host"),
    ("TWOKEY_AUDIT_FORWARD_URL", "audit_forward_url"),
)
"""Settings that make twokey reach real people or systems, or be reached by them: a public
address browsers elsewhere use, mail, text messages, Duo pushes and the SIEM. In the playground
anyone could make them send as anyone."""


def production_wiring(settings: Settings, policy: Policy) -> list[str]:
    """What makes this deployment real, named: chat credentials, non-sandbox connectors, a real
    ticket system, and mail, SMS, Duo or SIEM endpoints."""
    found = [env for env, attr in CHAT_CREDENTIALS if getattr(settings, attr) is not None]
    found += [env for env, attr in REACHES_OUT if getattr(settings, attr)]
    for entry in policy.connectors:
        kind = str(entry.get("type", "?"))
        if kind != "sandbox":
            found.append(f"the {kind} connector {str(entry.get('name', kind))!r} in the policy")
    if policy.tickets.checked:
        found.append(f"the ticket system {policy.tickets.system_name} in the policy")
    return found


def check_playground(settings: Settings, policy: Policy) -> None:
    """The playground lets anyone act as anyone and shows one-time secrets: asked for beside
    real chat credentials or identity providers, twokey refuses to start rather than guess."""
    if settings.playground is not True:
        return  # unset: the playground mounts itself only where nothing is real
    real = production_wiring(settings, policy)
    if real:
        raise StartupError(
            "TWOKEY_PLAYGROUND=true, but this deployment is wired to production: "
            f"{'; '.join(real)}. The playground lets anyone act as anyone with these and read "
            "one-time secrets, so it only runs with no chat credentials and sandbox connectors "
            "only. Unset TWOKEY_PLAYGROUND (or set it to false), or try twokey in a separate "
            "deployment without them."
        )
