"""A YAML syntax error in the words of someone editing a policy or directory file.

PyYAML says "expected <block end>, but found '<block mapping start>'"; an operator needs to
hear that a line is indented differently from its neighbours. The common mistakes get a
sentence that says what to do; PyYAML's own words follow in brackets for anything else.
"""

from __future__ import annotations

_BY_PROBLEM = (
    (
        "found character '\\t'",
        "a tab is used to indent this line; YAML takes spaces only: indent it with spaces",
    ),
    (
        "mapping values are not allowed here",
        "a 'name: value' where YAML did not expect one: this line is probably indented more "
        "than the line above it, or a value holding ': ' needs quotes around it",
    ),
    (
        "could not find expected ':'",
        "a line without 'name: value' where one was expected: add the ':' (or close a quote "
        "opened above)",
    ),
    (
        "found unexpected end of stream",
        "the file ends inside something opened earlier, usually a quote never closed",
    ),
    (
        "expected <block end>",
        "this line is indented differently from the lines it belongs with: align it with "
        "its neighbours (same number of spaces)",
    ),
)


def yaml_error_words(context: str | None, problem: str | None, started: int | None = None) -> str:
    """One sentence for a YAML syntax error; ``started``: the line where the enclosing block
    or quote began, when YAML names one."""
    raw = ": ".join(part for part in (context, problem) if part)
    where = f" (it began on line {started})" if started else ""
    for found, words in _BY_PROBLEM:
        if found in (problem or ""):
            return f"{words}{where} [YAML: {raw}]"
    if problem and not context:  # a sentence already (twokey's own, e.g. a repeated key)
        return f"{problem}{where}"
    return f"not valid YAML: {raw or 'the file cannot be read as YAML'}{where}"
