"""webhook: hand an approved change to the customer's own automation, signed, and take its word.

twokey POSTs one JSON document per approved request and treats the answer as the outcome, so
any system can sit behind the two-person rule.

Signature scheme (version 1), so the receiver can check the request came from twokey and is
fresh::

    Twokey-Timestamp: <unix seconds when sent>
    Twokey-Signature: v1=<hex HMAC-SHA256(key, "v1:" + timestamp + ":" + raw body bytes)>

The receiver recomputes the HMAC over the raw body exactly as received (before parsing it),
compares in constant time, and refuses timestamps more than five minutes away from its clock.
:func:`verify_webhook_signature` does all three.

The answer is JSON ``{"outcome": "completed" | "failed", "detail": "...", "secret": "..."}``;
``secret`` (optional, only with ``completed``) is a one-time secret that twokey hands to the
account owner alone. A non-2xx answer is a failure; no answer in time is ``unknown``. A change
is never sent twice, except after a 429, which says nothing was done.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from app.connectors.base import (
    ConnectorConfigError,
    EnvVarName,
    failed,
    secret_from_env,
)
from app.connectors.checks import CheckResult, note, works
from app.connectors.http import (
    Attempts,
    Clock,
    HttpConnector,
    LimitsFromSettings,
    ProviderAnswer,
    ProviderHttp,
    ProviderUrl,
    RateLimitWait,
    RetryRule,
    Sleep,
    Timeout,
    http_plugin,
    one_line,
    parse_config,
)
from app.domain.models import Action, Principal, Request
from app.ports import ExecutionResult, Outcome

log = structlog.get_logger(__name__)

SIGNATURE_VERSION = "v1"
TIMESTAMP_HEADER = "Twokey-Timestamp"
SIGNATURE_HEADER = "Twokey-Signature"
DEFAULT_TOLERANCE = 300
MIN_KEY_BYTES = 32
_DETAIL_LIMIT = 500
_SECRET_LIMIT = 4096


def _key_bytes(key: str | bytes | SecretStr) -> bytes:
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    return key.encode() if isinstance(key, str) else key


def webhook_signature(key: str | bytes | SecretStr, timestamp: str, body: bytes) -> str:
    """The ``Twokey-Signature`` value for this timestamp and raw body: ``v1=<hex>``."""
    signed = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(_key_bytes(key), signed, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify_webhook_signature(
    key: str | bytes | SecretStr,
    *,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> bool:
    """True only if ``signature`` is twokey's v1 signature of this exact body and a fresh timestamp.

    For receivers: pass the raw body bytes and the two header values as received. A timestamp
    more than ``tolerance`` seconds from ``now`` (default: this machine's clock) is refused, so
    a captured request cannot be replayed later.
    """
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    expected = webhook_signature(key, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


class WebhookConfig(BaseModel, LimitsFromSettings):
    """The ``webhook`` connector in the policy file; the signing key by env-var name only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook"]
    name: str = Field(default="webhook", pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    url: ProviderUrl
    secret_env: EnvVarName
    """The environment variable holding the HMAC key shared with the receiver."""
    actions: frozenset[Action]
    timeout: Timeout = 10.0
    max_attempts: Attempts = 3
    """Sends in all, counting re-sends after a 429 (which means nothing was done)."""
    max_rate_limit_wait: RateLimitWait = 30.0

    @field_validator("actions")
    @classmethod
    def _some_actions(cls, value: frozenset[Action]) -> frozenset[Action]:
        if not value:
            raise ValueError("list the actions this webhook performs, e.g. [rotate-secret]")
        return value


class WebhookAnswer(BaseModel):
    """What the receiver answers; anything else in its JSON is ignored."""

    model_config = ConfigDict(extra="ignore")

    outcome: Literal["completed", "failed"]
    detail: str = ""
    secret: SecretStr | None = Field(default=None, max_length=_SECRET_LIMIT)
    secret_label: str = ""


def webhook_body(action: Action, target: Principal, request: Request) -> bytes:
    """The JSON document the receiver gets: who, what, why, who approved; never a secret.

    It is the same on every send of one request, so ``request_id`` can serve the receiver as
    an idempotency key; the signed ``Twokey-Timestamp`` header says when it was sent.
    """
    document: dict[str, Any] = {
        "version": SIGNATURE_VERSION,
        "request_id": request.id,
        "ticket": request.ticket,
        "action": str(action),
        "reason_code": request.reason_code,
        "target": {
            "id": target.id,
            "kind": str(target.kind),
            "name": target.name,
            "email": target.email,
            "system": target.system,
            "owner_id": target.owner_id,
        },
        "requester": {"id": request.requester_id, "name": request.requester_name},
        "approvers": [approval.approver_id for approval in request.approvals],
        "owner_confirmed": request.owner_confirmed_at is not None,
        "tier": request.plan.tier,
        "privileged": request.plan.privileged,
        "breakglass": request.plan.breakglass,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


class WebhookConnector(HttpConnector[WebhookConfig]):
    """Performs a change by asking the customer's automation, and reports what it answered."""

    provider = "the webhook"
    event = "webhook_change"
    look = "Check with its owners"
    shown = ("url",)
    people_only = False
    untouched = "nothing was sent"

    def __init__(self, config: WebhookConfig, key: SecretStr, http: ProviderHttp) -> None:
        super().__init__(config, http)
        self._key = key

    async def check(self) -> list[CheckResult]:
        """Nothing is sent: every request to the receiver asks it to make a real change."""
        return [
            works(
                f"signing key in ${self.config.secret_env}",
                f"set, {len(self._key.get_secret_value().encode())} bytes",
            ),
            note(
                f"the receiver at {self.config.url}",
                "nothing was sent: any request to it asks your automation for a real change, so "
                "a read-only check cannot call it. Test it with a request in a test workspace",
            ),
        ]

    async def _change(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        """Send the signed request once; the receiver's answer is the outcome."""
        body = webhook_body(action, target, request)

        async def sign(method: str, url: str) -> Mapping[str, str]:
            timestamp = str(int(self._http.clock()))
            return {
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: webhook_signature(self._key, timestamp, body),
            }

        answer = await self._http.call(
            "POST",
            self.config.url,
            rule=RetryRule.CHANGE,
            content=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            sign=sign,
        )
        return self._outcome(answer)

    def _unsupported(self, action: Action, target: Principal) -> ExecutionResult:
        return failed(f"the webhook {self.name!r} does not {action.label}; nothing was sent")

    def _unsure_who(self) -> str:
        return f"the webhook {self.name!r}"

    def _outcome(self, answer: ProviderAnswer) -> ExecutionResult:
        parsed = _parse_answer(answer)
        if not answer.ok:
            body = answer.json()
            said = body.get("detail") if isinstance(body, dict) else None
            why = f": {one_line(said, _DETAIL_LIMIT)}" if isinstance(said, str) and said else ""
            return ExecutionResult(
                outcome=Outcome.FAILED,
                detail=f"the webhook {self.name!r} answered HTTP {answer.status}{why}",
            )
        if parsed is None and _secret_too_long(answer):
            # It did the change and made a credential twokey cannot hand over: say so loudly.
            return ExecutionResult(
                outcome=Outcome.COMPLETED,
                detail=f"the webhook {self.name!r} reported the change done",
                attention=f"the webhook {self.name!r} handed back a secret longer than "
                f"{_SECRET_LIMIT} characters, which twokey does not pass on: the owner does "
                "not have it. Have the receiver make a shorter one, then rotate again.",
            )
        if parsed is None:
            return ExecutionResult(
                outcome=Outcome.UNKNOWN,
                detail=f"the webhook {self.name!r} answered HTTP {answer.status} without a "
                'readable {"outcome": "completed" | "failed"}: it is unclear what it did',
            )
        detail = one_line(parsed.detail, _DETAIL_LIMIT)
        if parsed.outcome == "failed":
            return ExecutionResult(
                outcome=Outcome.FAILED,
                detail=detail or f"the webhook {self.name!r} reported a failure",
            )
        secret = parsed.secret if parsed.secret and parsed.secret.get_secret_value() else None
        label = (one_line(parsed.secret_label, 80) or "one-time secret") if secret else ""
        return ExecutionResult(
            outcome=Outcome.COMPLETED,
            detail=detail or f"the webhook {self.name!r} reported the change done",
            secret=secret,
            secret_label=label,
        )


def _secret_too_long(answer: ProviderAnswer) -> bool:
    """A "completed" answer refused only because its secret is over the limit."""
    body = answer.json()
    if not isinstance(body, dict) or body.get("outcome") != "completed":
        return False
    secret = body.get("secret")
    if not isinstance(secret, str) or len(secret) <= _SECRET_LIMIT:
        return False
    return _parse_answer_of({**body, "secret": None}) is not None


def _parse_answer_of(body: Mapping[str, Any]) -> WebhookAnswer | None:
    try:
        return WebhookAnswer.model_validate(body)
    except ValidationError:
        return None


def _parse_answer(answer: ProviderAnswer) -> WebhookAnswer | None:
    body = answer.json()
    return _parse_answer_of(body) if isinstance(body, dict) else None


def build(
    config: Mapping[str, Any],
    http_client: httpx.AsyncClient | None = None,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.time,
) -> WebhookConnector:
    """A webhook connector from its policy settings; the signing key is read now."""
    settings = parse_config(WebhookConfig, config, "webhook connector")
    key = secret_from_env(settings.secret_env)
    if len(key.get_secret_value().encode()) < MIN_KEY_BYTES:
        raise ConnectorConfigError(
            f"environment variable {settings.secret_env} holds a signing key shorter than "
            f"{MIN_KEY_BYTES} bytes; make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'"
        )
    http = ProviderHttp.open(
        f"the webhook {settings.name!r}", settings.limits, http_client, sleep=sleep, clock=clock
    )
    return WebhookConnector(settings, key, http)


PLUGIN = http_plugin("webhook", WebhookConfig, build)
