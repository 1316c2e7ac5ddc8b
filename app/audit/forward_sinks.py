"""Where forwarded audit events go: syslog over TLS, Splunk HEC, or an HMAC-signed webhook.

A sink takes one shard's batch of records (in seq order) and returns only once the receiver has
acknowledged all of it; anything else raises :class:`SinkError`, and the forwarder keeps its
checkpoint where it was. What "acknowledged" means differs:

* **Splunk HEC**: HTTP 200 with ``{"code": 0}`` (HEC accepted the batch).
* **Webhook**: any 2xx. The body is signed: ``X-Twokey-Signature: sha256=<hex>`` is
  HMAC-SHA256 of ``<X-Twokey-Timestamp>.<body>`` under TWOKEY_AUDIT_FORWARD_SECRET, so a
  receiver can reject forgeries and stale replays.
* **Syslog** (RFC 5424 messages, RFC 5425 octet-counted framing over TLS): syslog has no
  application-level acknowledgement. A batch counts as delivered once it was written and
  flushed to the TLS connection; a receiver that dies before reading it loses what was in
  flight. README ("Forwarding the audit trail to a SIEM") states this window.

Every connection is TLS, verified against the system's CAs or TWOKEY_AUDIT_FORWARD_CA_FILE.
Nothing here logs or sends the HEC token or the webhook secret except in the one header the
receiver checks.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

RETRY_AFTER_CAP_S = 600.0
"""A receiver asking for more than this is asked again after this long."""
SEND_TIMEOUT_S = 10.0
"""Per step of a send (connect, write, each read): a receiver that stops answering fails the
batch. The forwarder bounds the whole send and renews its lease meanwhile (forward.py)."""
SYSLOG_PRI = 13 * 8 + 6
"""Facility 13 (log audit), severity 6 (informational)."""
SD_ID = "twokey@32473"
"""The structured-data id; 32473 is the enterprise number RFC 5612 reserves for examples."""
UTF8_BOM = b"\xef\xbb\xbf"

Record = Mapping[str, Any]


class SinkError(Exception):
    """The receiver did not acknowledge the batch. ``reason`` is a metric label; never a secret.

    ``retry_after``: seconds the receiver asked us to wait (429/503 ``Retry-After``)."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after


class Sink(Protocol):
    kind: str
    """``syslog``, ``hec`` or ``webhook``: the metrics label."""
    target: str
    """Where it sends, fit for a log line: scheme, host, port (never a credential)."""

    async def send(self, records: Sequence[Record]) -> None: ...

    async def aclose(self) -> None: ...


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verified TLS: the system's CAs, plus ``ca_file`` when given (a private CA)."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def _dumps(value: Any) -> bytes:
    """ASCII JSON: lossless for any event, safe in every transport."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta or HTTP date), capped; None if absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdecimal():
        return min(float(text), RETRY_AFTER_CAP_S)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max((moment - datetime.now(tz=UTC)).total_seconds(), 0.0), RETRY_AFTER_CAP_S)


def _hostname() -> str:
    """RFC 5424 HOSTNAME: printable ASCII, at most 255 characters."""
    name = "".join(c for c in socket.gethostname() if 33 <= ord(c) <= 126)
    return name[:255] or "-"


# --- syslog (RFC 5424 over TLS, RFC 5425 framing) -----------------------------------------------


def _sd_value(value: object) -> str:
    """An SD-PARAM value with ``"``, ``\\`` and ``]`` escaped (RFC 5424 section 6.3.3)."""
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _syslog_time(at: object) -> str:
    if type(at) is not int or at < 0:
        return "-"
    moment = datetime.fromtimestamp(at / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def syslog_message(record: Record, hostname: str, procid: str) -> bytes:
    """One RFC 5424 message: the chain head in structured data, the record as JSON in MSG."""
    params = " ".join(
        f'{name}="{_sd_value(record[name])}"'
        for name in ("shard", "seq", "chain", "mac")
        if name in record
    )
    header = f"<{SYSLOG_PRI}>1 {_syslog_time(record.get('at'))} {hostname} twokey {procid} audit"
    return f"{header} [{SD_ID} {params}] ".encode() + UTF8_BOM + _dumps(dict(record))


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode() + b" " + message


class SyslogSink:
    """RFC 5424 messages over one long-lived TLS connection, reconnected when it breaks."""

    kind = "syslog"

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self.target = f"syslog+tls://{host}:{port}"
        self._host, self._port, self._context = host, port, context
        self._hostname, self._procid = _hostname(), str(os.getpid())
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _connection(self) -> asyncio.StreamWriter:
        if self._streams is not None:
            reader, writer = self._streams
            if not writer.is_closing() and not reader.at_eof():
                return writer
            await self.aclose()  # the receiver went away: what it read is all it got
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                self._host, self._port, ssl=self._context, server_hostname=self._host
            ),
            SEND_TIMEOUT_S,
        )
        # drain() then returns only once everything is handed to the socket (not high=0: the
        # TLS transport would count an empty buffer as full and never resume).
        writer.transport.set_write_buffer_limits(high=1, low=0)
        self._streams = (reader, writer)
        return writer

    async def send(self, records: Sequence[Record]) -> None:
        frames = b"".join(
            octet_counted(syslog_message(r, self._hostname, self._procid)) for r in records
        )
        try:
            writer = await self._connection()
            writer.write(frames)
            await asyncio.wait_for(writer.drain(), SEND_TIMEOUT_S)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await self.aclose()
            raise SinkError("unreachable", f"syslog: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            try:
                await asyncio.wait_for(streams[1].wait_closed(), 2)
            except (OSError, TimeoutError, ssl.SSLError):
                pass


# --- HTTP sinks -----------------------------------------------------------------------------------


def _check_answer(response: httpx.Response, name: str) -> None:
    """Raise SinkError unless 2xx; 429/503 carry the receiver's Retry-After."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in (429, 503):
        wait = retry_after_seconds(response.headers.get("retry-after"))
        raise SinkError("throttled", f"{name} answered {status}", wait)
    reason = "refused" if 300 <= status < 500 else "unavailable"
    raise SinkError(reason, f"{name} answered {status}")


class _HttpSink:
    """One httpx client (TLS verified, redirects not followed) for a sink's whole life."""

    kind = "http"

    def __init__(self, url: str, target: str, context: ssl.SSLContext) -> None:
        self.target = target
        self._url = url
        self._client = httpx.AsyncClient(
            verify=context, timeout=SEND_TIMEOUT_S, follow_redirects=False
        )

    async def _post(self, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        try:
            return await self._client.post(self._url, content=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            raise SinkError("unreachable", f"{self.kind}: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        await self._client.aclose()


class HecSink(_HttpSink):
    """Splunk HTTP Event Collector: batched events to ``/services/collector/event``."""

    kind = "hec"

    def __init__(self, url: str, target: str, context: ssl.SSLContext, token: SecretStr) -> None:
        super().__init__(url, target, context)
        self._token = token
        self._hostname = _hostname()

    def envelope(self, record: Record) -> dict[str, Any]:
        at = record.get("at")
        event: dict[str, Any] = {
            "host": self._hostname,
            "source": "twokey",
            "sourcetype": "twokey:audit",
            "event": dict(record),
        }
        if type(at) is int:
            event["time"] = at / 1000
        return event

    async def send(self, records: Sequence[Record]) -> None:
        body = b"\n".join(_dumps(self.envelope(r)) for r in records)
        headers = {
            "Authorization": f"Splunk {self._token.get_secret_value()}",
            "Content-Type": "application/json",
        }
        response = await self._post(body, headers)
        _check_answer(response, "HEC")
        try:
            code = response.json().get("code")
        except (ValueError, AttributeError):
            code = None
        if code != 0:
            raise SinkError("refused", f"HEC answered 200 with code {code!r}, not 0")


def webhook_signature(secret: SecretStr, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` (the receiver recomputes it)."""
    message = timestamp.encode() + b"." + body
    digest = hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookSink(_HttpSink):
    """``POST {"source": "twokey", "events": [...]}``, signed with the shared secret."""

    kind = "webhook"

    def __init__(self, url: str, target: str, context: ssl.SSLContext, secret: SecretStr) -> None:
        super().__init__(url, target, context)
        self._secret = secret

    async def send(self, records: Sequence[Record]) -> None:
        body = _dumps({"source": "twokey", "events": [dict(r) for r in records]})
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Twokey-Timestamp": timestamp,
            "X-Twokey-Signature": webhook_signature(self._secret, timestamp, body),
        }
        _check_answer(await self._post(body, headers), "the webhook")
