"""Answering a person once their decision is on record, the same on every chat face.

The service stores a change (one gate script) before it tells anyone of it, so the first thing
it tells about a decision marks that decision as stored. A face runs the one service call as a
task inside :func:`on_record` (see :func:`answer_on_record`) and answers at the first of: the
service's first notification (each channel's notifier calls :func:`told`), the call finishing,
or a time bound. What is left after the answer is re-doable (cards and messages re-rendered
from the stored request, the execution claimed atomically) and is tracked by the runtime's
:class:`~app.runtime.InFlight`, so a stopping replica finishes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from app.domain.models import Request
from app.runtime import InFlight

T = TypeVar("T")


class Recorded:
    """Set once the service first tells anyone of a decision; keeps the request it told of
    (the gate script's result, so nothing needs to be read again to show it)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.request: Request | None = None

    def set(self, request: Request) -> None:
        if not self._event.is_set():
            self.request = request
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> bool:
        return await self._event.wait()


_RECORDED: ContextVar[Recorded | None] = ContextVar("twokey_recorded", default=None)


@contextmanager
def on_record(recorded: Recorded) -> Iterator[None]:
    """Tasks started inside this block set ``recorded`` when the service first tells anyone of
    their decision, i.e. once its gate script has stored it."""
    token = _RECORDED.set(recorded)
    try:
        yield
    finally:
        _RECORDED.reset(token)


def told(request: Request | None) -> None:
    """The service is telling people about ``request``: whatever was decided is stored.

    Every channel's notifier calls this first thing in each method of the Notifier port."""
    recorded = _RECORDED.get()
    if recorded is not None and request is not None:
        recorded.set(request)


async def answer_on_record(
    call: Coroutine[Any, Any, T],
    recorded: Recorded,
    inflight: InFlight,
    within: float,
    name: str,
) -> asyncio.Task[T]:
    """Start ``call`` as a tracked task linked to ``recorded`` and return it at the first of:
    its decision is on record, it is done, ``within`` seconds. The caller answers then; the
    task goes on (tracked) if it is not done."""
    with on_record(recorded):
        task = asyncio.create_task(call, name=name)
    inflight.track(task)
    waiting = asyncio.create_task(recorded.wait())
    try:
        await asyncio.wait({task, waiting}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    return task
