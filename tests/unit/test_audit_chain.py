"""The pure audit chain: canonical form, seals, and that any single tampering is named exactly."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.audit.chain import (
    ChainHead,
    ChainVerifier,
    ProblemKind,
    ShardVerdict,
    StreamEntry,
    VerifyReport,
    canonical,
    genesis,
    head_record,
    next_mac,
    read_heads,
    render_verify,
    seal_run,
    verify_chain,
)

KEY = b"unit-test-audit-key-0123456789ab"
TAG = "{t:s03}"
T0 = 1_700_000_000_000


def make_events(count: int) -> list[dict[str, Any]]:
    return [
        {
            "seq": seq,
            "rid": f"TK-3ABCDE{seq % 10}0",
            "kind": "approved",
            "at": T0 + seq * 1000,
            "actor": f"agent{seq}",
            "role": "approver",
            "ticket": f"INC-{seq}",
            "action": "reset-mfa",
            "target": "alice",
            "tier": "standard",
            "from": "pending",
            "to": "ready",
            "reason": "lost-device",
            "outcome": "ready",
        }
        for seq in range(1, count + 1)
    ]


def stream_of(events: list[dict[str, Any]]) -> list[StreamEntry]:
    """Entries as XRANGE returns them; the JSON key order is not sorted, as cjson's is not."""
    return [
        (
            f"{event['at']}-0",
            {"seq": str(event["seq"]), "e": json.dumps(dict(reversed(event.items())))},
        )
        for event in events
    ]


def seals_of(events: list[dict[str, Any]], sealed: int, tag: str = TAG) -> list[str]:
    macs, mac = [], genesis(KEY, tag)
    for event in events[:sealed]:
        mac = next_mac(KEY, mac, event)
        macs.append(mac)
    return macs


def verdict(entries: list[StreamEntry], seals: list[str], counter: int) -> ShardVerdict:
    return verify_chain(entries, seals, KEY, TAG, counter)


def edited(entry: StreamEntry, **changes: Any) -> StreamEntry:
    stream_id, fields = entry
    event = json.loads(fields["e"])
    event.update(changes)
    return stream_id, {**fields, "e": json.dumps(event)}


# --- the chain itself --------------------------------------------------------------------------


def test_canonical_form_ignores_key_order_and_keeps_non_ascii() -> None:
    assert canonical({"b": 1, "a": "é"}) == canonical({"a": "é", "b": 1})
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_the_chain_is_hmac_sha256_over_the_previous_mac_and_the_canonical_event() -> None:
    event = make_events(1)[0]
    start = hmac.new(KEY, b"twokey-audit-genesis:" + TAG.encode(), hashlib.sha256).hexdigest()
    expected = hmac.new(KEY, start.encode() + b"\n" + canonical(event), hashlib.sha256).hexdigest()
    assert genesis(KEY, TAG) == start
    assert next_mac(KEY, start, event) == expected


def test_each_shard_and_key_has_its_own_genesis() -> None:
    assert genesis(KEY, "{t:s03}") != genesis(KEY, "{t:s04}")
    assert genesis(KEY, "{t:s03}") != genesis(b"another-key-of-32-bytes-abcdefgh", "{t:s03}")


# --- verify: intact trails ---------------------------------------------------------------------


def test_an_intact_sealed_trail_verifies_with_its_head() -> None:
    events = make_events(6)
    seals = seals_of(events, 6)
    result = verdict(stream_of(events), seals, counter=6)
    assert result.ok
    assert (result.events, result.sealed, result.unsealed) == (6, 6, 0)
    assert result.head == seals[-1]


def test_events_not_sealed_yet_are_counted_not_failed() -> None:
    events = make_events(7)
    result = verdict(stream_of(events), seals_of(events, 4), counter=7)
    assert result.ok
    assert result.unsealed == 3


def test_events_appended_after_the_counter_was_read_are_not_a_failure() -> None:
    events = make_events(5)
    assert verdict(stream_of(events), seals_of(events, 5), counter=3).ok


def test_an_empty_shard_verifies() -> None:
    assert verdict([], [], counter=0).ok


def test_a_chain_from_another_shard_does_not_verify_here() -> None:
    events = make_events(3)
    result = verdict(stream_of(events), seals_of(events, 3, tag="{t:s04}"), counter=3)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.EDITED, 1)


# --- verify: any single tampering is detected and named ------------------------------------------


chains = st.integers(min_value=2, max_value=25).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n))
)


@given(chains, st.data())
def test_editing_any_sealed_event_is_named(chain: tuple[int, int], data: st.DataObject) -> None:
    count, sealed = chain
    sealed = max(sealed, 1)
    events = make_events(count)
    entries = stream_of(events)
    index = data.draw(st.integers(min_value=0, max_value=sealed - 1))
    field = data.draw(st.sampled_from(["actor", "outcome", "reason", "at", "to"]))
    entries[index] = edited(entries[index], **{field: "changed"})

    result = verdict(entries, seals_of(events, sealed), counter=count)

    assert result.problem is not None
    assert result.problem.kind is ProblemKind.EDITED
    assert (result.problem.seq, result.problem.stream_id) == (index + 1, entries[index][0])


@given(chains, st.data())
def test_deleting_any_event_is_named(chain: tuple[int, int], data: st.DataObject) -> None:
    count, sealed = chain
    events = make_events(count)
    entries = stream_of(events)
    index = data.draw(st.integers(min_value=0, max_value=count - 1))
    del entries[index]

    result = verdict(entries, seals_of(events, sealed), counter=count)

    assert result.problem is not None
    assert result.problem.seq == index + 1
    if index == count - 1:
        assert result.problem.kind is ProblemKind.TAIL_DELETED
    else:
        assert result.problem.kind is ProblemKind.MISSING
        assert result.problem.stream_id == entries[index][0]


@given(chains, st.data())
def test_swapping_any_two_events_is_named(chain: tuple[int, int], data: st.DataObject) -> None:
    count, sealed = chain
    events = make_events(count)
    entries = stream_of(events)
    first = data.draw(st.integers(min_value=0, max_value=count - 2))
    second = data.draw(st.integers(min_value=first + 1, max_value=count - 1))
    # stream ids stay where they are; the contents trade places
    (id_a, fields_a), (id_b, fields_b) = entries[first], entries[second]
    entries[first], entries[second] = (id_a, fields_b), (id_b, fields_a)

    result = verdict(entries, seals_of(events, sealed), counter=count)

    assert result.problem is not None
    assert result.problem.kind is ProblemKind.REORDERED
    assert (result.problem.seq, result.problem.stream_id) == (second + 1, id_a)


def test_a_repeated_event_is_named() -> None:
    events = make_events(4)
    entries = stream_of(events)
    entries.insert(2, ("x-1", dict(entries[1][1])))
    result = verdict(entries, seals_of(events, 4), counter=4)
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.REORDERED
    assert result.problem.seq == 2
    assert "twice" in result.problem.detail


def test_deleting_the_newest_events_is_named_from_the_counter() -> None:
    events = make_events(8)
    result = verdict(stream_of(events)[:5], seals_of(events, 5), counter=8)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.TAIL_DELETED, 6)
    assert "events 6 to 8" in result.problem.detail


def test_deleting_the_newest_events_and_lowering_the_counter_leaves_extra_seals() -> None:
    events = make_events(8)
    result = verdict(stream_of(events)[:5], seals_of(events, 8), counter=5)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.EXTRA_SEALS, 6)


def test_a_seal_removed_from_the_middle_is_named() -> None:
    events = make_events(6)
    seals = seals_of(events, 6)
    del seals[2]
    result = verdict(stream_of(events), seals, counter=6)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.SEAL_MISSING, 3)


def test_a_seal_inserted_in_the_middle_is_named() -> None:
    events = make_events(6)
    seals = seals_of(events, 6)
    seals.insert(3, "0" * 64)
    result = verdict(stream_of(events), seals, counter=6)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.EXTRA_SEALS, 4)


def test_an_edited_seal_is_named() -> None:
    events = make_events(4)
    seals = seals_of(events, 4)
    seals[1] = "f" * 64
    result = verdict(stream_of(events), seals, counter=4)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.EDITED, 2)


def test_entries_that_are_not_events_as_written_are_named_even_unsealed() -> None:
    entries = stream_of(make_events(3))
    second_id, second = entries[1]
    bad_fields = [
        {**second, "extra": "x"},
        {"seq": "2", "e": "{not json"},
        {"seq": "2", "e": "[2]"},
        {"seq": "2", "e": second["e"].replace('"seq": 2', '"seq": 7')},
        {"seq": "2", "e": '{"seq": 2, "actor": "a", "actor": "b"}'},
        {"seq": "2", "e": '{"seq": 2, "at": NaN}'},
        {"seq": "two", "e": second["e"]},
    ]
    for fields in bad_fields:
        tampered = [entries[0], (second_id, fields), entries[2]]
        result = verdict(tampered, [], counter=3)
        assert result.problem is not None, fields
        assert result.problem.kind is ProblemKind.EDITED, fields
        assert (result.problem.seq, result.problem.stream_id) == (2, second_id), fields


def test_the_verifier_never_shows_the_key() -> None:
    assert KEY.decode() not in repr(ChainVerifier(KEY, TAG, 0))


# --- sealing -----------------------------------------------------------------------------------


def test_a_seal_run_continues_a_chain_where_it_was_left() -> None:
    events = make_events(5)
    entries = stream_of(events)
    seals = seals_of(events, 2)
    run = seal_run(KEY, seals[-1], 3, entries[2:])
    assert seals + run.macs == seals_of(events, 5)
    assert (run.last_stream_id, run.blocked) == (entries[-1][0], None)


def test_a_seal_run_stops_at_a_gap_and_never_seals_past_it() -> None:
    events = make_events(6)
    entries = stream_of(events)
    del entries[3]
    run = seal_run(KEY, genesis(KEY, TAG), 1, entries)
    assert run.macs == seals_of(events, 3)
    assert run.last_stream_id == entries[2][0]
    assert run.blocked is not None and "expected event 4 but found event 5" in run.blocked


def test_a_seal_run_never_seals_an_event_older_than_the_window() -> None:
    events = make_events(5)
    entries = stream_of(events)
    run = seal_run(KEY, genesis(KEY, TAG), 1, entries, not_before_ms=T0 + 3000)
    assert run.macs == []
    assert run.too_old and run.blocked is not None and "event 1" in run.blocked
    recent = seal_run(KEY, seals_of(events, 3)[-1], 4, entries[3:], not_before_ms=T0 + 3000)
    assert recent.macs == seals_of(events, 5)[3:] and not recent.too_old


# --- sealed history: the sealer's mark, the sealing window, heads recorded outside Redis --------


def test_a_seal_list_shorter_than_the_sealed_mark_fails() -> None:
    events = make_events(6)
    result = verify_chain(stream_of(events), seals_of(events, 3), KEY, TAG, 6, sealed_mark=6)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.SEALS_REMOVED, 4)


def test_unsealed_events_older_than_the_window_fail_recent_ones_do_not() -> None:
    events = make_events(6)
    entries, seals = stream_of(events), seals_of(events, 3)
    # events 4..6 were written at T0+4s..T0+6s
    assert verify_chain(entries, seals, KEY, TAG, 6, not_before_ms=T0 + 4000).ok
    result = verify_chain(entries, seals, KEY, TAG, 6, not_before_ms=T0 + 5000)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.TOO_OLD_TO_SEAL, 4)
    assert result.problem.stream_id == entries[3][0]


def anchors_of(heads: list[ChainHead]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for head in heads:
        found.setdefault(head.seq, set()).add(head.mac)
    return found


def test_anchors_that_match_pass_and_one_beyond_the_seal_list_fails() -> None:
    events = make_events(5)
    seals = seals_of(events, 5)
    heads = anchors_of([ChainHead(3, 2, seals[1]), ChainHead(3, 5, seals[4])])
    assert verify_chain(stream_of(events), seals, KEY, TAG, 5, anchors=heads).ok
    rolled_back = verify_chain(stream_of(events)[:3], seals[:3], KEY, TAG, 3, anchors=heads)
    assert rolled_back.problem is not None
    assert (rolled_back.problem.kind, rolled_back.problem.seq) == (ProblemKind.ROLLED_BACK, 4)


@given(chains, st.data())
def test_any_rewrite_resealed_from_scratch_fails_against_a_later_head(
    chain: tuple[int, int], data: st.DataObject
) -> None:
    """Even a sealer tricked into sealing a forged history cannot match the heads recorded."""
    count, _ = chain
    events = make_events(count)
    index = data.draw(st.integers(min_value=0, max_value=count - 1))
    head_seq = data.draw(st.integers(min_value=index + 1, max_value=count))
    recorded = anchors_of([ChainHead(3, head_seq, seals_of(events, count)[head_seq - 1])])
    forged = [dict(e) for e in events]
    forged[index]["actor"] = "mallory"

    result = verify_chain(
        stream_of(forged), seals_of(forged, count), KEY, TAG, count, anchors=recorded
    )

    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.REWRITTEN, head_seq)


def test_conflicting_heads_for_one_seq_fail_even_if_one_matches() -> None:
    events = make_events(3)
    seals = seals_of(events, 3)
    heads = {2: {seals[1], "e" * 64}}
    result = verify_chain(stream_of(events), seals, KEY, TAG, 3, anchors=heads)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.REWRITTEN, 2)


def test_heads_are_read_from_log_lines_exports_and_head_lines_and_nothing_else() -> None:
    mac = "a" * 64
    lines = [
        json.dumps(
            {"event": "audit_sealed", "level": "info", **head_record(2, "{tk:s02}", 9, mac)}
        ),
        json.dumps({"seq": 4, "rid": "TK-1", "shard": 7, "stream_id": "1-0", "mac": mac}),
        json.dumps({"type": "twokey_audit_head", "shard": 0, "seq": 1, "mac": mac}) + "\n",
        "2026-01-01 [info] audit_sealed shard=1 seq=2",  # a console line: not a record
        "{not json",
        "[1, 2]",
        json.dumps({"shard": 1, "seq": 2}),  # unsealed export line: no mac
        json.dumps({"shard": 1, "seq": True, "mac": mac}),
        json.dumps({"shard": 1, "seq": 0, "mac": mac}),
        json.dumps({"shard": -1, "seq": 2, "mac": mac}),
        json.dumps({"shard": 1, "seq": 2, "mac": "A" * 64}),
    ]
    assert read_heads(lines) == [
        ChainHead(2, 9, mac, "{tk:s02}"),
        ChainHead(7, 4, mac),
        ChainHead(0, 1, mac),
    ]


# --- telling people ----------------------------------------------------------------------------


def test_render_verify_passes_and_mentions_unsealed_events() -> None:
    events = make_events(3)
    report = VerifyReport([verdict(stream_of(events), seals_of(events, 2), counter=3)])
    code, text = render_verify(report)
    assert code == 0
    assert "intact" in text
    assert "1 event not sealed yet" in text


def test_render_verify_fails_and_names_the_first_bad_event() -> None:
    events = make_events(4)
    entries = stream_of(events)
    del entries[1]
    good = verdict(stream_of(events), seals_of(events, 4), counter=4)
    bad = verify_chain(entries, seals_of(events, 4, tag="{t:s07}"), KEY, "{t:s07}", 4)
    code, text = render_verify(VerifyReport([good, bad]))
    assert code == 1
    first_line = text.splitlines()[1]
    assert "{t:s07}" in first_line
    assert f"event 2 (gap just before stream id {entries[1][0]}): missing" in first_line


def test_render_verify_says_how_many_recorded_heads_matched() -> None:
    events = make_events(2)
    report = VerifyReport([verdict(stream_of(events), seals_of(events, 2), counter=2)], anchors=2)
    code, text = render_verify(report)
    assert code == 0
    assert "2 chain heads recorded outside Redis all match" in text
