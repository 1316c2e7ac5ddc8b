"""Validated input of the use cases: every user-typed string is bounded and cleaned here.

Channels parse their platform's payloads into these models; bad input raises BadInput with a
specific message and changes nothing.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from app.domain.errors import BadInput
from app.domain.models import REQUEST_ID_PATTERN, Action

NOTE_MAX = 500
REASON_MAX = 300
JUSTIFICATION_MAX = 1000


def clean_text(value: str) -> str:
    """Drop control and format characters (bidi overrides, zero-width), fold whitespace."""
    kept = "".join(
        " " if ch in "\t\r\n" else ch
        for ch in unicodedata.normalize("NFC", value)
        if ch in "\t\r\n" or unicodedata.category(ch)[0] != "C"
    )
    return re.sub(r"\s+", " ", kept).strip()


CleanText = Annotated[str, AfterValidator(clean_text)]


def _request_id(value: str) -> str:
    value = value.strip().upper()
    if not REQUEST_ID_PATTERN.fullmatch(value):
        raise ValueError(f"{value[:40]!r} is not a request id (they look like TK-4K7M2P9Q)")
    return value


RequestId = Annotated[str, AfterValidator(_request_id)]


class OpenForm(BaseModel):
    """What an agent fills in to open a request (from a command line or a form)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action
    ticket: Annotated[str, Field(min_length=1, max_length=64)]
    reason_code: Annotated[str, Field(min_length=1, max_length=40)]
    note: Annotated[CleanText, Field(max_length=NOTE_MAX)] = ""


class BreakglassForm(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action
    ticket: Annotated[str, Field(min_length=1, max_length=64)]
    justification: Annotated[CleanText, Field(min_length=1, max_length=JUSTIFICATION_MAX)]


class DenyForm(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Annotated[CleanText, Field(min_length=1, max_length=REASON_MAX)]


def human_error(exc: ValidationError) -> BadInput:
    """Turn pydantic's errors into one plain sentence per problem."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "input"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "enum":
            message = "must be one of " + ", ".join(a.value for a in Action)
        lines.append(f"{field}: {message}")
    return BadInput("; ".join(lines))


def parse_request_id(value: str) -> str:
    try:
        return _request_id(value)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
