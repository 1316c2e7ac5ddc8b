"""Structured logs (structlog) on top of the standard library, one line per event.

Nothing twokey logs carries a secret: secrets are SecretStr, connectors return them only to the
service, and errors are logged by type, not by message.
"""

from __future__ import annotations

import logging
import sys

import structlog


def _current_stderr(*_: object) -> structlog.PrintLogger:
    """Resolve stderr at each use, so a swapped stream (tests, daemons) is followed."""
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """JSON lines when not on a terminal (containers, CI), readable columns on a terminal."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_current_stderr,
        cache_logger_on_first_use=False,
    )
