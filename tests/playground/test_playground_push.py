"""The playground's simulated phone: on its example policy a platform engineer's account (Ivan)
is high impact, so the owner and then the approver each approve a push on the phone shown in
their pane, answered through the same PushVerifier port as Okta Verify and Duo Push."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from app.bootstrap import Runtime, load_configured_policy
from app.settings import Settings
from app.store.keys import shard_of_request
from tests.playground.runtime import playground_settings, serve_playground
from tests.playground.test_playground_api import Client

HIGH_IMPACT = "reset-password @ivan INC-1234 forgotten-password"


@pytest.fixture
async def playground(redis_url: str, namespace: str) -> AsyncIterator[tuple[Client, Runtime]]:
    async with (
        serve_playground(redis_url, namespace, sweeper=False) as (server, runtime),
        aiohttp.ClientSession() as session,
    ):
        yield Client(server, session), runtime


async def look(client: Client, rid: str, owner: str = "ivan", approver: str = "carol") -> Any:
    status, state = await client.get(
        f"/playground/api/state?request={rid}&owner={owner}&approver={approver}"
    )
    assert status == 200, state
    return state


async def answer(client: Client, who: str, push: str, approve: bool) -> tuple[int, Any]:
    return await client.post("/playground/api/push", {"as": who, "push": push, "approve": approve})


async def audit(runtime: Runtime, rid: str) -> list[dict[str, Any]]:
    entries = await runtime.redis.xrange(runtime.store.keys.audit(shard_of_request(rid)))
    events = [json.loads(fields.get(b"e", fields.get("e"))) for _, fields in entries]
    return [e for e in events if e["rid"] == rid]


async def opened(client: Client) -> str:
    status, body = await client.command("bob", HIGH_IMPACT)
    assert status == 200, body
    return str(body["request"])


async def test_owner_and_approver_each_approve_a_push_on_the_simulated_phone(
    playground: tuple[Client, Runtime],
) -> None:
    client, runtime = playground
    rid = await opened(client)
    state = await look(client, rid)
    assert state["request"]["tier"] == "High impact (step-up demo)"
    [push] = state["phone"]["owner"]
    assert push["app"] == "Okta Verify" and push["request"] == rid
    assert state["phone"]["approver"] == []
    assert any("approve the push" in m.lower() for m in state["messages"]["owner"])

    assert (await client.press("ivan", f"confirm:{rid}"))[0] == 200
    status, said = await answer(client, "ivan", push["id"], True)
    assert status == 200 and said["kind"] == "done", said
    await runtime.service.settle_pushes()
    state = await look(client, rid)
    assert state["phone"]["owner"] == []
    assert "Owner verified on a second channel" in json.dumps(state["cards"]["approver"])

    status, approved = await client.press("carol", f"approve:{rid}")
    assert status == 200, approved
    state = await look(client, rid)
    assert state["request"]["state"] == "pending"  # the approval waits for carol's push
    [carols] = state["phone"]["approver"]
    assert (await answer(client, "carol", carols["id"], True))[0] == 200
    await runtime.service.settle_pushes()

    state = await look(client, rid)
    assert state["request"]["state"] == "completed"
    events = await audit(runtime, rid)
    passed = next(e for e in events if e["kind"] == "step_up_passed")
    verified = next(e for e in events if e["kind"] == "approver_verified")
    assert (passed["actor"], passed["via"]) == ("ivan", "okta_push")
    assert (verified["actor"], verified["via"]) == ("carol", "okta_push")


async def test_a_denied_push_keeps_it_blocked_and_tells_security(
    playground: tuple[Client, Runtime],
) -> None:
    client, runtime = playground
    rid = await opened(client)
    [push] = (await look(client, rid))["phone"]["owner"]
    assert (await answer(client, "ivan", push["id"], False))[0] == 200
    await runtime.service.settle_pushes()
    state = await look(client, rid)
    assert state["request"]["state"] == "pending" and state["phone"]["owner"] == []
    assert state["messages"]["security"], "a denied push is a fraud signal"
    failed = [e for e in await audit(runtime, rid) if e["kind"] == "step_up_failed"]
    assert [e["reason"] for e in failed] == ["okta_push:rejected"]


async def test_only_the_person_the_push_went_to_can_answer_it_once(
    playground: tuple[Client, Runtime],
) -> None:
    client, runtime = playground
    rid = await opened(client)
    [push] = (await look(client, rid))["phone"]["owner"]
    # another owner picked in the pane sees no phone; another person cannot answer it
    assert "owner" not in (await look(client, rid, owner="alice"))["phone"]
    status, refused = await answer(client, "bob", push["id"], True)
    assert status == 404 and "not waiting on your phone" in refused["error"]
    assert (await look(client, rid))["phone"]["owner"] == [push]

    assert (await answer(client, "ivan", push["id"], True))[0] == 200
    await runtime.service.settle_pushes()
    assert (await answer(client, "ivan", push["id"], False))[0] == 404  # answered already
    request = await runtime.store.get(rid)
    assert request is not None and request.step_up_at is not None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"as": "ivan", "push": "<script>", "approve": True}, "push: String should match"),
        ({"as": "ivan", "push": "a" * 22}, "approve: Field required"),
        ({"as": "ivan", "push": "a" * 22, "approve": "maybe"}, "approve: Input should be"),
    ],
)
async def test_a_bad_answer_is_refused_plainly(
    playground: tuple[Client, Runtime], body: dict[str, Any], words: str
) -> None:
    client, _ = playground
    status, refused = await client.post("/playground/api/push", body)
    assert status == 400 and words in refused["error"], refused
    assert "<script>" not in refused["error"]


def test_only_the_playground_gets_the_step_up_tier(redis_url: str) -> None:
    playground = playground_settings(redis_url, "tk-example")
    assert "high-impact" in load_configured_policy(playground).tiers
    chat = Settings(  # type: ignore[call-arg]
        _env_file=None, REDIS_URL=redis_url, SLACK_BOT_TOKEN="xoxb-1", TWOKEY_PLAYGROUND=False
    )
    assert "high-impact" not in load_configured_policy(chat).tiers
    elsewhere = playground_settings(redis_url, "tk-example", host="0.0.0.0")
    assert "high-impact" not in load_configured_policy(elsewhere).tiers


async def test_the_simulated_phone_is_never_wired_where_the_playground_does_not_run(
    redis_url: str, namespace: str
) -> None:
    async with serve_playground(redis_url, namespace, host="0.0.0.0", sweeper=False) as (
        _,
        runtime,
    ):
        step_up = runtime.service.step_up
        assert step_up is not None and dict(step_up.push) == {}
