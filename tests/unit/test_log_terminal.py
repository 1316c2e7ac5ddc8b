"""On a terminal (the readable renderer, not JSON) a person's text never forges a log line or
drives the terminal: line breaks, escape sequences and bidi overrides are shown escaped."""

from __future__ import annotations

import logging

import pytest
import structlog

from app.logs import configure_logging

FORGED = "TK-1\n2026-01-01T00:00:00Z [error    ] audit_fault           forged=1"
CLEAR_SCREEN = "\x1b[2J"
TITLE = "\x1b]0;pwned\x07"


def test_console_lines_escape_line_breaks_and_terminal_controls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json=False)
    log = structlog.get_logger("twokey.test")
    log.warning("ticket_unchecked", why=FORGED, tenant=TITLE + CLEAR_SCREEN, ids=["a\u2028b"])
    logging.getLogger("aiohttp.server").warning("bad request line: %s", "GET /\r\nX: " + TITLE)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2, err  # one line per record, whatever the text held
    for raw in (CLEAR_SCREEN, TITLE, "\n2026", "\r\n", "\u2028"):
        assert raw not in err
    assert "audit_fault" in lines[0] and "\\x1b]0;pwned\\x07" in lines[0]
    assert "\\x1b[2J" in lines[0] and "\\u2028" in lines[0]
    assert "\\r\\nX: \\x1b]0;pwned" in lines[1]


def test_console_tracebacks_keep_their_lines_but_not_escape_sequences(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json=False)
    log = structlog.get_logger("twokey.test")
    try:
        raise ValueError("bad " + CLEAR_SCREEN)
    except ValueError:
        log.exception("boom")
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):\n" in err
    assert CLEAR_SCREEN not in err and "bad \\x1b[2J" in err
