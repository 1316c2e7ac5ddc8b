"""The command words agents type, the same in Slack, Teams and the playground.

```
help
<action> <target> <ticket> <reason-code> [note ...]
status <request-id>
list
cancel <request-id>
breakglass <action> <target> <ticket> <justification ...>
verify <request-id> [code]
attest <request-id> yes|no
```
The target token is platform-specific (a Slack mention, a Teams mention, a playground id) or
``nhi:<name>``; each channel resolves it. Parsing never touches the service: bad text raises
BadInput with the usage line and nothing is created. People copy commands from the docs with
their ``/twokey`` in front, so a leading ``/twokey`` is dropped; a misspelt first word gets the
closest command or action as a "did you mean".
"""

from __future__ import annotations

import difflib
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
    "`cancel <request-id>`, `breakglass <action> <target> <ticket> <justification>`, "
    "`verify <request-id> [code]`, `attest <request-id> yes|no`, `help`."
)
PLAIN_USAGE = USAGE.replace("`", "")
"""USAGE for a page that shows text as typed (the playground): no Markdown code marks."""
HELP_TEXT = "\n".join(
    [
        "Commands (the words after /twokey in Slack, or to the bot in Teams):",
        "  <action> <person> <ticket> <reason-code> [note]: ask for a change, e.g. "
        "reset-mfa @alice INC-1234 lost-device",
        "  status <request-id>: where a request stands",
        "  list: the requests you opened, may approve or must confirm",
        "  cancel <request-id>: withdraw a request you opened",
        "  breakglass <action> <person> <ticket> <what the emergency is>: the emergency path",
        "  verify <request-id> <code>: the code we emailed you, when a request asks you to "
        "verify (without a code: send a new one)",
        "  attest <request-id> yes|no: as the owner's manager, whether you confirmed it with "
        "them by phone or in person",
        "  help: this list",
        "Actions: " + ", ".join(a.value for a in Action) + ".",
        "A person is @alice or alice; a non-human identity is nhi:<name>.",
    ]
)
"""The help as plain lines, for a page that shows text as typed (the playground)."""
MAX_COMMAND = 2000
SLASH = "/twokey"
"""A leading ``/twokey``, as in the docs and in Slack, is not part of the command."""
VERBS = ("help", "list", "status", "cancel", "breakglass", "verify", "attest")


class Command(BaseModel):
    model_config = ConfigDict(frozen=True)

    verb: Literal[
        "help", "open", "status", "list", "cancel", "breakglass", "verify", "attest", "form"
    ]
    action: str = ""
    target: str = ""
    ticket: str = ""
    reason_code: str = ""
    text: str = ""
    """The note (open), the justification (breakglass) or the one-time code (verify)."""
    request_id: str = ""


def parse_command(text: str) -> Command:
    """Split the typed words; values are validated by the service (policy-specific)."""
    if len(text) > MAX_COMMAND:
        raise BadInput(f"That command is too long (over {MAX_COMMAND} characters).")
    words = text.split()
    if words and words[0].lower() == SLASH:
        words = words[1:]
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
    if head == "verify":
        if len(words) not in (2, 3):
            raise BadInput("Usage: `verify <request-id> <code>` (without a code: a new one).")
        code = words[2] if len(words) == 3 else ""
        return Command(verb="verify", request_id=parse_request_id(words[1]), text=code[:40])
    if head == "attest":
        if len(words) != 3 or words[2].lower() not in ("yes", "no"):
            raise BadInput("Usage: `attest <request-id> yes` or `attest <request-id> no`.")
        return Command(verb="attest", request_id=parse_request_id(words[1]), text=words[2].lower())
    if head == "breakglass":
        if len(words) < 5:
            raise BadInput(
                "Usage: `breakglass <action> <target> <ticket> <justification ...>`: say what "
                "the emergency is."
            )
        return Command(
            verb="breakglass",
            action=_action(words[1], first=False),
            target=words[2],
            ticket=words[3],
            text=" ".join(words[4:]),
        )
    action = _action(head)
    if len(words) < 4:
        raise BadInput(f"Not enough words. {USAGE}")
    note = " ".join(words[4:])
    if len(note) > NOTE_MAX:
        raise BadInput(f"The note is too long (at most {NOTE_MAX} characters).")
    return Command(
        verb="open",
        action=action,
        target=words[1],
        ticket=words[2],
        reason_code=words[3],
        text=note,
    )


def _action(word: str, *, first: bool = True) -> str:
    """The action word; ``first``: it opens the command, so it may be a misspelt verb too."""
    try:
        return Action(word.lower()).value
    except ValueError:
        known = [*(VERBS if first else ()), *(a.value for a in Action)]
        what = "an action or a command" if first else "an action"
        hint = did_you_mean(word, known)
        raise BadInput(f"{word[:40]!r} is not {what}.{hint} {USAGE}") from None


def did_you_mean(word: str, known: list[str]) -> str:
    """`` Did you mean reset-mfa?`` for a near miss, else nothing: a typo costs one retry."""
    close = difflib.get_close_matches(word.lower()[:60], known, n=1, cutoff=0.6)
    return f" Did you mean {close[0]}?" if close else ""


def _no_more(words: list[str], count: int, verb: str) -> None:
    if len(words) > count:
        raise BadInput(f"`{verb}` takes no arguments.")
