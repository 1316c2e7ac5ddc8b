"""Fan-out of the Notifier port to every configured channel, each failure contained.

A Slack outage must not stop the Teams card from updating, and no notifier failure may reach
back into the decision that was already stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog
from pydantic import SecretStr

from app.domain.models import Request
from app.ports import Notifier

log = structlog.get_logger("twokey.notify")


class FanoutNotifier:
    """Calls every channel's notifier; one channel failing never stops the others."""

    def __init__(self, notifiers: Sequence[Notifier] = ()) -> None:
        self.notifiers: list[Notifier] = list(notifiers)

    def add(self, notifier: Notifier) -> None:
        self.notifiers.append(notifier)

    async def _each(self, what: str, call: Callable[[Notifier], Awaitable[object]]) -> list[object]:
        results: list[object] = []
        for notifier in self.notifiers:
            try:
                results.append(await call(notifier))
            except Exception as exc:
                log.error(
                    "channel_notify_failed",
                    what=what,
                    channel=type(notifier).__name__,
                    error=type(exc).__name__,
                )
        return results

    async def post_request(self, request: Request) -> None:
        await self._each("post_request", lambda n: n.post_request(request))

    async def update_request(self, request: Request, note: str = "") -> None:
        await self._each("update_request", lambda n: n.update_request(request, note))

    async def notify_owner(self, request: Request, text: str) -> None:
        await self._each("notify_owner", lambda n: n.notify_owner(request, text))

    async def notify_requester(self, request: Request, text: str) -> None:
        await self._each("notify_requester", lambda n: n.notify_requester(request, text))

    async def notify_person(self, request: Request, principal_id: str, text: str) -> None:
        await self._each("notify_person", lambda n: n.notify_person(request, principal_id, text))

    async def ask_manager(self, request: Request, manager_id: str) -> bool:
        """True when at least one channel put the card before the manager."""
        reached = await self._each("ask_manager", lambda n: n.ask_manager(request, manager_id))
        return any(answer is True for answer in reached)

    async def notify_approvers(self, request: Request, text: str) -> None:
        await self._each("notify_approvers", lambda n: n.notify_approvers(request, text))

    async def deliver_secret(self, request: Request, secret: SecretStr, label: str) -> bool:
        """Delivered once the first channel that can reach the owner succeeds."""
        for notifier in self.notifiers:
            try:
                if await notifier.deliver_secret(request, secret, label):
                    return True
            except Exception as exc:
                log.error(
                    "secret_delivery_failed",
                    channel=type(notifier).__name__,
                    error=type(exc).__name__,
                )
        return False

    async def alert_security(self, request: Request | None, text: str) -> None:
        await self._each("alert_security", lambda n: n.alert_security(request, text))


class RecordingNotifier:
    """Keeps what it was asked to say, in memory: the log-only channel and the tests' witness.

    The one-time secret is never kept: only the fact that one was handed over, and to whom.
    """

    def __init__(self, *, accept_secrets: bool = True) -> None:
        self.accept_secrets = accept_secrets
        self.sent: list[tuple[str, str, str]] = []
        """(what, request id or '', text) in order."""
        self.secrets_delivered: list[tuple[str, str]] = []
        """(request id, owner id) for each secret handed to the owner."""
        self.unreachable: set[str] = set()
        """Directory ids of managers no chat reaches (tests: the manager's card goes nowhere)."""

    async def post_request(self, request: Request) -> None:
        self.sent.append(("post_request", request.id, request.state.value))

    async def update_request(self, request: Request, note: str = "") -> None:
        self.sent.append(("update_request", request.id, request.state.value))

    async def notify_owner(self, request: Request, text: str) -> None:
        self.sent.append(("notify_owner", request.id, text))

    async def notify_requester(self, request: Request, text: str) -> None:
        self.sent.append(("notify_requester", request.id, text))

    async def notify_person(self, request: Request, principal_id: str, text: str) -> None:
        self.sent.append(("notify_person", request.id, f"{principal_id}: {text}"))

    async def ask_manager(self, request: Request, manager_id: str) -> bool:
        self.sent.append(("ask_manager", request.id, manager_id))
        return manager_id not in self.unreachable

    async def notify_approvers(self, request: Request, text: str) -> None:
        self.sent.append(("notify_approvers", request.id, text))

    async def deliver_secret(self, request: Request, secret: SecretStr, label: str) -> bool:
        if not self.accept_secrets:
            return False
        self.secrets_delivered.append((request.id, request.owner_id))
        self.sent.append(("deliver_secret", request.id, label))
        return True

    async def alert_security(self, request: Request | None, text: str) -> None:
        self.sent.append(("alert_security", request.id if request else "", text))

    def said(self, what: str) -> list[tuple[str, str, str]]:
        return [s for s in self.sent if s[0] == what]
