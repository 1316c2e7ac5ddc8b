"""Step-up in the playground: the simulated recovery mailbox shows the code in the owner's pane,
the owner types `verify`, and the cards say where the step-up stands."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.helpers import policy_text
from tests.playground.runtime import serve_playground

STEP_UP_POLICY = (
    policy_text(velocity="")
    .replace(
        "  standard:\n    label: Standard\n",
        "  standard:\n    label: Standard\n    step_up: {owner: [email_code]}\n",
    )
    .replace(
        "  strictest:\n    label: Flagged target\n",
        "  strictest:\n    label: Flagged target\n    step_up: {owner: [email_code]}\n",
    )
)


@pytest.fixture
async def api(redis_url: str, namespace: str) -> AsyncIterator[Any]:
    async with (
        serve_playground(redis_url, namespace, sweeper=False, policy=STEP_UP_POLICY) as (
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


async def test_the_simulated_mailbox_lets_a_newcomer_see_the_step_up(api: Any) -> None:
    status, opened = await api(
        "POST",
        "/playground/api/command",
        {"as": "bob", "text": "reset-mfa @alice INC-1234 lost-device"},
    )
    assert status == 200, opened
    rid = opened["request"]
    status, state = await api("GET", f"/playground/api/state?request={rid}&owner=alice")
    owner_said = " ".join(state["messages"]["owner"])
    assert "Simulated recovery mailbox" in owner_said and f"verify {rid}" in owner_said
    assert "Owner verification: waiting for" in json.dumps(state["cards"]["approver"])
    found = re.search(rf"verify {rid} (\d{{8}})", owner_said)
    assert found is not None

    await api("POST", "/playground/api/button", {"as": "alice", "button": f"confirm:{rid}"})
    status, said = await api(
        "POST", "/playground/api/command", {"as": "alice", "text": f"verify {rid} {found[1]}"}
    )
    assert status == 200 and "verified" in json.dumps(said), said
    status, state = await api("GET", f"/playground/api/state?request={rid}&owner=alice")
    assert "Owner verified on a second channel" in json.dumps(state["cards"]["approver"])
