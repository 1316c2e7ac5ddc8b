"""What every ticket adapter shares: one HTTP client per system, answers mapped the same way."""

from __future__ import annotations

from typing import Any

import httpx
import structlog

from app.tickets.errors import TicketCredentialsRefused, TicketSystemDown
from app.tickets.oauth import BearerTokens, OAuthClient, bearer

log = structlog.get_logger("app.tickets")


class TicketHttp:
    """An HTTP client to one ticket system; logs each call's status, never its content.

    ``auth``: basic credentials (sent with every call), or an :class:`OAuthClient` whose bearer
    token is shared by every call and renewed once when the system answers 401 with it."""

    def __init__(
        self,
        name: str,
        base_url: str,
        auth: httpx.Auth | OAuthClient,
        *,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.name = name
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=None if isinstance(auth, OAuthClient) else auth,
            timeout=timeout_s,
            headers={"Accept": "application/json"},
            transport=transport,
            follow_redirects=False,
        )
        self._tokens = (
            BearerTokens(name, auth, self._client) if isinstance(auth, OAuthClient) else None
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        if self._tokens is None:
            return await self._send(method, path, what, **kwargs)
        token = await self._tokens.current()
        response = await self._send(method, path, what, headers=bearer(token), **kwargs)
        if response.status_code != 401:
            return response
        # Revoked, or expired early by the system's clock: a 401 changed nothing, so the call
        # is sent once more with a new token; a second 401 is the credentials being refused.
        log.info("ticket_token_refused", system=self.name)
        self._tokens.refused(token)
        token = await self._tokens.current()
        return await self._send(method, path, what, headers=bearer(token), **kwargs)

    async def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            log.warning("ticket_system_unreachable", system=self.name, error=type(exc).__name__)
            raise TicketSystemDown(f"no answer ({type(exc).__name__})") from None
        log.info(what, system=self.name, status=response.status_code)
        return response


def refuse_unless(response: httpx.Response, *statuses: int) -> None:
    """Anything but the documented success is the system failing: say how, safely."""
    if response.status_code in statuses:
        return
    if response.status_code in (401, 403):
        raise TicketCredentialsRefused(f"credentials refused ({response.status_code})")
    if response.status_code == 429:
        wait = response.headers.get("Retry-After", "")
        later = f"; retry after {wait}s" if wait.isdigit() else ""
        raise TicketSystemDown(f"rate limited (429{later})")
    raise TicketSystemDown(f"status {response.status_code}")


__all__ = ["TicketCredentialsRefused", "TicketHttp", "TicketSystemDown", "refuse_unless"]
