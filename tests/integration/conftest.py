"""Integration tests run `twokey ...` in-process, which configures logging for the whole process.

Left configured, our stderr handler would stay on the root logger and the HTTP client loggers
at WARNING, and later tests that capture library logs with caplog (tests/nhi) would see nothing.
So every test here puts the standard library's logging back as it found it. structlog's
configuration is left as the test set it (it then hands events to the standard library, which
pytest captures): tests here rely on twokey's own events staying off stdout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from app.logs import WIRE_LOGGERS


@pytest.fixture(autouse=True)
def logging_left_as_found() -> Iterator[None]:
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in ("", *WIRE_LOGGERS)}
    yield
    for handler in list(root.handlers):
        if handler not in handlers and type(handler).__module__ == "app.logs":
            root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
