"""The report's charts: matplotlib drawn straight to SVG text, to be inlined in the HTML.

No pyplot (no global figure state, no GUI backend): each chart is its own ``Figure``. Text stays
text (``svg.fonttype: none``) so it prints sharply, can be searched and is escaped by the SVG
writer; mathtext is off, so a name with ``$`` in it is shown as typed. Each chart gets its own
id salt, so several charts inlined in one page never share a clip-path id. Colours follow the
outcome, the same in every chart.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import matplotlib
from matplotlib.figure import Figure

OUTCOME_COLOURS = {
    "completed": "#2e7d32",
    "failed": "#c62828",
    "unknown": "#ef6c00",
    "interrupted": "#ad1457",
    "denied": "#6a1b9a",
    "rejected_by_owner": "#d81b60",
    "expired": "#9e9e9e",
    "cancelled": "#546e7a",
    "open": "#1565c0",
}
PALETTE = ("#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#c62828", "#5d4037")
_RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _rc(**extra: Any) -> AbstractContextManager[None]:
    """The report's matplotlib settings, for one chart only (no global state changed)."""
    settings: Any = {**_RC, **{k.replace("__", "."): v for k, v in extra.items()}}
    return matplotlib.rc_context(settings)


_XML_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.DOTALL)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
"""matplotlib's RDF block: names of vocabularies, nothing a reader needs."""


def _svg(fig: Figure, salt: str) -> str:
    buffer = io.StringIO()
    with _rc(svg__hashsalt=salt):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = _METADATA.sub("", _XML_PROLOGUE.sub("", buffer.getvalue(), count=1), count=1)
    return text.replace("<svg ", f'<svg class="chart" role="img" aria-label="{salt}" ', 1)


def _figure(width: float = 7.5, height: float = 2.8) -> Figure:
    with _rc():
        return Figure(figsize=(width, height))


def stacked_bars(
    salt: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[int]],
    *,
    colours: Mapping[str, str] | None = None,
    ylabel: str = "",
    horizontal: bool = False,
) -> str:
    """One bar per label, stacked by series (e.g. requests per day, stacked by outcome)."""
    with _rc():
        height = max(2.4, 0.28 * len(labels) + 1.0) if horizontal else 2.8
        fig = _figure(height=min(height, 9.0))
        ax = fig.add_subplot()
        base = [0] * len(labels)
        positions = list(range(len(labels)))
        for index, (name, values) in enumerate(series.items()):
            if not any(values):
                continue
            colour = (colours or {}).get(name, PALETTE[index % len(PALETTE)])
            if horizontal:
                ax.barh(positions, values, left=base, label=name, color=colour)
            else:
                ax.bar(positions, values, bottom=base, label=name, color=colour, width=0.8)
            base = [b + v for b, v in zip(base, values, strict=True)]
        if horizontal:
            ax.set_yticks(positions, list(labels))
            ax.invert_yaxis()
            ax.set_xlabel(ylabel)
        else:
            step = max(1, len(labels) // 16)
            ax.set_xticks(positions[::step], list(labels)[::step], rotation=45, ha="right")
            ax.set_ylabel(ylabel)
        if any(base) and len(series) > 1:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        if not any(base):
            ax.text(0.5, 0.5, "nothing in this period", transform=ax.transAxes, ha="center")
        return _svg(fig, salt)


def grouped_bars(
    salt: str, labels: Sequence[str], series: Mapping[str, Sequence[int]], *, ylabel: str = ""
) -> str:
    """Bars side by side per label, one colour per series (e.g. time to execution by tier)."""
    with _rc():
        fig = _figure()
        ax = fig.add_subplot()
        shown = {k: v for k, v in series.items() if any(v)}
        width = 0.8 / max(1, len(shown))
        for index, (name, values) in enumerate(shown.items()):
            xs = [i + index * width - 0.4 + width / 2 for i in range(len(labels))]
            ax.bar(xs, values, width=width, label=name, color=PALETTE[index % len(PALETTE)])
        ax.set_xticks(range(len(labels)), list(labels))
        ax.set_ylabel(ylabel)
        if shown:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        else:
            ax.text(0.5, 0.5, "nothing in this period", transform=ax.transAxes, ha="center")
        return _svg(fig, salt)


def bars(
    salt: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    colours: Sequence[str] | None = None,
    xlabel: str = "",
) -> str:
    """Horizontal bars in the order given, one colour each (e.g. how long reviews stayed open)."""
    with _rc():
        fig = _figure(height=min(9.0, max(1.6, 0.28 * len(labels) + 0.9)))
        ax = fig.add_subplot()
        positions = list(range(len(labels)))
        ax.barh(positions, list(values), color=list(colours or [PALETTE[0]] * len(labels)))
        ax.set_yticks(positions, list(labels))
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        if not labels:
            ax.text(0.5, 0.5, "nothing in this period", transform=ax.transAxes, ha="center")
        return _svg(fig, salt)
