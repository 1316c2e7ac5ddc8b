"""The playground's JSON API through the real app: where it runs, what it accepts, who sees what.

The browser tests drive the page; these check the API's guards directly (they need no browser).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.bootstrap import Runtime, StartupError, build_runtime
from app.channels.commands import HELP_TEXT
from app.domain.models import RequestState
from app.playground.notifier import PlaygroundNotifier
from app.playground.web import is_loopback, mount
from app.settings import Settings
from tests.helpers import policy_text
from tests.playground.runtime import build_test_runtime, serve_playground

RESET_PASSWORD = "reset-password @alice INC-1234 forgotten-password"


class Client:
    """A browser-less client of the playground that keeps every answer it got."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.base = str(server.make_url(""))
        self.session = session
        self.seen: list[str] = []

    async def post(self, path: str, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with self.session.post(self.base + path, json=body, **kwargs) as response:
            text = await response.text()
            self.seen.append(text)
            return response.status, json.loads(text)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.base + path, **kwargs) as response:
            text = await response.text()
            self.seen.append(text)
            return response.status, json.loads(text)

    async def command(self, who: str, text: str) -> tuple[int, dict[str, Any]]:
        return await self.post("/playground/api/command", {"as": who, "text": text})

    async def press(self, who: str, button: str, reason: str = "") -> tuple[int, dict[str, Any]]:
        return await self.post(
            "/playground/api/button", {"as": who, "button": button, "reason": reason}
        )

    async def state(self, request_id: str, owner: str = "alice") -> dict[str, Any]:
        status, body = await self.get(f"/playground/api/state?request={request_id}&owner={owner}")
        assert status == 200, body
        return body


@pytest.fixture
async def playground(redis_url: str, namespace: str) -> AsyncIterator[tuple[Client, Runtime]]:
    async with (
        serve_playground(redis_url, namespace, sweeper=False) as (server, runtime),
        aiohttp.ClientSession() as session,
    ):
        yield Client(server, session), runtime


async def open_reset(client: Client) -> str:
    status, body = await client.command("bob", RESET_PASSWORD)
    assert status == 200, body
    return str(body["request"])


async def mounted_nothing(runtime: Runtime) -> None:
    """Mount the playground on ``runtime`` as the server would; it must stay off."""
    app = web.Application()
    try:
        await mount(app, runtime)
    finally:
        await runtime.close()
    assert not [r for r in app.router.resources() if "playground" in r.canonical]


# ---- where it runs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("twokey.example.com", False),
        ("", False),
    ],
)
def test_only_loopback_addresses_count(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_it_refuses_to_mount_off_loopback(
    redis_url: str, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        serve_playground(redis_url, namespace, host="0.0.0.0", sweeper=False) as (server, rt),
        aiohttp.ClientSession() as session,
    ):
        async with session.get(server.make_url("/playground")) as response:
            assert response.status == 404
        async with session.get(server.make_url("/healthz")) as response:
            assert response.status == 200
        assert not any(isinstance(n, PlaygroundNotifier) for n in rt.notifier.notifiers)
    logged = capsys.readouterr()
    assert "playground_not_mounted" in logged.out + logged.err


@pytest.mark.parametrize(
    "credentials",
    [
        {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"},  # Slack in socket mode
        {"SLACK_BOT_TOKEN": "xoxb-1"},
        {"SLACK_SIGNING_SECRET": "s3cret"},
        {"MICROSOFT_APP_PASSWORD": "p4ss"},
    ],
)
async def test_it_stays_off_while_any_chat_credential_is_set(
    redis_url: str, namespace: str, credentials: dict[str, str]
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        HOST="127.0.0.1",
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        **credentials,
    )
    runtime = build_test_runtime(settings)
    await mounted_nothing(runtime)
    assert not any(isinstance(n, PlaygroundNotifier) for n in runtime.notifier.notifiers)


CHAT_CREDENTIALS = [
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "MICROSOFT_APP_ID",
    "MICROSOFT_APP_PASSWORD",
]
OKTA_POLICY = policy_text() + (
    "connectors:\n"
    "  - type: okta\n"
    "    name: corp-okta\n"
    "    org_url: https://acme.okta.com\n"
    "    api_token_env: TWOKEY_TEST_UNSET_OKTA_TOKEN\n"
)


def operator_settings(redis_url: str, namespace: str, **extra: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        HOST="127.0.0.1",
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_AUDIT_KEY="a-test-audit-key-that-is-long-enough",
        TWOKEY_ACCEPT_EVICTION_RISK=True,
        **extra,
    )


@pytest.mark.parametrize("credential", CHAT_CREDENTIALS)
async def test_it_refuses_to_start_beside_a_chat_credential(
    redis_url: str, namespace: str, credential: str
) -> None:
    """Asked for beside production chat, it could act as anyone through the real channels."""
    settings = operator_settings(
        redis_url, namespace, TWOKEY_PLAYGROUND=True, **{credential: "x-secret-value"}
    )
    with pytest.raises(StartupError) as refused:
        await build_runtime(settings)
    message = str(refused.value)
    assert "TWOKEY_PLAYGROUND" in message and credential in message
    assert "x-secret-value" not in message
    runtime = build_test_runtime(settings)  # a runtime built elsewhere: the mount refuses too
    app = web.Application()
    try:
        with pytest.raises(StartupError, match="TWOKEY_PLAYGROUND"):
            await mount(app, runtime)
    finally:
        await runtime.close()
    assert not [r for r in app.router.resources() if "playground" in r.canonical]


async def test_it_refuses_to_start_beside_a_real_identity_provider(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """With real connectors it would change real accounts and show their secrets on loopback."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(OKTA_POLICY)
    settings = operator_settings(
        redis_url, namespace, TWOKEY_PLAYGROUND=True, TWOKEY_POLICY=str(policy)
    )
    with pytest.raises(StartupError, match=r"TWOKEY_PLAYGROUND=true.*okta connector 'corp-okta'"):
        await build_runtime(settings)
    # Left unset, it simply stays off beside the real connector.
    runtime = build_test_runtime(operator_settings(redis_url, namespace), policy=OKTA_POLICY)
    await mounted_nothing(runtime)
    assert not any(isinstance(n, PlaygroundNotifier) for n in runtime.notifier.notifiers)


REACHING_OUT = {
    "TWOKEY_PUBLIC_URL": "https://twokey.example.com",
    "TWOKEY_SMTP_HOST": "mail.example.com",
    "TWOKEY_SMS_WEBHOOK_URL": "https://sms.example.com/send",
    "TWOKEY_DUO_API_HOST": "api-1234.duosecurity.com",
    "TWOKEY_AUDIT_FORWARD_URL": "https://siem.example.com/collector",
}


@pytest.mark.parametrize("setting", sorted(REACHING_OUT))
async def test_it_refuses_to_start_beside_mail_sms_duo_or_a_siem(
    redis_url: str, namespace: str, setting: str
) -> None:
    """Anyone at the playground could make twokey mail, text or push real people as anyone."""
    settings = operator_settings(
        redis_url, namespace, TWOKEY_PLAYGROUND=True, **{setting: REACHING_OUT[setting]}
    )
    with pytest.raises(StartupError, match=rf"TWOKEY_PLAYGROUND=true.*{setting}"):
        await build_runtime(settings)
    quiet = build_test_runtime(
        operator_settings(redis_url, namespace, **{setting: REACHING_OUT[setting]})
    )
    await mounted_nothing(quiet)  # left unset it stays off


async def test_it_refuses_to_start_beside_a_real_ticket_system(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """It would let anyone cite and write notes on real tickets."""
    text = policy_text() + (
        "tickets:\n"
        "  system: jira\n"
        "  instance_url: https://acme.atlassian.net\n"
        "  email_env: TWOKEY_TEST_UNSET_JIRA_EMAIL\n"
        "  api_token_env: TWOKEY_TEST_UNSET_JIRA_TOKEN\n"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    settings = operator_settings(
        redis_url, namespace, TWOKEY_PLAYGROUND=True, TWOKEY_POLICY=str(policy)
    )
    with pytest.raises(StartupError, match=r"TWOKEY_PLAYGROUND=true.*ticket system Jira"):
        await build_runtime(settings)
    quiet = build_test_runtime(operator_settings(redis_url, namespace), policy=text)
    await mounted_nothing(quiet)


async def test_the_page_says_what_it_is_and_locks_itself_down(
    playground: tuple[Client, Runtime],
) -> None:
    client, _ = playground
    async with client.session.get(client.base + "/playground") as response:
        assert response.status == 200
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assert "never for production" in page
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert "https://" not in page.split("<footer>")[0]  # nothing from a CDN
    async with client.session.get(
        client.base + "/playground/static/vendor/adaptivecards.min.js"
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/javascript"
        assert b"AdaptiveCard" in await response.read()
    for hidden in ("web.py", "../web.py", "vendor/../../web.py", "index.html"):
        async with client.session.get(client.base + "/playground/static/" + hidden) as response:
            assert response.status == 404, hidden


async def test_setup_lists_the_sandbox_people_and_sensible_defaults(
    playground: tuple[Client, Runtime],
) -> None:
    client, _ = playground
    status, setup = await client.get("/playground/api/setup")

    assert status == 200
    assert setup["defaults"] == {"agent": "bob", "owner": "alice", "approver": "carol"}
    people = {p["id"]: p for p in setup["people"]}
    assert people["bob"]["roles"] == ["helpdesk"] and people["judy"]["disabled"] is True
    assert {n["id"] for n in setup["nhis"]} == {"nhi:billing-api", "nhi:ci-deployer"}
    assert setup["connectors"] == ["sandbox"] and setup["usage"] == HELP_TEXT


# ---- what it accepts ------------------------------------------------------------------------


async def test_posts_from_another_site_or_host_are_refused(
    playground: tuple[Client, Runtime],
) -> None:
    client, runtime = playground
    body = {"as": "bob", "text": RESET_PASSWORD}

    status, answer = await client.post(
        "/playground/api/command", body, headers={"Origin": "http://evil.example"}
    )
    assert status == 403 and "its own page" in answer["error"]
    status, answer = await client.post(
        "/playground/api/command", body, headers={"Host": "evil.example:3000"}
    )
    assert status == 403 and "loopback" in answer["error"]
    async with client.session.post(
        client.base + "/playground/api/command",
        data=json.dumps(body),
        headers={"Content-Type": "text/plain"},
    ) as response:
        assert response.status == 415
    assert await runtime.store.open_requests() == []


@pytest.mark.parametrize(
    "path",
    ["/playground/api/setup", "/playground/api/requests", "/playground/api/state"],
)
@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example:3000"},  # DNS rebinding: another name pointed at 127.0.0.1
        {"Origin": "http://evil.example"},  # a page on another origin reading the API
        {"Sec-Fetch-Site": "cross-site"},  # the browser says: another site asked for this
        {"Sec-Fetch-Site": "same-site"},  # e.g. http://localhost:8080 reading :3000
        {"X-Forwarded-For": "203.0.113.9"},  # through a reverse proxy on this machine
        {"Forwarded": "for=203.0.113.9"},
    ],
)
async def test_reads_from_another_site_or_host_get_nothing(
    playground: tuple[Client, Runtime], path: str, headers: dict[str, str]
) -> None:
    client, _ = playground
    request_id = await open_reset(client)
    query = f"?request={request_id}&owner=alice" if path.endswith("state") else ""

    async with client.session.get(client.base + path + query, headers=headers) as response:
        status, answer = response.status, await response.json()
    async with client.session.get(client.base + path, headers=headers) as response:
        status_without_query, without_query = response.status, await response.json()

    assert status == 403 and answer["ok"] is False, answer
    assert request_id not in json.dumps(answer) and "alice" not in json.dumps(answer)
    assert status_without_query == 403, without_query  # refused before the query is read


async def test_its_own_page_may_still_read(playground: tuple[Client, Runtime]) -> None:
    client, _ = playground
    own = {"Origin": client.base.rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    status, setup = await client.get("/playground/api/setup", headers=own)
    assert status == 200 and setup["ok"] is True
    status, _ = await client.get("/playground/api/setup", headers={"Sec-Fetch-Site": "none"})
    assert status == 200


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"text": "help"}, "as: Field required"),
        ({"as": "bob", "text": "help", "admin": True}, "admin: Extra inputs are not permitted"),
        ({"as": "bob; DROP", "text": "help"}, "as: String should match pattern"),
        ({"as": "bob", "text": "x" * 2001}, "text: String should have at most 2000 characters"),
        ({"as": "nobody", "text": RESET_PASSWORD}, "No person called 'nobody'"),
        ({"as": "bob", "text": "reset-mfa @zed INC-1234 lost-device"}, "No one called 'zed'"),
        (
            {"as": "bob", "text": "rotate-secret billing-api INC-1234 scheduled-rotation"},
            "write nhi:billing-api",
        ),
        ({"as": "bob", "text": "reset-mfa @alice"}, "Not enough words"),
        ({"as": "bob", "text": "reset-mfa @alice NOPE lost-device"}, "does not look like a ticket"),
        ({"as": "kim", "text": RESET_PASSWORD}, "matches 2 directory entries"),
        ({"as": "alice", "text": "reset-mfa @carol INC-1234 lost-device"}, "helpdesk role"),
    ],
)
async def test_bad_input_gets_a_clear_message_and_changes_nothing(
    playground: tuple[Client, Runtime], body: dict[str, Any], words: str
) -> None:
    client, runtime = playground

    status, answer = await client.post("/playground/api/command", body)

    assert 400 <= status < 500 and answer["ok"] is False
    assert words in answer["error"]
    assert await runtime.store.open_requests() == []


async def test_not_json_is_refused(playground: tuple[Client, Runtime]) -> None:
    client, _ = playground
    async with client.session.post(
        client.base + "/playground/api/command",
        data="{not json",
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 400
        assert "not valid JSON" in (await response.json())["error"]


async def test_help_and_the_empty_command(playground: tuple[Client, Runtime]) -> None:
    client, _ = playground
    status, helped = await client.command("bob", "help")
    assert status == 200 and helped["message"] == HELP_TEXT and helped["kind"] == "info"
    assert "`" not in helped["message"]  # shown as typed on the page: no Markdown code marks
    assert "form" in (await client.command("bob", "  "))[1]["message"]
    status, refused = await client.command("bob", "reset-mfa @alice")
    assert status == 400 and "Not enough words" in refused["error"]
    assert "`" not in refused["error"] and "reset-mfa @alice INC-1234" in refused["error"]


async def test_a_command_pasted_with_its_slash_opens_and_a_typo_gets_a_suggestion(
    playground: tuple[Client, Runtime],
) -> None:
    client, runtime = playground

    status, opened = await client.command("bob", "/twokey " + RESET_PASSWORD)
    assert status == 200 and opened["kind"] == "done", opened
    status, typo = await client.command("bob", "rest-password @alice INC-1234 forgotten-password")
    assert status == 400 and "Did you mean reset-password?" in typo["error"]

    assert [r.id for r in await runtime.store.open_requests()] == [opened["request"]]


async def test_targets_are_named_like_in_chat(playground: tuple[Client, Runtime]) -> None:
    client, runtime = playground

    status, person = await client.command("bob", "unlock alice INC-2001 locked-out")
    assert status == 200, person
    status, nhi = await client.command(
        "bob", "rotate-secret nhi:billing-api INC-2002 scheduled-rotation"
    )
    assert status == 200, nhi

    unlock = await runtime.store.get(person["request"])
    rotate = await runtime.store.get(nhi["request"])
    assert unlock is not None and unlock.target_id == "alice"
    assert rotate is not None and rotate.target_id == "nhi:billing-api"
    assert rotate.owner_id == "alice" and rotate.plan.tier == "production-nhi"
    state = await client.state(rotate.id)
    banner = json.dumps(state["cards"]["approver"])
    assert "NON-HUMAN IDENTITY: Production non-human identity" in banner


async def test_the_form_opens_the_same_request_as_the_command(
    playground: tuple[Client, Runtime],
) -> None:
    client, runtime = playground
    form = {
        "as": "bob",
        "action": "reset-mfa",
        "target": "@alice",
        "ticket": "INC-3003",
        "reason_code": "lost-device",
        "note": "called from the front desk",
    }

    status, answer = await client.post("/playground/api/open", form)

    assert status == 200, answer
    stored = await runtime.store.get(answer["request"])
    assert stored is not None
    assert (stored.action.value, stored.ticket, stored.note) == (
        "reset-mfa",
        "INC-3003",
        "called from the front desk",
    )


# ---- who sees what --------------------------------------------------------------------------


async def test_the_one_time_secret_reaches_the_owner_pane_only_and_once(
    playground: tuple[Client, Runtime],
) -> None:
    client, runtime = playground
    request_id = await open_reset(client)
    assert (await client.press("alice", f"confirm:{request_id}"))[0] == 200
    assert (await client.press("carol", f"approve:{request_id}"))[0] == 200

    as_owner = await client.state(request_id, owner="alice")
    as_other = await client.state(request_id, owner="carol")
    assert as_owner["request"]["state"] == "completed"
    assert as_owner["secret"] == "temporary password" and as_other["secret"] is None

    for someone_else in ("carol", "bob"):
        status, refused = await client.post(
            "/playground/api/secret", {"as": someone_else, "request": request_id}
        )
        assert status == 404 and "only the account's owner" in refused["error"]
    status, revealed = await client.post(
        "/playground/api/secret", {"as": "alice", "request": request_id}
    )
    assert status == 200 and revealed["label"] == "temporary password"
    secret = revealed["secret"]
    assert len(secret) >= 12
    status, again = await client.post(
        "/playground/api/secret", {"as": "alice", "request": request_id}
    )
    assert status == 404 and "secret" not in again

    earlier = client.seen[:-2]
    assert earlier and not any(secret in answer for answer in earlier)
    after = await client.state(request_id)
    assert secret not in json.dumps(after)
    assert secret not in repr(runtime.notifier.notifiers)
    # Who saw the secret, and when, is in the audit trail: once, as the owner; never the secret.
    revealed_events = [e for e in after["audit"] if e["kind"] == "secret_revealed"]
    assert [e["actor"] for e in revealed_events] == ["alice"]
    async for record in runtime.trail.export():
        assert secret not in json.dumps(record)


async def test_the_wrong_owner_cannot_answer_the_confirmation(
    playground: tuple[Client, Runtime],
) -> None:
    client, runtime = playground
    request_id = await open_reset(client)

    status, refused = await client.press("dave", f"confirm:{request_id}")

    assert status == 403 and "owner of record" in refused["error"]
    stored = await runtime.store.get(request_id)
    assert stored is not None and stored.owner_confirmed_at is None


async def test_deny_needs_a_reason_and_then_tells_the_agent(
    playground: tuple[Client, Runtime],
) -> None:
    client, _ = playground
    request_id = await open_reset(client)

    status, refused = await client.press("carol", f"deny:{request_id}", reason="  ")
    assert status == 400 and "reason" in refused["error"]
    status, denied = await client.press("carol", f"deny:{request_id}", reason="caller unverified")
    assert status == 200, denied

    state = await client.state(request_id)
    assert state["request"]["state"] == "denied"
    assert "actions" not in state["cards"]["approver"]
    assert any("caller unverified" in m for m in state["messages"]["agent"])
    assert [e["kind"] for e in state["audit"]] == ["opened", "denied"]


@pytest.mark.parametrize("button", ["approve", "approve:TK-1", "launch:TK-4K7M2P9Q", "a:b:c"])
async def test_a_forged_button_is_refused(playground: tuple[Client, Runtime], button: str) -> None:
    client, _ = playground

    status, refused = await client.press("carol", button)

    assert status == 400 and refused["ok"] is False


async def test_expiry_updates_the_cards(redis_url: str, namespace: str) -> None:
    policy = policy_text(request_ttl="1s", approval_ttl="1s", remind_after="", escalate_after="")
    async with (
        serve_playground(redis_url, namespace, policy=policy) as (server, runtime),
        aiohttp.ClientSession() as session,
    ):
        client = Client(server, session)
        request_id = await open_reset(client)
        opened = await client.state(request_id)
        assert opened["request"]["state"] == "pending"
        assert "actions" in opened["cards"]["approver"]

        for _ in range(100):  # the app's own sweeper marks it expired (at most ~10 s)
            stored = await runtime.store.get(request_id)
            if stored is not None and stored.state is RequestState.EXPIRED:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the sweeper never expired the request")

        expired = await client.state(request_id)
        assert expired["request"]["state"] == "expired"
        for pane in ("agent", "owner", "approver"):
            assert "actions" not in expired["cards"][pane], pane
        assert "Expired" in json.dumps(expired["cards"]["owner"])
        assert any("expired" in m for m in expired["messages"]["agent"])
        assert "expired" in [e["kind"] for e in expired["audit"]]


async def test_a_privileged_account_needs_two_security_approvers(
    playground: tuple[Client, Runtime],
) -> None:
    client, _ = playground
    status, opened = await client.command("bob", "reset-mfa @grace INC-5005 lost-device")
    assert status == 200, opened
    request_id = opened["request"]
    card = json.dumps((await client.state(request_id))["cards"]["approver"])
    assert "PRIVILEGED: Privileged account" in card

    status, refused = await client.press("carol", f"approve:{request_id}")
    assert status == 403 and "security" in refused["error"]
    assert (await client.press("grace", f"confirm:{request_id}"))[0] == 200
    assert (await client.press("erin", f"approve:{request_id}"))[0] == 200
    assert (await client.state(request_id))["request"]["state"] == "pending"
    assert (await client.press("frank", f"approve:{request_id}"))[0] == 200

    done = await client.state(request_id, owner="grace")
    assert done["request"]["state"] == "completed"
    assert done["messages"]["security"], "security hears about a privileged request"


async def test_a_production_nhi_is_confirmed_by_its_owner_and_the_new_key_goes_to_them(
    playground: tuple[Client, Runtime],
) -> None:
    client, _ = playground
    status, opened = await client.command(
        "bob", "rotate-secret nhi:billing-api CHG-1234 scheduled-rotation"
    )
    assert status == 200, opened
    request_id = opened["request"]
    assert (await client.press("alice", f"confirm:{request_id}"))[0] == 200
    assert (await client.press("erin", f"approve:{request_id}"))[0] == 200

    done = await client.state(request_id, owner="alice")
    assert done["request"]["state"] == "completed" and done["secret"] == "new secret"
    status, revealed = await client.post(
        "/playground/api/secret", {"as": "alice", "request": request_id}
    )
    assert status == 200 and revealed["label"] == "new secret"


async def test_this_wasnt_me_stops_the_request_and_flags_the_account(
    playground: tuple[Client, Runtime],
) -> None:
    client, runtime = playground
    request_id = await open_reset(client)

    status, answer = await client.press("alice", f"reject:{request_id}")

    assert status == 200, answer
    state = await client.state(request_id)
    assert state["request"]["state"] == "rejected_by_owner"
    assert all("actions" not in card for card in state["cards"].values())
    assert any("this wasn't me" in m for m in state["messages"]["security"])
    status, next_one = await client.command("bob", "reset-mfa @alice INC-6006 lost-device")
    assert status == 200, next_one
    flagged = await runtime.store.get(next_one["request"])
    assert flagged is not None and flagged.plan.tier == "strictest"


async def test_break_glass_skips_the_approvers_but_not_the_owner(
    playground: tuple[Client, Runtime],
) -> None:
    client, _ = playground
    status, opened = await client.command(
        "erin", "breakglass reset-mfa @alice INC-7007 CEO locked out minutes before the board call"
    )
    assert status == 200, opened
    request_id = opened["request"]
    card = json.dumps((await client.state(request_id))["cards"]["approver"])
    assert "BREAK-GLASS" in card and "CEO locked out" in card

    assert (await client.press("alice", f"confirm:{request_id}"))[0] == 200
    assert (await client.state(request_id))["request"]["state"] == "completed"


async def test_a_request_needing_no_owner_confirmation_asks_the_owner_nothing(
    redis_url: str, namespace: str
) -> None:
    """A tier without owner confirmation, still waiting for its approver: the owner's pane
    says nothing is asked of them (it showed "Did you ask for this?" with no buttons)."""
    example = (Path(__file__).parents[2] / "app" / "policy" / "example_policy.yaml").read_text()
    text = example.replace(
        "    owner_confirmation: true\n    approvals: 1                    # skipped on the",
        "    owner_confirmation: false\n    approvals: 1                    # skipped on the",
    ).replace("  skip: [approvals]                 # the owner must still confirm", "  skip: []")
    assert text.count("owner_confirmation: false") == 1 and "skip: []" in text
    async with (
        serve_playground(redis_url, namespace, policy=text, sweeper=False) as (server, _),
        aiohttp.ClientSession() as session,
    ):
        client = Client(server, session)
        status, opened = await client.command(
            "erin", "breakglass reset-mfa @alice INC-7007 CEO locked out before the board call"
        )
        assert status == 200, opened
        query = f"/playground/api/state?request={opened['request']}&owner=alice"
        status, state = await client.get(query)
        assert status == 200
        assert state["request"]["state"] == "pending"
        assert state["cards"]["owner"] is None
        assert "needs no owner confirmation" in state["notes"]["owner"]


# ---- what each pane shows -------------------------------------------------------------------


async def test_a_pane_shows_only_what_the_person_picked_received(
    playground: tuple[Client, Runtime],
) -> None:
    client, _ = playground
    request_id = await open_reset(client)
    assert (await client.press("alice", f"confirm:{request_id}"))[0] == 200
    query = f"/playground/api/state?request={request_id}"

    status, theirs = await client.get(query + "&agent=bob&owner=alice&approver=carol")
    assert status == 200
    assert all(theirs["cards"][pane] for pane in ("agent", "owner", "approver"))
    assert theirs["notes"] == {}
    assert theirs["messages"]["owner"] and theirs["messages"]["approver"]

    status, others = await client.get(query + "&agent=heidi&owner=dave&approver=bob")
    assert status == 200
    assert others["cards"] == {"agent": None, "owner": None, "approver": None}
    assert not any(others["messages"][pane] for pane in ("agent", "owner", "approver"))
    assert "Bob Brown (bob) opened this request" in others["notes"]["agent"]
    assert "Alice Adams (alice), the owner of record" in others["notes"]["owner"]
    assert "approver role" in others["notes"]["approver"]
    assert request_id not in json.dumps(others["notes"])


async def test_the_pickers_can_follow_the_request_to_an_eligible_approver(
    playground: tuple[Client, Runtime],
) -> None:
    """Never the agent, the owner or the account itself; someone who has not approved first."""
    client, _ = playground
    plain = await open_reset(client)
    status, opened = await client.command("bob", "reset-password @carol INC-1234 locked-out")
    assert status == 200, opened
    privileged = (await client.command("bob", "reset-mfa @grace INC-1234 lost-device"))[1]

    assert (await client.state(plain))["approvers"] == ["carol", "dave"]
    about_carol = await client.state(opened["request"], owner="carol")
    assert about_carol["approvers"] == ["dave"] and about_carol["request"]["owner"] == "carol"
    assert (await client.state(privileged["request"]))["approvers"] == ["erin", "frank"]
    assert (await client.press("grace", f"confirm:{privileged['request']}"))[0] == 200
    assert (await client.press("erin", f"approve:{privileged['request']}"))[0] == 200
    assert (await client.state(privileged["request"]))["approvers"] == ["frank", "erin"]


async def test_an_approval_card_reaches_role_holders_and_a_party_is_still_refused(
    playground: tuple[Client, Runtime],
) -> None:
    client, runtime = playground
    status, opened = await client.command("bob", "reset-password @carol INC-1234 locked-out")
    assert status == 200, opened
    request_id = opened["request"]
    as_carol = await client.get(
        f"/playground/api/state?request={request_id}&approver=carol&owner=carol"
    )
    assert as_carol[1]["cards"]["approver"] is not None  # she is in the approvers' channel

    status, refused = await client.press("carol", f"approve:{request_id}")
    assert status == 403 and refused["ok"] is False
    status, as_agent = await client.press("bob", f"approve:{request_id}")
    assert status == 403 and as_agent["ok"] is False
    stored = await runtime.store.get(request_id)
    assert stored is not None and stored.approvals == ()


async def test_an_unchanged_decision_is_answered_as_a_refusal(
    playground: tuple[Client, Runtime],
) -> None:
    client, _ = playground
    request_id = await open_reset(client)
    status, denied = await client.press("carol", f"deny:{request_id}", reason="caller unverified")
    assert status == 200 and denied["kind"] == "done"

    status, again = await client.press("dave", f"approve:{request_id}")
    assert status == 200 and again["changed"] is False
    assert again["kind"] == "refused" and "already denied" in again["message"]
    status, cancel = await client.command("bob", f"cancel {request_id}")
    assert status == 200 and cancel["kind"] == "refused"
    status, looked = await client.command("bob", f"status {request_id}")
    assert status == 200 and looked["kind"] == "info"


async def test_a_finished_request_says_when_it_finished_not_when_it_expires(
    playground: tuple[Client, Runtime],
) -> None:
    client, _ = playground
    request_id = await open_reset(client)
    pending = await client.state(request_id)
    assert pending["request"]["expires"] and "gate" not in pending["request"]["words"]
    assert "Expires" in json.dumps(pending["cards"])
    assert "gate" not in json.dumps(pending["cards"]).lower()

    assert (await client.press("alice", f"confirm:{request_id}"))[0] == 200
    assert (await client.press("carol", f"approve:{request_id}"))[0] == 200

    done = await client.state(request_id)
    assert done["request"]["state"] == "completed"
    assert done["request"]["expires"] == "" and done["request"]["finished"].endswith("UTC")
    for pane, card in done["cards"].items():
        assert "Expires" not in json.dumps(card), pane


async def test_a_dispute_shows_on_the_request(playground: tuple[Client, Runtime]) -> None:
    client, _ = playground
    request_id = await open_reset(client)
    assert (await client.press("alice", f"confirm:{request_id}"))[0] == 200
    assert (await client.press("carol", f"approve:{request_id}"))[0] == 200
    before = (await client.state(request_id))["request"]
    assert before["disputed"] is False and before["words"] == "Completed"

    status, disputed = await client.press("alice", f"dispute:{request_id}")
    assert status == 200, disputed

    after = await client.state(request_id)
    assert after["request"]["disputed"] is True and "disputed" in after["request"]["words"]
    assert after["secret"] == "temporary password"  # still the owner's; the page words change
    status, listed = await client.get("/playground/api/requests")
    assert [r["disputed"] for r in listed["requests"] if r["id"] == request_id] == [True]


async def test_after_a_restart_the_requests_still_actionable_are_listed(
    redis_url: str, namespace: str
) -> None:
    async with (
        serve_playground(redis_url, namespace, sweeper=False) as (server, _),
        aiohttp.ClientSession() as session,
    ):
        client = Client(server, session)
        waiting = await open_reset(client)
        done = (await client.command("bob", "unlock @dave INC-1234 locked-out"))[1]["request"]
        assert (await client.press("dave", f"confirm:{done}"))[0] == 200
        assert (await client.press("carol", f"approve:{done}"))[0] == 200
        denied = (await client.command("bob", "reset-mfa @ivan INC-1234 lost-device"))[1]
        assert (await client.press("carol", f"deny:{denied['request']}", reason="no"))[0] == 200

    async with (
        serve_playground(redis_url, namespace, sweeper=False) as (server, _),
        aiohttp.ClientSession() as session,
    ):
        client = Client(server, session)
        status, listed = await client.get("/playground/api/requests")
        assert status == 200
        shown = {r["id"]: r["state"] for r in listed["requests"]}
        assert shown == {waiting: "pending", done: "completed"}  # the denial is over
        assert (await client.press("alice", f"confirm:{waiting}"))[0] == 200
        assert (await client.press("dave", f"dispute:{done}"))[0] == 200


async def test_the_page_has_a_favicon(playground: tuple[Client, Runtime]) -> None:
    client, _ = playground
    async with client.session.get(client.base + "/playground") as response:
        page = await response.text()
    assert '<link rel="icon" href="/playground/static/favicon.svg"' in page
    async with client.session.get(client.base + "/playground/static/favicon.svg") as response:
        assert response.status == 200 and response.content_type == "image/svg+xml"
        assert b"<svg" in await response.read()
