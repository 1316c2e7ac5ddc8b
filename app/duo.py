"""Step-up by Duo Push: the Duo Auth API's asynchronous auth and its status, with Duo's signing.

`POST /auth/v2/auth` (factor=push, device=auto, async=1) answers a transaction id; `GET
/auth/v2/auth_status?txid=...` is polled until the result is no longer ``waiting``. Every call
is signed as Duo documents: the canonical request (Date, METHOD, host, path, sorted
URL-encoded parameters, one per line) HMAC-SHA512'd with the secret key, sent as HTTP Basic
``ikey:hexdigest`` with the same Date header. The secret key is never logged.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from pydantic import SecretStr

from app.domain.models import Principal, Request
from app.ports import PushOutcome, PushResult

log = structlog.get_logger("twokey.duo")

Sleep = Callable[[float], Awaitable[None]]


def canonical(date: str, method: str, host: str, path: str, params: Mapping[str, str]) -> str:
    """Duo's canonical request: parameters sorted, each key and value URL-encoded (RFC 3986
    unreserved characters kept)."""
    args = "&".join(
        f"{quote(key, safe='~')}={quote(value, safe='~')}" for key, value in sorted(params.items())
    )
    return "\n".join([date, method.upper(), host.lower(), path, args])


def signed_headers(
    ikey: str, skey: SecretStr, method: str, host: str, path: str, params: Mapping[str, str]
) -> dict[str, str]:
    date = email.utils.formatdate()
    text = canonical(date, method, host, path, params)
    digest = hmac.new(skey.get_secret_value().encode(), text.encode(), hashlib.sha512).hexdigest()
    token = base64.b64encode(f"{ikey}:{digest}".encode()).decode()
    return {"Date": date, "Authorization": f"Basic {token}"}


class DuoPush:
    """The ``duo_push`` step-up verifier (app.ports.PushVerifier) against one Duo Auth API
    application. The Duo username is the person's email (set Duo's username normalisation or
    aliases to match)."""

    verifier = "duo_push"

    def __init__(
        self,
        api_host: str,
        ikey: str,
        skey: SecretStr,
        *,
        client: httpx.AsyncClient | None = None,
        base_url: str | None = None,
        poll_interval: float = 3.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.api_host = api_host
        self.ikey = ikey
        self.skey = skey
        self.base_url = base_url or f"https://{api_host}"
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._client = client or httpx.AsyncClient(timeout=10.0, follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def push_step_up(self, owner: Principal, request: Request, timeout_s: int) -> PushResult:
        if not owner.email:
            return _unavailable("the person has no email to name them to Duo")
        try:
            started = await self._call(
                "POST",
                "/auth/v2/auth",
                {
                    "username": owner.email,
                    "factor": "push",
                    "device": "auto",
                    "async": "1",
                    "type": "twokey verification",
                    "pushinfo": f"request={request.id}&action={request.action.value}",
                },
            )
            txid = started.get("txid") if started else None
            if not isinstance(txid, str) or not txid:
                return _unavailable("Duo did not start a push")
            for _ in range(max(1, int(timeout_s / self.poll_interval))):
                await self._sleep(self.poll_interval)
                status = await self._call("GET", "/auth/v2/auth_status", {"txid": txid})
                outcome = _outcome(status)
                if outcome is not None:
                    return outcome
            return PushResult(outcome=PushOutcome.TIMEOUT, detail="no answer in time")
        except (httpx.HTTPError, ValueError) as error:
            log.warning("duo_push_unavailable", request=request.id, error=type(error).__name__)
            return _unavailable(f"Duo could not be reached ({type(error).__name__})")

    async def _call(self, method: str, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        headers = signed_headers(self.ikey, self.skey, method, self.api_host, path, params)
        if method == "POST":
            response = await self._client.post(
                self.base_url + path, data=dict(params), headers=headers
            )
        else:
            response = await self._client.get(
                self.base_url + path, params=dict(params), headers=headers
            )
        body = response.json()
        if response.status_code != 200 or body.get("stat") != "OK":
            raise ValueError(f"Duo answered {response.status_code} {body.get('code', '')}")
        answer = body.get("response")
        return answer if isinstance(answer, dict) else {}


def _outcome(status: Mapping[str, Any]) -> PushResult | None:
    """auth_status: ``waiting`` -> keep polling; ``allow``; ``deny`` (why in ``status``)."""
    result, why = status.get("result"), str(status.get("status", ""))
    if result == "waiting":
        return None
    if result == "allow":
        return PushResult(outcome=PushOutcome.APPROVED)
    if result == "deny" and why == "timeout":
        return PushResult(outcome=PushOutcome.TIMEOUT, detail="Duo's push timed out")
    if result == "deny" and why in ("deny", "fraud"):
        return PushResult(outcome=PushOutcome.REJECTED, detail=f"Duo: {why}")
    return _unavailable(f"Duo answered {result!s}/{why}")


def _unavailable(detail: str) -> PushResult:
    return PushResult(outcome=PushOutcome.UNAVAILABLE, detail=detail)
