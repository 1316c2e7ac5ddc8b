"""The whole flow on Slack: /twokey -> owner DM + approval card -> owner click -> approver click
-> the sandbox connector executes once -> every card tells the final truth."""

from __future__ import annotations

import asyncio
import json

from slack_standin import APPROVALS, HELPDESK
from slack_world import SlackWorld

from app.domain.models import RequestState


async def test_a_reset_from_slash_command_to_completed_cards(world: SlackWorld) -> None:
    slack = world.slack
    response, form = await world.command("U0BOB", "reset-mfa <@U0ALICE|alice> INC-1234 lost-device")
    assert response.status == 200
    receipt = await world.receipt(form)
    assert "opened" in receipt and "TK-" in receipt
    assert json.loads(receipt)["response_type"] == "ephemeral"

    rid = receipt.split("Request ", 1)[1].split(" ", 1)[0]
    approval = await slack.until(lambda: world.card(rid, "approvers"))
    owner = await slack.until(lambda: world.card(rid, "owner", "U0ALICE"))
    requester = await slack.until(lambda: world.card(rid, "requester", "U0BOB"))
    assert approval.channel == APPROVALS
    assert owner.channel == slack.dm_of("U0ALICE")
    assert requester.channel == slack.dm_of("U0BOB")
    card = json.dumps(approval.blocks)
    for fact in (
        "Alice Adams",
        "Bob Brown",
        "INC-1234",
        "lost-device",
        "0 of 1",
        "Owner confirmation",
    ):
        assert fact in card
    assert "Did you ask for this?" in json.dumps(owner.blocks)

    # the owner confirms from her DM
    assert (await world.click("U0ALICE", owner, "confirm")).status == 200
    assert "confirmation is recorded" in await world.ephemeral_to("U0ALICE")
    confirmed = await world.settled(rid, "pending")
    assert confirmed.owner_confirmed_at is not None
    await slack.until(lambda: "Alice Adams at" in json.dumps(approval.blocks))
    assert world.connector.changes == []

    # an approver approves from the channel: both keys turned, the bot acts once
    approval_now = world.card(rid, "approvers")
    assert approval_now is not None
    assert (await world.click("U0CAROL", approval_now, "approve")).status == 200
    done = await world.settled(rid, "completed")
    await world.shown_on_card(approval_now, "Carol Chen")
    assert world.slack.ephemerals_to("U0CAROL") == [], "the card she pressed answers her"
    assert [c.request_id for c in world.connector.changes] == [rid]

    # every card now shows the outcome and offers no gate buttons any more
    def final(message_blocks: list[dict[str, object]]) -> bool:
        return "Completed" in json.dumps(message_blocks)

    await slack.until(lambda: all(final(m.blocks) for m in (approval, owner, requester)))
    for message in (approval, requester):
        assert '"type": "actions"' not in json.dumps(message.blocks)
    assert "twokey.approve" not in json.dumps(approval.blocks)
    # the owner may still say "this wasn't me" during the dispute window
    assert "twokey.dispute" in json.dumps(owner.blocks)
    assert "twokey.confirm" not in json.dumps(owner.blocks)

    # the card keeps who decided; its thread tells the channel how the request ended, once
    card = json.dumps(approval.blocks)
    assert "Alice Adams at" in card and "Carol Chen" in card
    thread = await slack.until(lambda: slack.replies(APPROVALS, approval.ts))
    await asyncio.sleep(0.2)
    assert len(slack.replies(APPROVALS, approval.ts)) == 1
    assert "Completed" in json.dumps(thread[0].blocks)

    # the owner and the requester were told the outcome by DM
    alice_dm = slack.in_channel(slack.dm_of("U0ALICE") or "")
    bob_dm = slack.in_channel(slack.dm_of("U0BOB") or "")
    await slack.until(
        lambda: any("Done:" in m.text for m in slack.in_channel(slack.dm_of("U0ALICE") or ""))
    )
    assert alice_dm and bob_dm
    await slack.until(
        lambda: any("completed" in m.text for m in slack.in_channel(slack.dm_of("U0BOB") or ""))
    )
    assert done.state is RequestState.COMPLETED
    assert all(c.ok for c in slack.of("chat.update")), [c.answer for c in slack.of("chat.update")]
    # the command was typed in the help desk channel; the card never went there
    assert slack.in_channel(HELPDESK) == []
