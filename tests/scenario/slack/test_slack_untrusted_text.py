"""Every typed string reaches Slack escaped and bounded: no @channel ping, no disguised link,
no mention spoofing; oversized input is refused with a specific message; unicode survives
(with bidi overrides and zero-width characters removed). A click's payload is never trusted:
what a card shows and what a decision rests on come from the stored request."""

from __future__ import annotations

import asyncio
import json

from slack_standin import APPROVALS
from slack_world import SlackWorld

from app.domain.forms import NOTE_MAX

HOSTILE = "<!channel> call <https://evil.example|bank.com> or <@U0CAROL> & <!here> now"


def all_cards(world: SlackWorld) -> str:
    return json.dumps(
        [c.params for c in world.slack.calls if c.method in ("chat.postMessage", "chat.update")],
        ensure_ascii=False,
    )


async def test_an_injected_channel_ping_reaches_the_approval_channel_escaped(
    world: SlackWorld,
) -> None:
    request = await world.open_request(f"reset-mfa <@U0ALICE|alice> INC-1234 lost-device {HOSTILE}")
    assert request.note.startswith("<!channel>")  # stored as typed (cleaned), escaped on display
    card = world.card(request.id, "approvers")
    assert card is not None and card.channel == APPROVALS
    shown = json.dumps(card.blocks, ensure_ascii=False)
    assert (
        "&lt;!channel&gt; call &lt;https://evil.example|bank.com&gt; or &lt;@U0CAROL&gt; "
        "&amp; &lt;!here&gt;" in shown
    )
    sent = world.slack.everything_sent()
    for raw in ("<!channel>", "<!here>", "<https://evil.example|bank.com>", "<@U0CAROL>"):
        assert raw not in sent, raw
    note_block = next(b for b in card.blocks if "Note from the requester" in json.dumps(b))
    assert note_block["text"]["verbatim"] is True


async def test_a_hostile_deny_reason_is_escaped_in_the_thread_and_the_dm(world: SlackWorld) -> None:
    request = await world.open_request()
    card = world.card(request.id, "approvers")
    assert card is not None
    await world.click("U0CAROL", card, "deny")
    opened = await world.slack.until(lambda: world.slack.of("views.open"))
    view = opened[-1].answer["view"]
    payload = world.submission(
        "U0CAROL", view, {"reason": {"value": {"type": "plain_text_input", "value": HOSTILE}}}
    )
    response = await world.interact(payload)
    assert response.status == 200
    await world.settled(request.id, "denied")
    await world.slack.until(lambda: "Denied" in json.dumps(card.blocks))
    bob_dm = world.slack.dm_of("U0BOB") or ""
    await world.slack.until(lambda: any("denied" in m.text for m in world.slack.in_channel(bob_dm)))
    sent = world.slack.everything_sent()
    assert "<!channel>" not in sent and "<https://evil.example|bank.com>" not in sent
    assert "&lt;!channel&gt;" in all_cards(world)


async def test_an_oversized_note_is_refused_and_nothing_is_created(world: SlackWorld) -> None:
    note = "x" * (NOTE_MAX + 1)
    response, _ = await world.command("U0BOB", f"reset-mfa <@U0ALICE> INC-1234 lost-device {note}")
    assert response.status == 200
    assert "too long" in await response.text()
    await asyncio.sleep(0.2)
    assert await world.runtime.store.open_requests() == []
    assert world.slack.of("chat.postMessage") == []


async def test_an_oversized_command_is_refused(world: SlackWorld) -> None:
    response, _ = await world.command("U0BOB", "reset-mfa " + "y" * 3000)
    assert "too long" in await response.text()
    await asyncio.sleep(0.2)
    assert await world.runtime.store.open_requests() == []


async def test_the_longest_allowed_hostile_note_fits_slacks_limits(world: SlackWorld) -> None:
    """500 ampersands become 2500 characters of entities: still inside one 3000-char text."""
    note = "&" * NOTE_MAX
    request = await world.open_request(f"reset-mfa <@U0ALICE> INC-1234 lost-device {note}")
    await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    posted = world.slack.of("chat.postMessage")
    assert posted and all(c.ok for c in posted), [c.answer for c in posted if not c.ok]


async def test_unicode_is_kept_and_invisible_tricks_are_removed(world: SlackWorld) -> None:
    note = "Téléphone perdu 📱 — 携帯を紛失 \u202eevil\u202c zero\u200bwidth"
    request = await world.open_request(f"reset-mfa <@U0ALICE> INC-1234 lost-device {note}")
    card = world.card(request.id, "approvers")
    assert card is not None
    shown = json.dumps(card.blocks, ensure_ascii=False)
    assert "Téléphone perdu 📱 — 携帯を紛失" in shown
    assert "\u202e" not in shown and "\u200b" not in shown
    assert "zerowidth" in shown


async def test_a_forged_card_in_the_click_payload_changes_nothing(world: SlackWorld) -> None:
    """The click carries someone's edited card claiming another target and tier: ignored."""
    request = await world.open_request()
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    await world.click("U0ALICE", owner, "confirm")
    await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
    card = world.card(request.id, "approvers")
    assert card is not None
    payload = world.click_payload("U0CAROL", card, "approve")
    forged_blocks = json.loads(
        json.dumps(card.blocks)
        .replace("Alice Adams", "Grace Green")
        .replace("Standard", "Low risk")
    )
    payload["message"]["blocks"] = forged_blocks
    payload["actions"][0]["text"] = {"type": "plain_text", "text": "Approve grace"}
    await world.interact(payload)
    done = await world.settled(request.id, "completed")
    assert done.target_id == "alice"
    assert [c.target_id for c in world.connector.changes] == ["alice"]
    await world.slack.until(lambda: "Completed" in json.dumps(card.blocks))
    assert "Grace Green" not in json.dumps(card.blocks)


async def test_a_button_value_that_is_not_twokeys_is_refused(world: SlackWorld) -> None:
    request = await world.open_request()
    card = world.card(request.id, "approvers")
    assert card is not None
    for value in (
        "approve:TK-NOTANID",
        f"approve:{request.id}:grace",
        f"confirm:{request.id}",
        "x" * 500,
    ):
        payload = world.click_payload("U0CAROL", card, "approve", value=value)
        await world.interact(payload)
    answers = await world.slack.until(
        lambda: (
            len(world.slack.ephemerals_to("U0CAROL")) >= 4 and world.slack.ephemerals_to("U0CAROL")
        )
    )
    assert all(
        "not one of twokey's" in json.dumps(a) or "not a request id" in json.dumps(a)
        for a in answers
    )
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.approvals == () and stored.owner_confirmed_at is None


async def test_slacks_escaped_command_text_is_shown_as_typed_not_escaped_twice(
    world: SlackWorld,
) -> None:
    """Slack sends a typed ``&``, ``<``, ``>`` in a command as ``&amp;``, ``&lt;``, ``&gt;``:
    they are decoded once, stored as typed, and escaped once on every card."""
    typed = "R&amp;D laptop &lt;!channel&gt; &lt;https://evil.example|bank.com&gt; &amp;lt;"
    request = await world.open_request(f"reset-mfa <@U0ALICE|alice> INC-1234 lost-device {typed}")
    assert request.note == "R&D laptop <!channel> <https://evil.example|bank.com> &lt;"
    card = world.card(request.id, "approvers")
    assert card is not None
    assert (
        "R&amp;D laptop &lt;!channel&gt; &lt;https://evil.example|bank.com&gt; &amp;lt;"
        in json.dumps(card.blocks, ensure_ascii=False)
    )
    sent = world.slack.everything_sent()
    assert "&amp;amp;" not in sent
    for raw in ("<!channel>", "<https://evil.example|bank.com>"):
        assert raw not in sent, raw


async def test_a_response_url_off_slack_is_never_followed(world: SlackWorld) -> None:
    """Whatever a payload names as its response_url, twokey POSTs only to Slack's hooks host
    (or SLACK_API_URL's origin): an answer is never sent to another host (SSRF, or a way to
    read replies for someone holding only the signing secret)."""
    from aiohttp import web

    posted: list[str] = []

    async def collect(request: web.Request) -> web.Response:
        posted.append(await request.text())
        return web.Response(text="ok")

    elsewhere = web.Application()
    elsewhere.router.add_post("/{path:.*}", collect)
    runner = web.AppRunner(elsewhere)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        form = world.command_form("U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device")
        form["response_url"] = f"http://127.0.0.1:{port}/latest/meta-data"
        assert (await world.signed(form)).status == 200
        receipt = await world.ephemeral_to("U0BOB")
        assert "opened" in receipt
        request = await world.open_request()  # and a click with such a url
        card = world.card(request.id, "approvers")
        assert card is not None
        payload = world.click_payload("U0GRACE", card, "approve")
        payload["response_url"] = f"http://user@127.0.0.1:{port}/x"
        world.slack.fail("chat.postEphemeral", "channel_not_found")
        await world.interact(payload)
        await world.slack.until(lambda: world.slack.dm_of("U0GRACE"))
        await asyncio.sleep(0.2)
        assert posted == []
    finally:
        await runner.cleanup()


def test_which_response_urls_are_slacks() -> None:
    from app.channels.slack.guard import is_slack_hook

    api = "https://slack.com/api/"
    for url in (
        "https://hooks.slack.com/commands/T0TWOKEY/1234/abcd",
        "https://hooks.slack-gov.com/actions/T0TWOKEY/1234/abcd",
        "https://slack.com/api/anything",
    ):
        assert is_slack_hook(url, api), url
    for url in (
        "http://hooks.slack.com/commands/T0TWOKEY/1234/abcd",
        "https://hooks.slack.com.evil.example/commands/x",
        "https://hooks.slack.com@evil.example/x",
        "https://user@hooks.slack.com/x",
        "https://hooks.slack.com:8443/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1/x",
        "file:///etc/passwd",
        "",
        None,
    ):
        assert not is_slack_hook(url, api), url
