"""Every inbound activity is authenticated first: any bad token is a 401 and changes nothing.

Tokens are real RS256 JWTs signed by a key the stand-in made and publishes as OpenID metadata and
JWKS; botbuilder's production authentication verifies them. Nothing is switched off.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from teams_standin import APP_ID, OTHER_TENANT, TENANT, TeamsStandIn, dm_of
from teams_world import TeamsWorld

NOW = int(time.time())
EMULATOR_ISSUER = "https://sts.windows.net/d6d49420-f39b-4df7-a1dc-d59a935871db/"


def bad_tokens(teams: TeamsStandIn) -> dict[str, str]:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unsigned = jwt.encode(
        {"iss": "https://api.botframework.com", "aud": APP_ID, "serviceurl": teams.url + "/"},
        None,
        algorithm="none",
        headers={"kid": teams.kid},
    )
    return {
        "expired": teams.token(exp=NOW - 900, nbf=NOW - 4000),
        "not_yet_valid": teams.token(nbf=NOW + 900),
        "badly_signed": teams.token(_key=other_key),
        "unknown_kid": teams.token(_headers={"kid": "kid-nobody-published"}),
        "alg_none": unsigned,
        "hs256": teams.token(_alg="HS256", _key="a-shared-secret-anyone-could-guess-32b"),
        "wrong_issuer": teams.token(iss="https://login.evil.example"),
        "wrong_audience": teams.token(aud="another-bot-id"),
        "no_audience": teams.token(aud=None),
        "service_url_differs": teams.token(serviceurl="https://attacker.example/"),
        "no_service_url_claim": teams.token(serviceurl=None),
        "emulator_style": teams.token(iss=EMULATOR_ISSUER, ver="1.0", appid=APP_ID),
        "garbage": "not.a.jwt",
    }


KINDS = [
    "expired",
    "not_yet_valid",
    "badly_signed",
    "unknown_kid",
    "alg_none",
    "hs256",
    "wrong_issuer",
    "wrong_audience",
    "no_audience",
    "service_url_differs",
    "no_service_url_claim",
    "emulator_style",
    "garbage",
]


async def nothing_happened(world: TeamsWorld) -> None:
    assert await world.runtime.store.open_requests() == []
    assert world.teams.in_conversation(dm_of("bob")) == []
    assert world.teams.in_conversation(dm_of("alice")) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_bad_token_gets_401_and_changes_nothing(world: TeamsWorld, kind: str) -> None:
    token = bad_tokens(world.teams)[kind]
    activity = world.message("bob", "reset-mfa <at>Alice</at> INC-1234 lost-device", ["alice"])
    answer = await world.post(activity, token)
    assert answer.status == 401, (kind, await answer.text())
    await nothing_happened(world)


async def test_no_authorization_header_gets_401(world: TeamsWorld) -> None:
    activity = world.message("bob", "reset-mfa <at>Alice</at> INC-1234 lost-device", ["alice"])
    answer = await world.post(activity, None)
    assert answer.status == 401
    await nothing_happened(world)


async def test_a_press_with_a_bad_token_is_401_not_500(world: TeamsWorld) -> None:
    request = await world.open_request()
    card = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    activity = world.press_activity("alice", card, "confirm")
    answer = await world.post(activity, bad_tokens(world.teams)["badly_signed"])
    assert answer.status == 401
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.owner_confirmed_at is None


async def test_an_activity_whose_service_url_differs_from_the_token_is_refused(
    world: TeamsWorld,
) -> None:
    activity: dict[str, Any] = world.message("bob", "list")
    activity["serviceUrl"] = "https://attacker.example/"
    answer = await world.post(activity)
    assert answer.status == 401


async def test_another_tenant_opens_nothing(world: TeamsWorld) -> None:
    activity = world.message(
        "bob", "reset-mfa <at>Alice</at> INC-1234 lost-device", ["alice"], tenant=OTHER_TENANT
    )
    answer = await world.post(activity)
    assert answer.status in (200, 202, 403)
    await nothing_happened(world)


async def test_an_activity_naming_two_tenants_opens_nothing(world: TeamsWorld) -> None:
    """channelData says an allowed tenant, the conversation another: neither is believed."""
    activity = world.message(
        "bob", "reset-mfa <at>Alice</at> INC-1234 lost-device", ["alice"], tenant=OTHER_TENANT
    )
    activity["channelData"]["tenant"]["id"] = TENANT
    answer = await world.post(activity)
    assert answer.status == 403
    await nothing_happened(world)


async def test_the_conversations_tenant_is_read_when_channel_data_has_none(
    world: TeamsWorld,
) -> None:
    activity = world.message("bob", "reset-mfa <at>Alice</at> INC-1234 lost-device", ["alice"])
    del activity["channelData"]["tenant"]
    assert (await world.post(activity)).status == 200
    assert len(await world.runtime.store.open_requests()) == 1
    foreign = world.message(
        "bob", "reset-mfa <at>Alice</at> INC-1234 lost-device", ["alice"], tenant=OTHER_TENANT
    )
    del foreign["channelData"]["tenant"]
    assert (await world.post(foreign)).status == 403


async def test_the_connector_token_is_fetched_once_and_reused(world: TeamsWorld) -> None:
    for _ in range(3):
        assert (await world.say("bob", "help")).status == 200
    assert world.teams.tokens_issued == 1
    assert not world.teams.unauthorized


async def test_a_key_the_channel_rotated_in_is_fetched_and_accepted(world: TeamsWorld) -> None:
    """botbuilder's own key cache raised IndexError on an unknown key id and never refetched:
    after the channel rotated its keys every activity was a 401 until the daily refresh."""
    assert (await world.say("bob", "help")).status == 200
    fetched = world.teams.keys_fetched
    world.teams.rotate_key()
    answer = await world.say("bob", "help")
    assert answer.status == 200, await answer.text()
    assert world.teams.keys_fetched == fetched + 1


async def test_a_key_of_another_kind_in_the_published_set_spoils_nothing(
    world: TeamsWorld,
) -> None:
    """The set is parsed once per fetch: a key twokey cannot read is left out, not the set."""
    world.teams.other_keys = [{"kty": "EC", "kid": "kid-ec", "crv": "P-256"}, {"kty": "RSA"}]
    world.teams.rotate_key()
    assert (await world.say("bob", "help")).status == 200
    token = world.teams.token(_headers={"kid": "kid-ec"})
    activity = world.message("bob", "reset-mfa <at>Alice</at> INC-1234 lost-device", ["alice"])
    assert (await world.post(activity, token)).status == 401


async def test_made_up_key_ids_fetch_the_keys_at_most_once_a_minute(world: TeamsWorld) -> None:
    assert (await world.say("bob", "help")).status == 200
    fetched = world.teams.keys_fetched
    for n in range(5):
        token = world.teams.token(_headers={"kid": f"kid-made-up-{n}"})
        activity = world.message("bob", "reset-mfa <at>Alice</at> INC-1234 lost-device", ["alice"])
        answer = await world.post(activity, token)
        assert answer.status == 401
    assert world.teams.keys_fetched == fetched + 1
    assert await world.runtime.store.open_requests() == []
