"""The report as one self-contained HTML file, as PDF (WeasyPrint, from that same HTML) or JSON.

The HTML needs nothing from a network: inline CSS, charts as inline SVG. Every string that came
from a person (tickets, notes, names, ids, reasons) or from an event that failed verification
goes through ``_e`` (html.escape) before it is written. Long tables show their first
``ROW_LIMIT`` rows (problems first) and say how many more the JSON holds; the JSON holds all.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from app.report import charts
from app.report.aggregate import EXECUTED_OUTCOMES, OUTCOMES

ROW_LIMIT = 200
SECTIONS = (
    ("volume", "1. Volume"),
    ("speed", "2. Speed"),
    ("sod", "3. Separation of duties"),
    ("fraud", "4. Fraud and disputes"),
    ("breakglass", "5. Break-glass"),
    ("privileged", "6. Privileged people and production NHIs"),
    ("nhi", "7. NHI secrets"),
    ("controls", "8. Control mapping"),
)

CSS = """
@page { size: A4 landscape; margin: 14mm 12mm; }
body { font-family: "Liberation Sans", Arial, Helvetica, sans-serif; font-size: 10pt;
       color: #1b1b1b; max-width: 1100px; margin: 0 auto; padding: 12px; }
h1 { font-size: 18pt; margin: 0.2em 0; }
h2 { font-size: 14pt; border-bottom: 2px solid #1565c0; margin-top: 1.6em; break-after: avoid; }
h3 { font-size: 11pt; margin: 1em 0 0.3em; break-after: avoid; }
.alarm { color: #fff; background: #c62828; font-weight: bold; font-size: 12pt;
         padding: 6px 10px; margin: 0 0 6px; }
.good { color: #1b5e20; font-weight: bold; }
.bad { color: #c62828; font-weight: bold; }
.meta { color: #444; }
.note { color: #555; font-size: 9pt; }
.figures { display: flex; flex-wrap: wrap; gap: 8px; margin: 0.5em 0; }
.figure { border: 1px solid #ccc; padding: 4px 10px; min-width: 9em; }
.figure b { display: block; font-size: 15pt; }
table { border-collapse: collapse; width: 100%; margin: 0.4em 0 0.8em; font-size: 8.5pt; }
thead { display: table-header-group; }
th, td { border: 1px solid #ccc; padding: 2px 5px; text-align: left; vertical-align: top; }
th { background: #eef2f7; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr { break-inside: avoid; }
tr.flag td { background: #ffebee; }
figure { margin: 0.4em 0; break-inside: avoid; }
svg.chart { max-width: 100%; height: auto; }
code { font-size: 8.5pt; word-break: break-all; }
"""


def _e(value: object) -> str:
    """Escaped for HTML text and attributes: every string a person or an event supplied."""
    return html.escape("" if value is None else str(value), quote=True)


def iso(ms: int | None) -> str:
    """UTC time of ``ms``; a time no calendar holds (an entry's made-up stream id) says so."""
    if ms is None:
        return "-"
    try:
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, ValueError, OSError):
        return f"(not a time: {ms} ms)"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def duration(ms: int | None) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``: what a person reads at a glance."""
    if ms is None:
        return "-"
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def render_json(report: Mapping[str, Any]) -> str:
    """Every figure and row, for a SIEM or a GRC tool; times in epoch ms plus ISO-8601 UTC."""
    out = dict(report)
    out["period"] = {
        **report["period"],
        "since_iso": iso(report["period"]["since"]),
        "until_iso": iso(report["period"]["until"]),
    }
    out["generated_at_iso"] = iso(report["generated_at"])
    return json.dumps(out, indent=2, ensure_ascii=False, sort_keys=True)


class _Page:
    """Builds the HTML, keeping names and the report at hand."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.r = report
        self.names: Mapping[str, str] = report.get("names", {})
        self.parts: list[str] = []

    def who(self, principal_id: str) -> str:
        """The directory's name where still resolvable, with the id; the id otherwise."""
        if not principal_id:
            return "-"
        name = self.names.get(principal_id)
        return _e(f"{name} ({principal_id})" if name else principal_id)

    def add(self, *parts: str) -> None:
        self.parts.extend(parts)

    def figures(self, items: Iterable[tuple[str, object, bool]]) -> None:
        """Headline numbers; a True flag paints the number red (a problem)."""
        cells = "".join(
            f'<div class="figure">{_e(label)}<b class="{"bad" if bad else "ok"}">'
            f"{_e(value)}</b></div>"
            for label, value, bad in items
        )
        self.add(f'<div class="figures">{cells}</div>')

    def table(
        self,
        headers: Sequence[str],
        rows: Sequence[Any],
        cells: Callable[[Any], Sequence[str]],
        *,
        flag: Callable[[Any], bool] | None = None,
        numeric: Iterable[int] = (),
        limit: int = ROW_LIMIT,
    ) -> None:
        """A table whose cells are already escaped (``cells`` uses _e / who)."""
        right = set(numeric)
        head = "".join(f"<th>{_e(h)}</th>" for h in headers)
        body = []
        for row in rows[:limit]:
            klass = ' class="flag"' if flag is not None and flag(row) else ""
            tds = "".join(
                f'<td class="n">{c}</td>' if i in right else f"<td>{c}</td>"
                for i, c in enumerate(cells(row))
            )
            body.append(f"<tr{klass}>{tds}</tr>")
        if not rows:
            body.append(f'<tr><td colspan="{len(headers)}">none</td></tr>')
        self.add(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        if len(rows) > limit:
            self.add(
                f'<p class="note">Showing the first {limit} of {len(rows)} rows; every row is in '
                "the JSON report (<code>--format json</code>).</p>"
            )

    def chart(self, svg: str, caption: str) -> None:
        self.add(f'<figure>{svg}<figcaption class="note">{_e(caption)}</figcaption></figure>')


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained HTML page: alarms first, then verification, then the sections."""
    page = _Page(report)
    r = report
    period = f"{iso(r['period']['since'])} to {iso(r['period']['until'])}"
    page.add(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>twokey evidence report, {_e(period)}</title>",
        f"<style>{CSS}</style></head><body>",
    )
    _alarms(page)
    page.add(
        "<h1>twokey evidence report</h1>",
        f'<p class="meta">Period: {_e(period)} (UTC, the end excluded). Generated '
        f"{_e(iso(r['generated_at']))}. Namespace <code>{_e(r['namespace'])}</code>.</p>",
        '<p class="note">Every number below is counted from audit events whose HMAC chain '
        "verified. Names are the directory's where still resolvable, ids otherwise; break-glass "
        "justifications and connectors are context from the stored request and the current "
        "configuration, not from the chain.</p>",
    )
    _verification(page)
    for anchor, title in SECTIONS:
        page.add(f'<section id="{anchor}"><h2>{_e(title)}</h2>')
        _SECTION[anchor](page)
        page.add("</section>")
    page.add("</body></html>")
    return "\n".join(page.parts)


def _alarms(page: _Page) -> None:
    """The report's first lines, in red: a broken chain, then any execution lacking a gate."""
    v = page.r["verification"]
    sod = page.r["separation_of_duties"]
    if not v["ok"]:
        broken = [s for s in v["shards"] if not s["ok"]]
        page.add(
            '<p class="alarm" id="tampered">AUDIT TRAIL BROKEN in '
            f"{len(broken)} of {len(v['shards'])} shards: {v['unverified']} events are not "
            'evidence and are kept out of every figure below (listed under "Events not used as '
            'evidence"). Treat this as a security incident.</p>'
        )
    if sod["lacking_gate"]:
        page.add(
            f'<p class="alarm" id="gateless">{sod["lacking_gate"]} executed change'
            f"{'s' if sod['lacking_gate'] != 1 else ''} lacked any gate (no owner confirmation, "
            "no approval, not break-glass). This must be 0.</p>"
        )


def _verification(page: _Page) -> None:
    v = page.r["verification"]
    page.add('<section id="verification"><h2>Verification of the audit trail</h2>')
    if v["ok"]:
        page.add(
            f'<p class="good">Chain verified: {v["evidence"]} of {v["events"]} events sealed '
            "and verified in 16 shards.</p>"
        )
    else:
        page.add(
            f'<p class="bad">Chain broken: {v["evidence"]} of {v["events"]} events verified; '
            f"{v['unverified']} are not evidence.</p>"
        )
    if v["unverified"] and v["ok"]:
        page.add(
            f'<p class="note">{v["unverified"]} events are not sealed yet and are not counted; '
            "run the report again once the sweeper has sealed them.</p>"
        )
    if v.get("anchors_given") is not None:
        page.add(
            f'<p class="note">Checked against {v["anchors_given"]} chain heads given with '
            "--anchor.</p>"
        )
    page.add(
        '<p class="note">Chain heads: the mac of the last verified event of each shard. Keep '
        "them with this report: a later <code>twokey audit export --heads</code>, or the "
        "<code>audit_sealed</code> lines in your SIEM, must show the same mac at the same seq.</p>"
    )
    page.table(
        ["shard", "chain", "events", "sealed", "verified", "head seq", "head mac", "problem"],
        v["shards"],
        lambda s: [
            _e(s["shard"]),
            f"<code>{_e(s['chain'])}</code>",
            _e(s["events"]),
            _e(s["sealed"]),
            _e(s["evidence"]),
            _e(s["head_seq"]),
            f"<code>{_e(s['head_mac'] or '-')}</code>",
            f'<span class="bad">{_e(s["problem"])}</span>' if s["problem"] else "ok",
        ],
        flag=lambda s: not s["ok"],
        numeric=(2, 3, 4, 5),
    )
    if v["unverified"]:
        page.add(
            '<h3 id="unverified">Events not used as evidence</h3>',
            '<p class="note">What these entries claim cannot be trusted: shown as stored, '
            "counted nowhere else.</p>",
        )
        page.table(
            ["shard", "stream id", "seq", "written", "claims kind", "claims request", "why"],
            v["unverified_events"],
            lambda u: [
                _e(u["shard"]),
                f"<code>{_e(u['stream_id'])}</code>",
                _e(u["seq"]),
                _e(iso(u["written_at"])),
                _e(u.get("kind", "?")),
                _e(u.get("rid", "?")),
                _e(u["why"]),
            ],
            flag=lambda _: True,
        )
        if v["unverified"] > len(v["unverified_events"]):
            page.add(
                f'<p class="note">{v["unverified"]} in all; the first '
                f"{len(v['unverified_events'])} are listed.</p>"
            )
    page.add("</section>")


def _bucket_label(ms: int, bucket: str) -> str:
    day = iso(ms)[:10]
    return f"week of {day}" if bucket == "week" else day


def _volume(page: _Page) -> None:
    vol = page.r["volume"]
    page.figures(
        [("requests opened", vol["requests"], False)]
        + [(o.replace("_", " "), vol["by_outcome"][o], False) for o in OUTCOMES]
    )
    labels = [_bucket_label(b["start"], vol["bucket"]) for b in vol["per_bucket"]]
    series = {o: [b[o] for b in vol["per_bucket"]] for o in OUTCOMES}
    page.chart(
        charts.stacked_bars(
            "volume", labels, series, colours=charts.OUTCOME_COLOURS, ylabel="requests"
        ),
        f"Requests opened per {vol['bucket']}, stacked by how they ended.",
    )
    for title, key in (("By action", "by_action"), ("By tier", "by_tier")):
        page.add(f"<h3>{title}</h3>")
        rows = list(vol[key].items())
        page.table(
            [title[3:], *(o.replace("_", " ") for o in OUTCOMES), "total"],
            rows,
            lambda kv: [_e(kv[0]), *(_e(kv[1][o]) for o in OUTCOMES), _e(sum(kv[1].values()))],
            numeric=range(1, len(OUTCOMES) + 2),
        )
    page.add(f"<h3>Per {vol['bucket']}</h3>")
    page.table(
        [vol["bucket"], *(o.replace("_", " ") for o in OUTCOMES)],
        vol["per_bucket"],
        lambda b: [_e(_bucket_label(b["start"], vol["bucket"])), *(_e(b[o]) for o in OUTCOMES)],
        numeric=range(1, len(OUTCOMES) + 1),
    )


def _speed(page: _Page) -> None:
    sp = page.r["speed"]
    page.figures(
        [
            ("expired", sp["expired"], False),
            ("escalated to another role", sp["escalated"], False),
            ("approvers reminded", sp["reminded"], False),
        ]
    )
    dist = sp["distribution"]
    page.chart(
        charts.grouped_bars("speed", dist["bins"], dist["by_tier"], ylabel="requests"),
        "Time from open to execution (completed, failed, unknown, interrupted), by tier.",
    )
    steps = (
        ("owner", "to owner confirmation"),
        ("approval", "to last approval"),
        ("execution", "to execution"),
    )
    rows = [
        (tier, step, words, figs[step])
        for tier, figs in sp["by_tier"].items()
        for step, words in steps
    ]
    page.table(
        ["tier", "from open", "count", "p50", "p90", "p99", "max"],
        rows,
        lambda t: [
            _e(t[0]),
            _e(t[2]),
            _e(t[3]["count"]),
            *(_e(duration(t[3][p])) for p in ("p50", "p90", "p99", "max")),
        ],
        numeric=range(2, 7),
    )
    page.add("<h3>Expired requests, and where they stalled</h3>")
    page.table(
        ["stalled at", "requests"],
        list(sp["stalled_at"].items()),
        lambda kv: [_e(kv[0]), _e(kv[1])],
        numeric=(1,),
    )
    page.table(
        ["request", "opened", "expired", "action", "target", "tier", "requester", "stalled at"],
        sp["expired_requests"],
        lambda x: [
            _e(x["rid"]),
            _e(iso(x["opened_at"])),
            _e(iso(x["expired_at"])),
            _e(x["action"]),
            page.who(x["target"]),
            _e(x["tier"]),
            page.who(x["requester"]),
            _e(x["stalled_at"]),
        ],
    )


def _sod(page: _Page) -> None:
    sod = page.r["separation_of_duties"]
    page.figures(
        [
            ("executions lacking any gate", sod["lacking_gate"], sod["lacking_gate"] > 0),
            ("approver was requester or target", sod["sod_conflicts"], sod["sod_conflicts"] > 0),
            ("executed changes", sod["executions"], False),
            ("with owner confirmation", sod["with_owner_confirmation"], False),
            ("with approval", sod["with_approval"], False),
        ]
    )
    gates = list(sod["by_gate"].items())
    page.chart(
        charts.bars(
            "sod",
            [g for g, _ in gates],
            [n for _, n in gates],
            colours=["#c62828" if g == "none" else "#2e7d32" for g, _ in gates],
            xlabel="executed changes",
        ),
        "Which gates held when each change was claimed for execution.",
    )
    page.table(
        [
            "request",
            "ticket",
            "claimed",
            "action",
            "target",
            "tier",
            "requester",
            "owner confirmation",
            "approvers",
            "gate",
            "connector",
            "outcome",
        ],
        sod["rows"],
        lambda x: [
            _e(x["rid"]),
            _e(x["ticket"]),
            _e(iso(x["claimed_at"])),
            _e(x["action"]),
            page.who(x["target"]),
            _e(x["tier"]),
            page.who(x["requester"]),
            page.who(x["owner_confirmed_by"]),
            ", ".join(page.who(a) for a in x["approvers"]) or "-",
            f'<span class="bad">{_e(x["gate"])}</span>' if x["lacks_gate"] else _e(x["gate"]),
            _e(x.get("connector") or "-"),
            _e(x["outcome"]),
        ],
        flag=lambda x: bool(x["lacks_gate"] or x["sod_conflict"]),
    )
    page.add('<p class="note">Connector: the one configured now for that change (context).</p>')


def _fraud(page: _Page) -> None:
    fr = page.r["fraud"]
    page.figures(
        [
            ('"this wasn\'t me"', fr["owner_rejections"], fr["owner_rejections"] > 0),
            ("disputes after a change", fr["disputes"], fr["disputes"] > 0),
            ("refused attempts", fr["refused_attempts"], False),
            ("accounts flagged", len(fr["flagged_accounts"]), False),
            ("opened while flagged", fr["opened_while_flagged"], False),
            ("velocity escalations", fr["velocity_escalations"], False),
            ("velocity refusals", fr["velocity_refusals"], fr["velocity_refusals"] > 0),
        ]
    )
    reasons = list(fr["refusals_by_reason"].items())
    page.chart(
        charts.bars(
            "fraud",
            [k for k, _ in reasons],
            [n for _, n in reasons],
            colours=["#6a1b9a"] * len(reasons),
            xlabel="refused attempts",
        ),
        "Refused attempts by reason (sod: separation of duties, role: lacks the role, "
        "not_owner: not the owner of record).",
    )
    kinds = sorted(
        {k for row in fr["by_agent"] + fr["by_target"] for k in row if k not in ("who", "total")}
    )
    for title, key in (("Per agent", "by_agent"), ("Per target", "by_target")):
        page.add(f"<h3>{title}</h3>")
        page.table(
            [title[4:], "total", *kinds],
            fr[key],
            lambda row: [
                page.who(row["who"]),
                _e(row["total"]),
                *(_e(row.get(k, 0)) for k in kinds),
            ],
            numeric=range(1, len(kinds) + 2),
        )
    page.add('<h3>"This wasn\'t me" and disputes</h3>')
    rows = [("this wasn't me", x) for x in fr["owner_rejection_rows"]] + [
        ("disputed", x) for x in fr["dispute_rows"]
    ]
    page.table(
        ["what", "when", "request", "action", "target", "requester", "owner", "outcome"],
        rows,
        lambda t: [
            _e(t[0]),
            _e(iso(t[1]["at"])),
            _e(t[1]["rid"]),
            _e(t[1]["action"]),
            page.who(t[1]["target"]),
            page.who(t[1]["requester"]),
            page.who(t[1]["owner"]),
            _e(t[1]["outcome"]),
        ],
        flag=lambda _: True,
    )
    page.add("<h3>Flagged accounts</h3>")
    page.table(["account"], fr["flagged_accounts"], lambda a: [page.who(a)])


def _breakglass(page: _Page) -> None:
    bg = page.r["breakglass"]
    page.figures(
        [
            ("break-glass uses", bg["uses"], False),
            ("reviews open", bg["reviews_open"], bg["reviews_open"] > 0),
            ("reviews closed", bg["reviews_closed"], False),
        ]
    )
    rows = bg["rows"][:40]
    page.chart(
        charts.bars(
            "breakglass",
            [x["rid"] for x in rows],
            [x["review_open_ms"] / 3_600_000 for x in rows],
            colours=["#c62828" if x["review_open"] else "#2e7d32" for x in rows],
            xlabel="hours the review stayed open (red: still open)",
        ),
        "How long each review stayed open, open reviews first.",
    )
    page.table(
        [
            "request",
            "opened",
            "action",
            "target",
            "requester",
            "justification",
            "outcome",
            "review",
            "reviewer",
            "reviewed as",
            "review note",
            "open for",
        ],
        bg["rows"],
        lambda x: [
            _e(x["rid"]),
            _e(iso(x["opened_at"])),
            _e(x["action"]),
            page.who(x["target"]),
            page.who(x["requester"]),
            _e(x.get("justification"))
            if x.get("justification") is not None
            else '<span class="note">not kept</span>',
            _e(x["outcome"]),
            '<span class="bad">open</span>'
            if x["review_open"]
            else _e(f"closed {iso(x['review_closed_at'])}"),
            page.who(x["reviewer"]),
            _e(x["reviewed_as"] or "-"),
            _e(x["review_note"]),
            _e(duration(x["review_open_ms"])),
        ],
        flag=lambda x: bool(x["review_open"]),
    )
    page.add(
        '<p class="note">Justification: from the stored request while it is kept '
        "(context, not part of the chain).</p>"
    )


def _privileged(page: _Page) -> None:
    pr = page.r["privileged"]
    page.figures(
        [("changes", pr["requests"], False), ("security alerted", pr["security_alerted"], False)]
    )
    page.chart(
        charts.stacked_bars(
            "privileged",
            ["requests"],
            {o: [pr["by_outcome"][o]] for o in OUTCOMES},
            colours=charts.OUTCOME_COLOURS,
            horizontal=True,
        ),
        "Requests touching privileged people or production NHIs, by how they ended.",
    )
    page.table(
        [
            "request",
            "opened",
            "action",
            "target",
            "kind",
            "tier",
            "requester",
            "outcome",
            "security alerted",
        ],
        pr["rows"],
        lambda x: [
            _e(x["rid"]),
            _e(iso(x["opened_at"])),
            _e(x["action"]),
            page.who(x["target"]),
            _e(x.get("target_kind", "")),
            _e(x["tier"]),
            page.who(x["requester"]),
            _e(x["outcome"]),
            "yes" if x["security_alerted"] else '<span class="bad">no</span>',
        ],
        flag=lambda x: not x["security_alerted"],
    )
    page.add(
        '<p class="note">Included: tiers the policy marks privileged or alerting security, '
        'break-glass, and the strictest tier; "security alerted" is what the tier requires '
        "(alerts are chat messages, not audit events).</p>"
    )


def _nhi(page: _Page) -> None:
    nhi = page.r["nhi_secrets"]
    page.figures(
        [
            ("rotations", nhi["rotations"], False),
            ("secrets not delivered", nhi["secrets_undelivered"], nhi["secrets_undelivered"] > 0),
        ]
    )
    systems = list(nhi["by_system"].items())
    page.chart(
        charts.stacked_bars(
            "nhi",
            [s for s, _ in systems],
            {o: [c.get(o, 0) for _, c in systems] for o in OUTCOMES},
            colours=charts.OUTCOME_COLOURS,
            horizontal=True,
            ylabel="rotations",
        ),
        "Secret rotations by system, by how they ended.",
    )
    page.table(
        ["system", *EXECUTED_OUTCOMES, "other", "total"],
        systems,
        lambda kv: [
            _e(kv[0]),
            *(_e(kv[1].get(o, 0)) for o in EXECUTED_OUTCOMES),
            _e(sum(n for o, n in kv[1].items() if o not in EXECUTED_OUTCOMES)),
            _e(sum(kv[1].values())),
        ],
        numeric=range(1, len(EXECUTED_OUTCOMES) + 3),
    )
    page.add("<h3>Age of each NHI's current secret</h3>")
    page.table(
        ["NHI", "system", "owner of record", "last rotated", "age"],
        nhi["secret_age"],
        lambda x: [
            page.who(x["nhi"]),
            _e(x.get("system") or "-"),
            page.who(x.get("owner") or ""),
            _e(iso(x["rotated_at"])) if x["rotated_at"] else "not in the trail",
            _e(duration(x["age_ms"])),
        ],
    )


def _controls(page: _Page) -> None:
    page.table(
        ["framework", "control", "what it asks", "section", "evidence", "count"],
        page.r["controls"],
        lambda c: [
            _e(c["framework"]),
            _e(c["control"]),
            _e(c["title"]),
            _e(c["section"]),
            _e(c["evidence"]),
            _e(c["count"]),
        ],
        numeric=(5,),
    )
    page.add(
        '<p class="note">The mapping is data (app/report/controls.py): add a framework or '
        "a control there.</p>"
    )


_SECTION: dict[str, Callable[[_Page], None]] = {
    "volume": _volume,
    "speed": _speed,
    "sod": _sod,
    "fraud": _fraud,
    "breakglass": _breakglass,
    "privileged": _privileged,
    "nhi": _nhi,
    "controls": _controls,
}


def _no_fetch(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """WeasyPrint's URL fetcher: the report is self-contained, so nothing is ever fetched."""
    raise ValueError(f"the report fetches nothing ({url[:60]!r})")


def render_pdf(html_text: str) -> bytes:
    """The PDF of the same HTML, laid out by WeasyPrint (print CSS above)."""
    from weasyprint import HTML  # type: ignore[import-untyped]

    pdf = HTML(string=html_text, url_fetcher=_no_fetch).write_pdf()
    assert pdf is not None
    return bytes(pdf)
