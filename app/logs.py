"""Structured logs (structlog) on top of the standard library, one line per event.

Every record goes through one handler and one structlog renderer: ours and the libraries'
(aiohttp, redis, httpx, botocore, ...), so a log pipeline gets JSON lines only. HTTP client
libraries log each request's URL at INFO (Okta's ``search=profile.email eq "..."`` puts an
email in it) and the response headers at DEBUG (Okta's ``link`` header repeats the search), so
they are held at WARNING whatever LOG_LEVEL says, and any library's words are scrubbed of query
strings, email addresses, credentials and header values before they are written.

Nothing twokey logs carries a secret: secrets are SecretStr, connectors return them only to the
service, and errors are logged by type, not by message.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

WIRE_LOGGERS = (
    "httpx",
    "httpcore",
    "hpack",
    "h2",
    "urllib3",
    "requests",
    "requests_oauthlib",
    "oauthlib",
    "botocore",
    "boto3",
    "s3transfer",
    "hvac",
    "google.auth",
    "google_auth_httplib2",
    "googleapiclient",
    "msal",
    "ldap3",
    "slack_sdk",
    "slack_bolt",
)
"""HTTP (and LDAP) client libraries: they log URLs, headers and bodies below WARNING. (twokey
hands the Slack clients loggers of its own, `quiet_logger`; these names are the safety net.)"""

_QUERY = re.compile(r"((?:[a-z][a-z0-9+.-]*://|/)[^\s?#\"'<>]*)\?[^\s#\"'<>]*", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)
_CREDENTIAL = re.compile(r"\b(Bearer|SSWS|DPoP|Basic)\s+[\w.~+/=-]{12,}", re.IGNORECASE)
_HEADER_PAIR = re.compile(r"\((b?)(['\"])([\w-]+)\2,\s*b?(['\"]).*?(?<!\\)\4\)")
"""``(b'link', b'<...>')``: a header as httpcore and h11 print them."""
_SLACK_HOOK = re.compile(r"(/(?:commands|actions|services|workflows|triggers)/)T\w+/[^\s\"'<>]+")
"""A Slack ``response_url`` or incoming webhook: the path is the credential (anyone holding it
posts into that conversation as twokey for half an hour)."""
_SIGNIN_LINK = re.compile(r"(/stepup/oidc/start/)[\w-]+")
"""An approver's single-use sign-in link in a path (aiohttp's access log prints paths)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""What a terminal acts on rather than shows: line breaks (a forged record), escape sequences
(colours, cursor moves, window titles), bidi overrides. JSON escapes them itself."""
_TRACE = frozenset({"exception", "stack"})
"""Tracebacks keep their line breaks on a terminal (still nothing else)."""


def scrub(text: str) -> str:
    """Logged words without query strings, email addresses, credentials or header values."""
    text = _HEADER_PAIR.sub(r"(\1\2\3\2, [redacted])", text)
    text = _CREDENTIAL.sub(r"\1 [redacted]", text)
    text = _QUERY.sub(r"\1", text)
    text = _SIGNIN_LINK.sub(r"\1[redacted]", text)
    text = _SLACK_HOOK.sub(r"\1[redacted]", text)
    return _EMAIL.sub("[email]", text)


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {key: _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_scrubbed(item) for item in value)
    return value


def scrub_event(_: object, __: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Scrub every value of an event, ours or a library's: a message or a traceback may
    quote a URL, and a URL may carry an address in its path or query."""
    return {k: v if k == "exc_info" else _scrubbed(v) for k, v in event_dict.items()}


def _escaped(text: str, keep: str = "") -> str:
    return _CONTROL.sub(
        lambda m: m[0] if m[0] in keep else m[0].encode("unicode_escape").decode("ascii"), text
    )


def escape_controls(_: object, __: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """For the terminal renderer, which prints the message, and words without spaces or quotes,
    as they are: text from outside (a reason, a tenant, a library's message) never starts a
    forged line or drives the terminal (``ESC [ 2 J``, a window title)."""
    out: dict[str, Any] = {}
    for key, value in event_dict.items():
        if isinstance(value, str):
            out[key] = _escaped(value, "\n\t" if key in _TRACE else "")
        elif key == "exc_info":
            out[key] = value
        else:
            out[key] = _escaped_all(value)
    return out


def _escaped_all(value: Any) -> Any:
    if isinstance(value, str):
        return _escaped(value)
    if isinstance(value, Mapping):
        return {_escaped_all(k): _escaped_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_escaped_all(item) for item in value)
    return value


def quiet_logger(name: str, level: int = logging.INFO) -> logging.Logger:
    """A logger of twokey's own for a client library that logs request bodies and URLs at
    DEBUG (Slack's): it never goes below ``level``, whatever LOG_LEVEL says."""
    logger = logging.getLogger(name)
    logger.setLevel(level)
    return logger


class _QuietWire(logging.Filter):
    """Below WARNING nothing from a client library is written, even if its level was lowered
    after start-up (a debugging session, a library resetting its own logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not any(record.name == n or record.name.startswith(n + ".") for n in WIRE_LOGGERS)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is at each record, so a swapped stream is followed."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _level_number(level: str) -> int:
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"LOG_LEVEL {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return number


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """One stderr handler for our events and every library's records: JSON lines when not on
    a terminal (containers, CI), readable columns on a terminal. HTTP clients stay at WARNING."""
    threshold = _level_number(level)
    use_json = (not sys.stderr.isatty()) if json is None else json
    stamped: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        # ids a library-style record may carry in ``extra``; never a DN, name or address
        structlog.stdlib.ExtraAdder(allow=("connector", "request_id", "action")),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering: list[structlog.types.Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,  # a traceback as text, so its URLs are scrubbed
        scrub_event,
        *(
            [structlog.processors.JSONRenderer()]
            if use_json
            else [escape_controls, structlog.dev.ConsoleRenderer()]
        ),
    ]
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=stamped, processors=rendering)
    )
    handler.addFilter(_QuietWire())

    root = logging.getLogger()
    for old in list(root.handlers):
        # Ours from an earlier call, or basicConfig's plain-text stream handler.
        plain = type(old) is logging.StreamHandler and old.stream in (sys.stderr, sys.stdout)
        if isinstance(old, _StderrHandler) or plain:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(max(threshold, logging.WARNING))

    structlog.configure(
        processors=[*stamped, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
