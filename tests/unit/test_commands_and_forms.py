"""The shared command grammar, button codec and input cleaning: parsers never crash on junk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.channels.commands import HELP_TEXT, PLAIN_USAGE, USAGE, parse_command
from app.channels.common import ButtonAction, decode_button, encode_button
from app.domain.errors import BadInput
from app.domain.forms import OpenForm, clean_text, parse_request_id
from app.domain.models import REQUEST_ID_ALPHABET, TRANSITIONS, Action, RequestState, may_move

request_ids = st.text(alphabet=REQUEST_ID_ALPHABET, min_size=8, max_size=8).map(lambda t: "TK-" + t)


def test_open_command_splits_into_its_fields() -> None:
    command = parse_command("reset-mfa <@U123|alice> INC-1234 lost-device left it on the bus")
    assert command.verb == "open"
    assert (command.action, command.target, command.ticket, command.reason_code) == (
        "reset-mfa",
        "<@U123|alice>",
        "INC-1234",
        "lost-device",
    )
    assert command.text == "left it on the bus"


@pytest.mark.parametrize(
    ("text", "verb"),
    [
        ("", "form"),
        ("help", "help"),
        ("list", "list"),
        ("status TK-0000000A", "status"),
        ("cancel tk-0000000a", "cancel"),
        ("breakglass unlock nhi:x INC-1 the building is on fire", "breakglass"),
    ],
)
def test_every_verb(text: str, verb: str) -> None:
    assert parse_command(text).verb == verb


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("reset-everything @a INC-1 x", "not an action"),
        ("reset-mfa @a", "Not enough words"),
        ("status", "Usage"),
        ("status TK-1", "not a request id"),
        ("list all", "no arguments"),
        ("breakglass unlock @a INC-1", "emergency"),
        ("x" * 3000, "too long"),
    ],
)
def test_bad_commands_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(BadInput, match=words):
        parse_command(text)


@pytest.mark.parametrize(
    "text",
    [
        "/twokey reset-password alice INC-1234 forgotten-password",
        "/TwoKey   reset-password alice INC-1234 forgotten-password",
    ],
)
def test_a_command_copied_with_its_slash_is_accepted(text: str) -> None:
    """The docs and Slack write `/twokey ...`; pasting that whole line must just work."""
    command = parse_command(text)
    assert (command.verb, command.action, command.target) == ("open", "reset-password", "alice")
    assert parse_command("/twokey").verb == "form"
    assert parse_command("/twokey help").verb == "help"


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("rest-mfa @alice INC-1234 lost-device", "Did you mean reset-mfa?"),
        ("reset-pasword alice INC-1234 forgotten-password", "Did you mean reset-password?"),
        ("stauts TK-0000000A", "Did you mean status?"),
        ("lsit", "Did you mean list?"),
        ("/twokey unlcok alice INC-1 locked-out", "Did you mean unlock?"),
        ("breakglass rest-mfa @a INC-1 the building is on fire", "Did you mean reset-mfa?"),
    ],
)
def test_a_typo_gets_a_did_you_mean(text: str, suggestion: str) -> None:
    with pytest.raises(BadInput) as refused:
        parse_command(text)
    assert suggestion in refused.value.message
    assert USAGE in refused.value.message  # Slack shows the usage once, not twice


def test_a_word_far_from_any_command_gets_no_guess() -> None:
    with pytest.raises(BadInput) as refused:
        parse_command("xyzzy @alice INC-1234 lost-device")
    assert "Did you mean" not in refused.value.message


def test_the_plain_help_has_no_markdown_marks() -> None:
    """The playground shows text as typed: backticks there would show up literally."""
    for text in (HELP_TEXT, PLAIN_USAGE):
        assert "`" not in text
    assert "reset-mfa @alice INC-1234 lost-device" in HELP_TEXT
    assert "status <request-id>" in HELP_TEXT


@given(st.text(max_size=300))
def test_parse_command_accepts_or_refuses_cleanly(text: str) -> None:
    try:
        command = parse_command(text)
    except BadInput as refusal:
        assert refusal.message
        return
    if command.verb == "open":
        assert Action(command.action)


@given(st.sampled_from(list(ButtonAction)), request_ids)
def test_buttons_round_trip(action: ButtonAction, request_id: str) -> None:
    assert decode_button(encode_button(action, request_id)) == (action, request_id)


@given(st.text(max_size=80))
def test_forged_button_values_are_refused(value: str) -> None:
    try:
        action, request_id = decode_button(value)
    except BadInput:
        return
    assert encode_button(action, request_id).upper() == value.upper()


@given(st.text(max_size=200))
def test_clean_text_leaves_no_control_or_bidi_characters(text: str) -> None:
    import unicodedata

    cleaned = clean_text(text)
    assert not any(unicodedata.category(ch).startswith("C") for ch in cleaned)
    assert cleaned == cleaned.strip()
    assert "  " not in cleaned


def test_bidi_override_and_zero_width_are_dropped() -> None:
    assert clean_text("pay\u202egnp.exe\u200b now\n\n") == "paygnp.exe now"


def test_note_length_is_bounded() -> None:
    with pytest.raises(ValueError, match="500"):
        OpenForm(action="unlock", ticket="INC-1", reason_code="x", note="n" * 501)


def test_request_ids_are_normalised_or_refused() -> None:
    assert parse_request_id(" tk-0000000a ") == "TK-0000000A"
    for bad in ("TK-0000000I", "TK-000", "XX-00000000", "TK-0000000A; DROP"):
        with pytest.raises(BadInput):
            parse_request_id(bad)


def test_transition_table_has_no_exit_from_final_states() -> None:
    for source, _ in TRANSITIONS:
        assert not source.is_final
    assert may_move(RequestState.PENDING, RequestState.READY)
    assert not may_move(RequestState.COMPLETED, RequestState.EXECUTING)
    assert not may_move(RequestState.PENDING, RequestState.EXECUTING)
