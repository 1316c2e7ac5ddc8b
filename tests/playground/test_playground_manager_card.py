"""The manager's card in the playground: picked as the approver pane's person, Dave (Alice's
manager of record) sees Teams' card with Yes / No; his press moves the request on, and anyone
else's press of the same button is refused and changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.helpers import policy_text
from tests.playground.runtime import serve_playground

STEP_UP = "    step_up: {owner: [manager]}\n"
MANAGER_POLICY = (
    policy_text(velocity="")
    .replace("  standard:\n    label: Standard\n", "  standard:\n    label: Standard\n" + STEP_UP)
    .replace(
        "  strictest:\n    label: Flagged target\n",
        "  strictest:\n    label: Flagged target\n" + STEP_UP,
    )
)


@pytest.fixture
async def api(redis_url: str, namespace: str) -> AsyncIterator[Any]:
    async with (
        serve_playground(redis_url, namespace, sweeper=False, policy=MANAGER_POLICY) as (
            server,
            _,
        ),
        aiohttp.ClientSession() as session,
    ):
        base = str(server.make_url(""))

        async def call(method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
            async with session.request(method, base + path, json=body) as response:
                return response.status, json.loads(await response.text())

        yield call


def verbs(card: dict[str, Any] | None) -> list[str]:
    return [str(a.get("verb", a["type"])) for a in (card or {}).get("actions", [])]


async def test_the_manager_answers_on_the_card_and_no_one_else_can(api: Any) -> None:
    status, opened = await api(
        "POST",
        "/playground/api/command",
        {"as": "bob", "text": "reset-mfa @alice INC-1234 lost-device"},
    )
    assert status == 200, opened
    rid = opened["request"]
    status, state = await api("GET", f"/playground/api/state?request={rid}&approver=dave")
    card = state["cards"]["approver"]
    assert "Did you confirm with Alice Adams by phone or in person" in json.dumps(card)
    assert verbs(card) == ["attest_yes", "attest_no"] and "approver" not in state["notes"]
    status, state = await api("GET", f"/playground/api/state?request={rid}&approver=carol")
    assert verbs(state["cards"]["approver"]) != ["attest_yes", "attest_no"]  # her approval card

    status, refused = await api(
        "POST", "/playground/api/button", {"as": "erin", "button": f"attest_yes:{rid}"}
    )
    assert status == 403 and "Only the owner's manager" in refused["error"]
    status, state = await api("GET", f"/playground/api/state?request={rid}&approver=dave")
    assert verbs(state["cards"]["approver"]) == ["attest_yes", "attest_no"]

    await api("POST", "/playground/api/button", {"as": "alice", "button": f"confirm:{rid}"})
    await api("POST", "/playground/api/button", {"as": "carol", "button": f"approve:{rid}"})
    status, said = await api(
        "POST", "/playground/api/button", {"as": "dave", "button": f"attest_yes:{rid}"}
    )
    assert status == 200 and said["changed"], said
    status, state = await api("GET", f"/playground/api/state?request={rid}&approver=dave")
    assert state["request"]["state"] == "completed"
    card = state["cards"]["approver"]
    assert "You confirmed it with them" in json.dumps(card) and verbs(card) == []
