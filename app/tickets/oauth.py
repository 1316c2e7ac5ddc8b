"""OAuth 2.0 client credentials for a ticket system (RFC 6749 section 4.4).

ServiceNow: ``POST {instance}/oauth_token.do``, form-encoded (the instance refuses JSON there),
``grant_type=client_credentials&client_id=...&client_secret=...``. Jira Cloud (a service
account's OAuth 2.0 credential): ``POST https://auth.atlassian.com/oauth/token`` with the same
three fields as JSON. Both answer ``{"access_token", "token_type": "Bearer", "expires_in"}``;
the token then goes in ``Authorization: Bearer ...``.

Why a shared cache: a token is valid for an hour or so, and asking for one per call would double
every call and hit the token endpoint's rate limits. So one token per system is asked for once
(under a lock: concurrent calls wait for the same answer), kept until shortly before
``expires_in`` runs out, and dropped when the system answers 401 with it (revoked, or the
clocks disagree), so the next call asks again, once. Neither the secret nor a token is ever
logged, shown in a repr or put in an error message.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from app.tickets.errors import TicketCredentialsRefused, TicketSystemDown

log = structlog.get_logger("app.tickets")

RENEW_MARGIN_S = 60.0
"""A token is renewed this long before the system said it ends (or at half its life, if that
is shorter), so a call never leaves with a token about to run out."""
DEFAULT_LIFETIME_S = 300.0
"""When an answer gives no ``expires_in``: kept briefly (a 401 would renew it anyway)."""
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")
"""An RFC 6749 ``error`` code (invalid_client...): safe to show; anything else is not shown."""


@dataclass(frozen=True, repr=False)
class OAuthClient:
    """Where and how to ask for tokens; the secret stays a SecretStr until the form is built."""

    token_url: str
    client_id: SecretStr
    client_secret: SecretStr
    encoding: Literal["form", "json"]
    """ServiceNow wants the form encoding, Atlassian JSON (each as its docs show)."""

    def __repr__(self) -> str:
        return f"OAuthClient(token_url={self.token_url!r})"


class _TokenAnswer(BaseModel):
    """The documented part of a token endpoint's success answer."""

    model_config = ConfigDict(extra="ignore")

    access_token: str = Field(min_length=1, max_length=16_384)
    token_type: str
    expires_in: float | None = Field(default=None, ge=0)


@dataclass(repr=False)
class BearerTokens:
    """The one access token a ticket system's calls share (see the module docstring)."""

    system: str
    client: OAuthClient
    http: httpx.AsyncClient
    clock: Callable[[], float] = time.monotonic
    _token: SecretStr | None = None
    _renew_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __repr__(self) -> str:
        return f"BearerTokens(system={self.system!r})"

    async def current(self) -> SecretStr:
        """A token good for the next call: the cached one, or a new one asked for once."""
        async with self._lock:
            if self._token is None or self.clock() >= self._renew_at:
                self._token = None
                self._token = await self._fetch()
            return self._token

    def refused(self, token: SecretStr) -> None:
        """The system answered 401 with ``token``: forget it (unless a newer one replaced it,
        so several calls refused at once still cause one new token request)."""
        held = self._token
        if held is not None and hmac.compare_digest(
            held.get_secret_value().encode(), token.get_secret_value().encode()
        ):
            self._token = None

    async def _fetch(self) -> SecretStr:
        fields = {
            "grant_type": "client_credentials",
            "client_id": self.client.client_id.get_secret_value(),
            "client_secret": self.client.client_secret.get_secret_value(),
        }
        url = self.client.token_url
        try:
            if self.client.encoding == "form":
                response = await self.http.post(url, data=fields)
            else:
                response = await self.http.post(url, json=fields)
        except httpx.HTTPError as exc:
            what = type(exc).__name__
            log.warning("ticket_token_unreachable", system=self.system, error=what)
            raise TicketSystemDown(f"its token endpoint gave no answer ({what})") from None
        log.info("ticket_token_request", system=self.system, status=response.status_code)
        if response.status_code in (400, 401, 403):
            raise TicketCredentialsRefused(
                f"credentials refused by the token endpoint ({response.status_code}"
                f"{_error_code(response)}): check the OAuth client id and secret"
            )
        if response.status_code == 429:
            wait = response.headers.get("Retry-After", "")
            later = f"; retry after {wait}s" if wait.isdigit() else ""
            raise TicketSystemDown(f"its token endpoint is rate limiting (429{later})")
        if response.status_code != 200:
            raise TicketSystemDown(f"its token endpoint answered status {response.status_code}")
        try:
            answer = _TokenAnswer.model_validate(response.json())
        except (ValueError, ValidationError):
            raise TicketSystemDown(
                "its token endpoint gave an answer it does not document"
            ) from None
        if answer.token_type.casefold() != "bearer":
            raise TicketSystemDown("its token endpoint gave a token that is not a bearer token")
        lifetime = answer.expires_in if answer.expires_in is not None else DEFAULT_LIFETIME_S
        self._renew_at = self.clock() + max(lifetime - RENEW_MARGIN_S, lifetime / 2)
        log.info("ticket_token_issued", system=self.system, expires_in=lifetime)
        return SecretStr(answer.access_token)


def _error_code(response: httpx.Response) -> str:
    try:
        code = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f" {code}" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""


def bearer(token: SecretStr) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.get_secret_value()}"}


__all__ = ["BearerTokens", "OAuthClient", "bearer"]
