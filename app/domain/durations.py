"""Durations as operators write them: ``90s``, ``15m``, ``4h``, ``7d`` (and ``1h30m``).

Down to one second, so a test can run a real expiry with a 2-second TTL.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SECONDS = 366 * 86400


def parse_duration(text: str | int) -> int:
    """Return whole seconds; refuse zero, negatives, fractions and anything over a year."""
    if isinstance(text, bool):
        raise ValueError("a duration is written like 90s, 15m, 4h or 7d")
    if isinstance(text, int):
        seconds = text
    else:
        cleaned = text.strip().lower()
        if not cleaned or _PART.sub("", cleaned):
            raise ValueError(f"{text!r} is not a duration: write it like 90s, 15m, 4h or 7d")
        seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(cleaned))
    if seconds < 1:
        raise ValueError("a duration must be at least 1s")
    if seconds > MAX_SECONDS:
        raise ValueError("a duration may not exceed 366d")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest exact spelling, e.g. 5400 -> '1h30m'."""
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""Seconds in memory, ``15m`` on the wire."""
