"""The command words agents type, the same in Slack, Teams and the playground.

```
help
<action> <target> <ticket> <reason-code> [note ...]
status <request-id>
list
cancel <request-id>
breakglass <action> <target> <ticket> <justification ...>
```
The target token is platform-specific (a Slack mention, a Teams mention, a playground id) or
``nhi:<name>``; each channel resolves it. Parsing never touches the service: bad text raises
BadInput with the usage line and nothing is created.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from app.domain.errors import BadInput
from app.domain.forms import NOTE_MAX, parse_request_id
from app.domain.models import Action

USAGE = (
    "Usage: `<action> <target> <ticket> <reason-code> [note]`, e.g. "
    "`reset-mfa @alice INC-1234 lost-device`. Actions: "
    + ", ".join(a.value for a in Action)
    + ". Target: a person (mention) or nhi:<name>. Also: `status <request-id>`, `list`, "
    "`cancel <request-id>`, `breakglass <action> <target> <ticket> <justification>`, `help`."
)
MAX_COMMAND = 2000


class Command(BaseModel):
    model_config = ConfigDict(frozen=True)

    verb: Literal["help", "open", "status", "list", "cancel", "breakglass", "form"]
    action: str = ""
    target: str = ""
    ticket: str = ""
    reason_code: str = ""
    text: str = ""
    """The note (open) or the justification (breakglass)."""
    request_id: str = ""


def parse_command(text: str) -> Command:
    """Split the typed words; values are validated by the service (policy-specific)."""
    if len(text) > MAX_COMMAND:
        raise BadInput(f"That command is too long (over {MAX_COMMAND} characters).")
    words = text.split()
    if not words:
        return Command(verb="form")
    head = words[0].lower()
    if head == "help":
        return Command(verb="help")
    if head == "list":
        _no_more(words, 1, "list")
        return Command(verb="list")
    if head in ("status", "cancel"):
        if len(words) != 2:
            raise BadInput(f"Usage: `{head} <request-id>`.")
        return Command(verb=head, request_id=parse_request_id(words[1]))
    if head == "breakglass":
        if len(words) < 5:
            raise BadInput(
                "Usage: `breakglass <action> <target> <ticket> <justification ...>`: say what "
                "the emergency is."
            )
        return Command(
            verb="breakglass",
            action=_action(words[1]),
            target=words[2],
            ticket=words[3],
            text=" ".join(words[4:]),
        )
    if len(words) < 4:
        raise BadInput(f"Not enough words. {USAGE}")
    note = " ".join(words[4:])
    if len(note) > NOTE_MAX:
        raise BadInput(f"The note is too long (at most {NOTE_MAX} characters).")
    return Command(
        verb="open",
        action=_action(head),
        target=words[1],
        ticket=words[2],
        reason_code=words[3],
        text=note,
    )


def _action(word: str) -> str:
    try:
        return Action(word.lower()).value
    except ValueError:
        raise BadInput(f"{word[:40]!r} is not an action. {USAGE}") from None


def _no_more(words: list[str], count: int, verb: str) -> None:
    if len(words) > count:
        raise BadInput(f"`{verb}` takes no arguments.")
