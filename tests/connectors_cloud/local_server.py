"""What the cloud stand-ins share: one aiohttp server on 127.0.0.1 and a free port, every path
to the stand-in's own ``_dispatch``, and a release for requests held open to test timeouts."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer


class LocalStandIn:
    """A provider's API on a local port; subclasses answer every request in ``_dispatch``."""

    def __init__(self) -> None:
        self._release = asyncio.Event()
        """Set on close: a request held open (a hang) lets go so the server can stop."""
        self._server: TestServer | None = None
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._app = app

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def start(self) -> None:
        self._server = TestServer(self._app, host="127.0.0.1")
        await self._server.start_server()

    async def close(self) -> None:
        self._release.set()
        if self._server is not None:
            await self._server.close()

    @property
    def origin(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")


class Waits:
    """Stands in for asyncio.sleep: records how long the connector chose to wait."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
