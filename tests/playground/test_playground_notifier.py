"""The playground's notifier: each pane's messages, and the owner's secret held once, in memory."""

from __future__ import annotations

from pydantic import SecretStr

from app.domain.models import Action, Plan, PrincipalKind, Request
from app.playground.notifier import PlaygroundNotifier

SECRET = "s3cret-Value-42!"


def request(request_id: str = "TK-4K7M2P9Q") -> Request:
    return Request(
        id=request_id,
        ticket="INC-1234",
        action=Action.RESET_PASSWORD,
        target_id="alice",
        target_name="Alice Adams",
        target_kind=PrincipalKind.HUMAN,
        owner_id="alice",
        requester_id="bob",
        reason_code="forgotten-password",
        plan=Plan(rule="default", tier="standard"),
        created_at=1,
        expires_at=2,
    )


async def test_each_pane_gets_its_own_messages() -> None:
    notifier = PlaygroundNotifier()
    opened = request()

    await notifier.post_request(opened)
    await notifier.notify_requester(opened, "to the agent")
    await notifier.notify_owner(opened, "to the owner")
    await notifier.notify_approvers(opened, "to the approvers")
    await notifier.alert_security(None, "to security, about no request")
    await notifier.notify_owner(request("TK-99999999"), "another request")

    said = [(m.pane, m.text) for m in notifier.messages(opened.id)]
    assert ("agent", "to the agent") in said and ("owner", "to the owner") in said
    assert ("approver", "to the approvers") in said
    assert ("security", "to security, about no request") in said
    assert all(text != "another request" for _, text in said)
    assert notifier.requests == [opened.id]


async def test_the_secret_is_for_the_owner_once_and_never_shown_in_a_repr() -> None:
    notifier = PlaygroundNotifier()
    done = request()

    assert await notifier.deliver_secret(done, SecretStr(SECRET), "temporary password") is True

    assert SECRET not in repr(notifier.__dict__)
    assert all(SECRET not in m.text for m in notifier.messages())
    assert notifier.secret_waiting(done.id, "carol") is None
    assert notifier.reveal_secret(done.id, "carol") is None
    assert notifier.secret_waiting(done.id, "alice") == "temporary password"
    revealed = notifier.reveal_secret(done.id, "alice")
    assert revealed is not None and revealed.secret.get_secret_value() == SECRET
    assert notifier.reveal_secret(done.id, "alice") is None
    assert notifier.secret_waiting(done.id, "alice") is None


async def test_an_unrevealed_secret_is_dropped_after_the_hold_time() -> None:
    notifier = PlaygroundNotifier(hold_s=0)

    await notifier.deliver_secret(request(), SecretStr(SECRET), "temporary password")

    assert notifier.secret_waiting("TK-4K7M2P9Q", "alice") is None
    assert notifier.reveal_secret("TK-4K7M2P9Q", "alice") is None
