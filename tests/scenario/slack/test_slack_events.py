"""The Events API side of /slack/events: Slack's URL check, and events acted on once even when
Slack retries them (X-Slack-Retry-Num)."""

from __future__ import annotations

import json

import structlog
from slack_standin import APP_ID, TEAM
from slack_world import SlackWorld, signed_headers


async def test_slacks_url_verification_is_answered_with_the_challenge(world: SlackWorld) -> None:
    body = json.dumps(
        {
            "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    ).encode()
    headers = {**signed_headers(body), "Content-Type": "application/json"}
    response = await world.post(body, headers)
    assert response.status == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in await response.text()


async def test_an_event_retried_by_slack_is_handled_once(world: SlackWorld) -> None:
    event = {
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "team_id": TEAM,
        "api_app_id": APP_ID,
        "event": {"type": "app_uninstalled", "event_ts": "1700000000.000100"},
        "type": "event_callback",
        "event_id": "Ev0TWOKEY01",
        "event_time": 1700000000,
    }
    body = json.dumps(event).encode()
    with structlog.testing.capture_logs() as logged:
        for retry in ("", "1", "2"):
            extra = (
                {"X-Slack-Retry-Num": retry, "X-Slack-Retry-Reason": "http_error"} if retry else {}
            )
            headers = {**signed_headers(body, **extra), "Content-Type": "application/json"}
            response = await world.post(body, headers)
            assert response.status == 200
        await world.slack.until(lambda: [e for e in logged if e["event"] == "slack_app_removed"])
    assert len([e for e in logged if e["event"] == "slack_app_removed"]) == 1
    assert len([e for e in logged if e["event"] == "slack_duplicate_delivery"]) == 2
