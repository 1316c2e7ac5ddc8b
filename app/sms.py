"""One-time step-up codes by text message: the `CodeSender` port, through the customer's SMS
gateway behind a signed webhook.

twokey holds no telephony account. It POSTs ``{"to", "text", "request"}`` as JSON to a webhook
the customer runs in front of their SMS gateway, signed as twokey's other outgoing webhook is
(app/audit/forward_sinks.py): ``X-Twokey-Timestamp`` and ``X-Twokey-Signature: sha256=<hex>``,
HMAC-SHA256 of ``<timestamp>.<body>`` under TWOKEY_SMS_WEBHOOK_SECRET, so the receiver can
refuse forgeries and stale replays. Only a 2xx counts as sent: a timeout, a refusal or a
redirect raises :class:`SmsNotSent`, the service withdraws the code (a gateway outage never
counts against the owner) and tells the owner plainly that no code went out. A text the gateway
sent after all (a late answer) then holds a dead code: typing it finds none, it never passes.
The phone, the text and the code are never logged, and no error carries them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from app.audit.forward_sinks import webhook_signature
from app.domain.models import Request

log = structlog.get_logger(__name__)

SECRET_MIN_CHARS = 16
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class SmsNotSent(Exception):
    """The gateway did not take the message; ``reason`` is safe to log (no phone, no code)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SmsWebhookConfig(BaseModel):
    """TWOKEY_SMS_WEBHOOK_*, checked once at start-up with errors that never echo a value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    secret: SecretStr
    timeout_s: float = Field(default=10.0, gt=0, le=30)

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        """The message holds a live code: only TLS, or plain http to this machine (tests)."""
        parts = urlsplit(value.strip())
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(
                "TWOKEY_SMS_WEBHOOK_URL must be a URL such as https://sms-gateway.example.com/send"
            )
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise ValueError(
                "TWOKEY_SMS_WEBHOOK_URL must use https (plain http only to 127.0.0.1 or "
                "localhost, for local testing): the message carries a live code"
            )
        if parts.username or parts.password or parts.fragment:
            raise ValueError(
                "TWOKEY_SMS_WEBHOOK_URL takes no credentials or fragment: the receiver checks "
                "the signature made with TWOKEY_SMS_WEBHOOK_SECRET instead"
            )
        return value.strip()

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().strip()) < SECRET_MIN_CHARS:
            raise ValueError(
                f"TWOKEY_SMS_WEBHOOK_SECRET must be at least {SECRET_MIN_CHARS} characters: a "
                "long random string shared with the SMS webhook, kept in your secret store"
            )
        return value


def sms_sender(
    url: str | None, secret: SecretStr | None, timeout_s: float = 10.0
) -> WebhookSmsSender | None:
    """The sender the settings describe, None when none is configured; raises ValueError with
    a plain sentence (never the URL or the secret) when they are half set or unusable."""
    if not url and secret is None:
        return None
    if not url or secret is None:
        raise ValueError(
            "TWOKEY_SMS_WEBHOOK_URL and TWOKEY_SMS_WEBHOOK_SECRET go together: set both for "
            "step-up codes by text message (sms_code), or neither"
        )
    try:
        config = SmsWebhookConfig(url=url, secret=secret, timeout_s=timeout_s)
    except ValidationError as exc:
        reasons = (str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise ValueError("; ".join(reasons)) from None
    return WebhookSmsSender(config.url, config.secret, config.timeout_s)


@dataclass(frozen=True)
class WebhookSmsSender:
    """Texts codes through one signed webhook; a fresh connection per code (codes are rare)."""

    url: str
    secret: SecretStr = field(repr=False)
    timeout_s: float = 10.0

    async def send_code(self, address: str, request: Request, code: str) -> None:
        body = sms_body(address, request, code)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Twokey-Timestamp": timestamp,
            "X-Twokey-Signature": webhook_signature(self.secret, timestamp, body),
        }
        try:
            await self._post(body, headers)
        except SmsNotSent as exc:
            log.warning("sms_code_not_sent", request=request.id, reason=exc.reason)
            raise

    async def _post(self, body: bytes, headers: dict[str, str]) -> None:
        """2xx or SmsNotSent; redirects are not followed (the signed body goes where it was
        configured to, nowhere else)."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as http:
                response = await http.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise SmsNotSent("timeout") from None
        except httpx.HTTPError as exc:
            raise SmsNotSent(f"unreachable ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise SmsNotSent(f"the webhook answered {response.status_code}")


def sms_body(phone: str, request: Request, code: str) -> bytes:
    """The signed JSON the webhook receives: where, what to text, and for which request."""
    text = sms_text(request, code)
    return json.dumps({"to": phone, "text": text, "request": request.id}).encode()


def sms_text(request: Request, code: str) -> str:
    """Short (one or two SMS), and says what to do with it and what never to do."""
    minutes = max(1, request.plan.code_ttl // 60)
    return (
        f"twokey: to {request.action.label} for your account, type verify {request.id} {code} "
        f"in your chat with twokey ({minutes} min). Never give this code to anyone, not even "
        'the help desk. Not you? Answer "This wasn\'t me" in chat.'
    )
