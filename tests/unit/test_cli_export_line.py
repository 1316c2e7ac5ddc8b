"""`twokey audit export` writes one record per line, whatever text the record carries."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from app.cli import export_line


def test_unicode_line_separators_are_escaped_and_names_stay_readable() -> None:
    record = {"note": "called from\u2028the lobby\u2029phone", "actor": "Zoë"}
    line = export_line(record)
    assert line.splitlines() == [line]
    assert "Zoë" in line
    assert json.loads(line) == record


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.text(alphabet=st.characters(codec=None, exclude_categories=())),
        max_size=4,
    )
)
def test_any_record_is_one_utf8_line_that_reads_back_the_same(record: dict[str, str]) -> None:
    """Any text, lone surrogates included (an entry an insider wrote as "\\ud800"): export
    printed it to a UTF-8 stdout and died there, writing nothing after it."""
    line = export_line(record)
    assert len(line.splitlines()) == 1
    line.encode("utf-8")
    assert json.loads(line) == record


def test_a_lone_surrogate_stays_escaped() -> None:
    assert export_line({"actor": "\ud800x"}) == '{"actor": "\\ud800x"}'
