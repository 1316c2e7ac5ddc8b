"""Approver step-up by signing in again at the identity provider (oidc_reauth), end to end:
twokey as `serve` builds it (bootstrap, policy file, real Redis, the one aiohttp server) and a
browser (httpx, cookies kept) following the link to a local OIDC provider and back."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from app.bootstrap import Runtime, build_runtime
from app.domain.models import Action, Request, RequestState
from app.logs import scrub
from app.notify import RecordingNotifier
from app.settings import Settings
from app.store.keys import shard_of_request
from app.web import create_app
from tests.helpers import chat, policy_text
from tests.oidc_standin import CLIENT_ID, CLIENT_SECRET, OidcStandIn, new_key

ACR = "urn:test:loa:mfa"
LINK = re.compile(r"https?://\S+/stepup/oidc/start/[A-Za-z0-9_-]+")


def oidc_policy(issuer: str, approval_ttl: str = "30m") -> str:
    text = policy_text(approval_ttl=approval_ttl).replace(
        "  standard:\n    label: Standard\n",
        "  standard:\n    label: Standard\n    step_up: {approver: [oidc_reauth]}\n",
    )
    return text + (
        "step_up:\n  oidc:\n"
        f"    issuer: {issuer}\n    client_id: {CLIENT_ID}\n"
        "    client_secret_env: TEST_OIDC_CLIENT_SECRET\n"
        f"    max_age: 2m\n    acr_values: [{ACR}]\n    person_claim: email\n"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Twokey:
    runtime: Runtime
    notifier: RecordingNotifier
    browser: httpx.AsyncClient
    idp: OidcStandIn

    async def request(self, rid: str) -> Request:
        found = await self.runtime.store.get(rid)
        assert found is not None
        return found

    async def events(self, rid: str) -> list[dict[str, Any]]:
        keys = self.runtime.store.keys
        entries = await self.runtime.redis.xrange(keys.audit(shard_of_request(rid)))
        found = [json.loads(fields.get(b"e", fields.get("e"))) for _, fields in entries]
        return [e for e in found if e["rid"] == rid]

    async def approved_by_carol(self) -> tuple[str, str]:
        """A reset-mfa the owner confirmed and carol approved: (request id, carol's link)."""
        service = self.runtime.service
        opened = await service.open(
            chat("bob"), chat("alice"), "reset-mfa", "INC-1234", "forgotten-password"
        )
        rid = opened.request.id
        await service.confirm_owner(chat("alice"), rid)
        decided = await service.approve(chat("carol"), rid)
        found = LINK.search(decided.message)
        assert found is not None, decided.message
        return rid, found.group(0)

    async def start_sign_in(self, link: str) -> httpx.Response:
        """Open the link (a page saying what it confirms) and press "Sign in to confirm": the
        redirect to the IdP, with the binding cookie."""
        shown = await self.browser.get(link)
        assert shown.status_code == 200, shown.text
        assert "Sign in to confirm" in shown.text and "I did not approve this" in shown.text
        started = await self.browser.post(link, data={"do": "sign_in"})
        assert started.status_code == 303, started.text
        return started

    async def to_idp_and_back(self, link: str) -> str:
        """Open the link, sign in at the IdP: the callback URL it sends the browser back to."""
        started = await self.start_sign_in(link)
        assert started.headers["location"].startswith(self.idp.base_url + "/authorize?")
        at_idp = await self.browser.get(started.headers["location"])
        assert at_idp.status_code == 302, at_idp.text
        return at_idp.headers["location"]

    async def sign_in(self, link: str) -> httpx.Response:
        back = await self.to_idp_and_back(link)
        answer = await self.browser.get(back)
        await self.runtime.service.settle_pushes()
        return answer


@pytest.fixture
async def idp() -> AsyncIterator[OidcStandIn]:
    standin = OidcStandIn(user={"email": "carol@example.com"})
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()
    assert standin.violations == [], "requests outside what OIDC and PKCE specify"


async def started_twokey(
    idp: OidcStandIn, redis_url: str, namespace: str, tmp_path: Path, approval_ttl: str
) -> AsyncIterator[Twokey]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(oidc_policy(idp.issuer, approval_ttl))
    port = free_port()
    settings = Settings(
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_AUDIT_KEY="oidc-test-audit-key-long-enough",
        TWOKEY_ACCEPT_EVICTION_RISK=True,
        TWOKEY_PLAYGROUND=False,
        TWOKEY_POLICY=str(policy),
        TWOKEY_DATA_DIR=str(tmp_path / "data"),
        TWOKEY_PUBLIC_URL=f"http://127.0.0.1:{port}/",
    )
    runtime = await build_runtime(settings)
    notifier = RecordingNotifier()
    runtime.notifier.add(notifier)
    server = TestServer(create_app(settings, runtime=runtime, sweeper=False), port=port)
    await server.start_server()
    browser = httpx.AsyncClient(timeout=10.0)
    try:
        yield Twokey(runtime, notifier, browser, idp)
    finally:
        await browser.aclose()
        await server.close()
        await runtime.close()


@pytest.fixture
async def twokey(
    idp: OidcStandIn,
    redis_url: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Twokey]:
    monkeypatch.setenv("TEST_OIDC_CLIENT_SECRET", CLIENT_SECRET)
    async for running in started_twokey(idp, redis_url, namespace, tmp_path, "30m"):
        yield running


async def assert_nothing_changed(twokey: Twokey, rid: str) -> None:
    """Still pending, carol's approval still waiting, never counted, nothing executed."""
    request = await twokey.request(rid)
    assert request.state is RequestState.PENDING
    assert request.approvals == ()
    assert [a.approver_id for a in request.approvals_unverified] == ["carol"]
    kinds = [e["kind"] for e in await twokey.events(rid)]
    assert "approver_verified" not in kinds and "execution_started" not in kinds


async def test_the_approver_signs_in_again_and_only_then_the_change_runs(
    twokey: Twokey, capsys: pytest.CaptureFixture[str]
) -> None:
    rid, link = await twokey.approved_by_carol()
    waiting = await twokey.request(rid)
    assert waiting.state is RequestState.PENDING
    assert waiting.waiting_for(waiting.last_change_at) == ["the approver's verification"]

    page = await twokey.sign_in(link)
    assert page.status_code == 200, page.text
    assert "your approval of " + rid + " counts now" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"

    done = await twokey.request(rid)
    assert done.state is RequestState.COMPLETED
    events = await twokey.events(rid)
    kinds = [e["kind"] for e in events]
    assert kinds[kinds.index("approved_unverified") :] == [
        "approved_unverified",
        "approver_verified",
        "execution_started",
        "executed",
    ]
    verified = next(e for e in events if e["kind"] == "approver_verified")
    assert (verified["actor"], verified["via"], verified["reason"]) == (
        "carol",
        "oidc_reauth",
        "approved",
    )
    logged = capsys.readouterr().out + capsys.readouterr().err
    secrets_seen = [link.rsplit("/", 1)[1], *twokey.idp.codes_redeemed]
    secrets_seen += [twokey.idp.authorize_params[0][k] for k in ("state", "nonce")]
    assert all(secret not in logged for secret in secrets_seen)
    assert scrub(f"GET {link} 302").endswith("/stepup/oidc/start/[redacted] 302")
    asked = twokey.idp.authorize_params[0]
    assert asked["prompt"] == "login" and asked["max_age"] == "120"
    assert asked["acr_values"] == ACR and asked["code_challenge_method"] == "S256"
    # the link's token is stored only as a hash
    token = link.rsplit("/", 1)[1].encode()
    redis = twokey.runtime.redis
    for key in await redis.keys(f"{twokey.runtime.settings.namespace}*"):
        dump = await redis.dump(key)
        assert token not in key.encode() if isinstance(key, str) else token not in key
        assert token not in (dump or b"")


async def refusals(twokey: Twokey, rid: str) -> list[tuple[str, str, str, str]]:
    """The request's refused attempts as audited: (actor, role, via, reason)."""
    found = [e for e in await twokey.events(rid) if e["kind"] == "refused"]
    assert all(e["outcome"] == "refused" for e in found)
    return [(e["actor"], e["role"], e["via"], e["reason"]) for e in found]


async def test_someone_else_signing_in_changes_nothing(twokey: Twokey) -> None:
    rid, link = await twokey.approved_by_carol()
    twokey.idp.user = {"email": "dave@example.com"}
    page = await twokey.sign_in(link)
    assert page.status_code == 403
    assert "signed in someone else" in page.text and "Carol" in page.text
    await assert_nothing_changed(twokey, rid)
    # a security event: in the request's hash-chained trail, and security is told at once
    assert await refusals(twokey, rid) == [("carol", "", "oidc_reauth", "wrong_person:sign_in")]
    [alert] = twokey.notifier.said("alert_security")
    assert alert[1] == rid and "someone other than Carol" in alert[2]
    assert "dave" not in alert[2]  # what the IdP said is not repeated into chat


async def test_wrong_people_signing_in_count_toward_the_refusal_alert(twokey: Twokey) -> None:
    """fraud.refusals (3 in 10 minutes by default): the third wrong sign-in is probing."""
    rid, link = await twokey.approved_by_carol()
    twokey.idp.user = {"email": "dave@example.com"}
    for attempt in range(3):
        if attempt:
            again = await twokey.runtime.service.approve(chat("carol"), rid)
            found = LINK.search(again.message)
            assert found is not None
            link = found.group(0)
        assert (await twokey.sign_in(link)).status_code == 403
    alerts = [text for _, _, text in twokey.notifier.said("alert_security")]
    assert sum("someone other than Carol" in text for text in alerts) == 3
    [often] = [text for text in alerts if "refused 3 times" in text]
    assert "someone else signing in through their approval link" in often
    await assert_nothing_changed(twokey, rid)
    assert len(await refusals(twokey, rid)) == 3


async def test_a_link_a_sign_in_and_a_code_each_work_once(twokey: Twokey) -> None:
    rid, link = await twokey.approved_by_carol()
    twokey.idp.user = {"email": "dave@example.com"}  # a first sign-in that does not count
    first_back = await twokey.to_idp_and_back(link)
    assert (await twokey.browser.get(first_back)).status_code == 403
    twokey.idp.user = {"email": "carol@example.com"}

    again = await twokey.browser.get(link)  # the link, replayed
    assert again.status_code == 410 and "already used or has run out" in again.text

    # a second link (approving again while it waits hands out a new one), its own sign-in
    second = await twokey.runtime.service.approve(chat("carol"), rid)
    found = LINK.search(second.message)
    assert found is not None and second.changed is False
    second_back = await twokey.to_idp_and_back(found.group(0))

    # the first sign-in's code, replayed into the second: the IdP has spent it
    first_code = httpx.URL(first_back).params["code"]
    swapped = httpx.URL(second_back).copy_set_param("code", first_code)
    page = await twokey.browser.get(str(swapped))
    assert page.status_code == 403 and "would not confirm" in page.text
    # each sign-in's state, replayed
    for back in (second_back, first_back):
        page = await twokey.browser.get(back)
        assert page.status_code == 403 and "already used or has run out" in page.text
    await assert_nothing_changed(twokey, rid)


async def test_a_code_from_another_sign_in_fails_pkce(twokey: Twokey) -> None:
    rid, link = await twokey.approved_by_carol()
    first_back = await twokey.to_idp_and_back(link)
    second = await twokey.runtime.service.approve(chat("carol"), rid)
    found = LINK.search(second.message)
    assert found is not None
    second_back = await twokey.to_idp_and_back(found.group(0))
    unspent = httpx.URL(first_back).params["code"]  # never redeemed: only PKCE stops it
    page = await twokey.browser.get(str(httpx.URL(second_back).copy_set_param("code", unspent)))
    assert page.status_code == 403 and "would not confirm" in page.text
    await assert_nothing_changed(twokey, rid)


async def test_a_link_that_ran_out_changes_nothing(twokey: Twokey) -> None:
    rid, link = await twokey.approved_by_carol()
    redis = twokey.runtime.redis
    [key] = await redis.keys(f"{twokey.runtime.settings.namespace}:oidc:link:*")
    assert 0 < await redis.ttl(key) <= 5 * 60  # link_ttl's default
    await redis.pexpire(key, 1)  # five minutes later
    await asyncio.sleep(0.05)
    page = await twokey.browser.get(link)
    assert page.status_code == 410 and "already used or has run out" in page.text
    await assert_nothing_changed(twokey, rid)


@pytest.mark.parametrize(
    ("knob", "words", "audited"),
    [
        ({"sign_with": "another key"}, "its signature does not verify", "signin_refused:signature"),
        (
            {"claims": {"nonce": "someone-elses-nonce"}},
            "belongs to another sign-in (nonce)",
            "signin_refused:nonce",
        ),
        (
            {"auth_age": 10 * 60},
            "did not ask you to sign in again just now",
            "signin_refused:auth_time",
        ),
        ({"claims": {"acr": None}}, "sign-in strength this approval needs", "signin_refused:acr"),
        (
            {"claims": {"acr": "urn:test:loa:password"}},
            "sign-in strength this approval needs",
            "signin_refused:acr",
        ),
        ({"claims": {"aud": "another-client"}}, "not issued to twokey", "signin_refused:issuer"),
        ({"claims": {"email": None}}, "signed in someone else", "wrong_person:sign_in"),
        (
            {"claims": {"email_verified": False}},
            "email address is verified",
            "signin_refused:email_unverified",
        ),
        (
            {"claims": {"email_verified": None}},
            "email address is verified",
            "signin_refused:email_unverified",
        ),
        ({"deny": "access_denied"}, "did not sign you in (access_denied)", None),
    ],
)
async def test_an_id_token_that_does_not_hold_changes_nothing(
    twokey: Twokey, knob: dict[str, Any], words: str, audited: str | None
) -> None:
    rid, link = await twokey.approved_by_carol()
    for name, value in knob.items():
        setattr(twokey.idp, name, new_key() if value == "another key" else value)
    page = await twokey.sign_in(link)
    assert page.status_code == 403, page.text
    assert words in page.text
    await assert_nothing_changed(twokey, rid)
    # a bad or forged answer is a refused attempt in the trail (the IdP saying no is not)
    expected = [("carol", "", "oidc_reauth", audited)] if audited else []
    assert await refusals(twokey, rid) == expected
    wrong_person = audited == "wrong_person:sign_in"
    assert bool(twokey.notifier.said("alert_security")) is wrong_person


async def test_the_way_back_in_another_browser_changes_nothing(twokey: Twokey) -> None:
    rid, link = await twokey.approved_by_carol()
    back = await twokey.to_idp_and_back(link)
    async with httpx.AsyncClient() as elsewhere:  # no cookie from the start of the sign-in
        page = await elsewhere.get(back)
    assert page.status_code == 403 and "different browser" in page.text
    await assert_nothing_changed(twokey, rid)
    assert await refusals(twokey, rid) == [
        ("carol", "", "oidc_reauth", "signin_refused:other_browser")
    ]


async def test_the_pages_escape_and_refuse_what_twokey_did_not_send(twokey: Twokey) -> None:
    base = twokey.runtime.settings.public_url
    page = await twokey.browser.get(f"{base}/stepup/oidc/start/<script>")
    assert page.status_code == 404 and "<script>" not in page.text
    page = await twokey.browser.get(f"{base}/stepup/oidc/callback?state=<b>x</b>&code=1")
    assert page.status_code == 400 and "<b>" not in page.text


async def test_an_approval_that_expires_unverified_does_not_count(
    idp: OidcStandIn,
    redis_url: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_OIDC_CLIENT_SECRET", CLIENT_SECRET)
    async for twokey in started_twokey(idp, redis_url, namespace, tmp_path, "1s"):
        rid, link = await twokey.approved_by_carol()
        await asyncio.sleep(1.2)
        lapsed = await twokey.request(rid)
        missing = lapsed.waiting_for(lapsed.last_change_at + 1200)
        assert "1 approval" in missing and "the approver's verification" not in missing
        page = await twokey.sign_in(link)
        assert page.status_code == 403 and "expired before you signed in again" in page.text
        request = await twokey.request(rid)
        assert request.state is RequestState.PENDING
        assert request.approvals == () and request.approvals_unverified == ()
        failed = [e for e in await twokey.events(rid) if e["kind"] == "approver_step_up_failed"]
        assert [(e["via"], e["reason"]) for e in failed] == [("oidc_reauth", "late")]


async def test_opening_the_link_shows_what_it_confirms_and_uses_nothing_up(
    twokey: Twokey,
) -> None:
    """Link scanners (Safe Links), prefetching browsers and HEAD requests open links before
    people do: opening only shows the approval; the approver can still sign in after."""
    rid, link = await twokey.approved_by_carol()
    async with httpx.AsyncClient() as scanner:
        assert (await scanner.head(link)).status_code == 200
        shown = await scanner.get(link)
    assert shown.status_code == 200
    for words in (rid, Action.RESET_MFA.label, "Alice", "INC-1234", "Bob"):
        assert words in shown.text, words
    assert shown.headers["cache-control"] == "no-store"
    assert twokey.idp.authorize_params == []  # nobody was sent to sign in
    page = await twokey.sign_in(link)
    assert page.status_code == 200, page.text
    assert (await twokey.request(rid)).state is RequestState.COMPLETED


async def test_several_sign_ins_in_one_browser_each_count(twokey: Twokey) -> None:
    """An approver verifying three approvals in three tabs: each sign-in has its own cookie,
    so no way back reads or deletes another's (one shared cookie failed all three and told
    security Carol's sign-ins were forged)."""
    approved = []
    for target in ("alice", "dave", "erin"):
        opened = await twokey.runtime.service.open(
            chat("bob"), chat(target), "reset-mfa", "INC-1234", "forgotten-password"
        )
        rid = opened.request.id
        await twokey.runtime.service.confirm_owner(chat(target), rid)
        decided = await twokey.runtime.service.approve(chat("carol"), rid)
        found = LINK.search(decided.message)
        assert found is not None, decided.message
        approved.append((rid, found.group(0)))
    backs = [await twokey.to_idp_and_back(link) for _, link in approved]  # three tabs
    for back in reversed(backs):
        page = await twokey.browser.get(back)
        assert page.status_code == 200, page.text
    await twokey.runtime.service.settle_pushes()
    for rid, _ in approved:
        assert (await twokey.request(rid)).state is RequestState.COMPLETED
        assert await refusals(twokey, rid) == []
    assert twokey.notifier.said("alert_security") == []


async def test_i_did_not_approve_this_tells_security_and_uses_the_link_up(
    twokey: Twokey,
) -> None:
    """Someone holding Carol's chat session approved; Carol opens the link and disowns it."""
    rid, link = await twokey.approved_by_carol()
    page = await twokey.browser.post(link, data={"do": "not_me"})
    assert page.status_code == 200 and "does not count" in page.text
    await assert_nothing_changed(twokey, rid)
    assert await refusals(twokey, rid) == [("carol", "", "oidc_reauth", "signin_refused:not_me")]
    [alert] = twokey.notifier.said("alert_security")
    assert alert[1] == rid and "Carol Chen opened their sign-in link and said" in alert[2]
    again = await twokey.browser.get(link)
    assert again.status_code == 410 and "already used or has run out" in again.text
    assert (await twokey.browser.post(link, data={"do": "sign_in"})).status_code == 410


@pytest.mark.parametrize(
    ("headers", "data", "status"),
    [
        ({"Origin": "https://evil.example"}, {"do": "sign_in"}, 403),
        ({"Origin": "null"}, {"do": "sign_in"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, {"do": "not_me"}, 403),
        ({}, {"do": "approve"}, 400),
        ({}, {}, 400),
    ],
)
async def test_a_choice_not_made_on_twokeys_page_uses_nothing_up(
    twokey: Twokey, headers: dict[str, str], data: dict[str, str], status: int
) -> None:
    rid, link = await twokey.approved_by_carol()
    answer = await twokey.browser.post(link, data=data, headers=headers)
    assert answer.status_code == status
    assert twokey.idp.authorize_params == [] and await refusals(twokey, rid) == []
    same_site = {
        "Origin": twokey.runtime.settings.public_url or "",
        "Sec-Fetch-Site": "same-origin",
    }
    started = await twokey.browser.post(link, data={"do": "sign_in"}, headers=same_site)
    assert started.status_code == 303  # the link still works from twokey's own page
