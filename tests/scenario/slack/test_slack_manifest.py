"""The app manifest asks only for the scopes twokey uses and points every URL at the one
endpoint; /twokey is escaped so mentions arrive as ids (<@U…>), never as guessable names."""

from __future__ import annotations

from pathlib import Path

import yaml

MANIFEST = Path(__file__).parents[3] / "manifests" / "slack" / "manifest.yml"


def test_the_manifest_asks_for_no_more_than_twokey_uses() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "commands",
        "chat:write",
        "im:write",
        "users:read",
        "users:read.email",
    }
    assert "user" not in manifest["oauth_config"]["scopes"]


def test_every_url_is_the_one_events_endpoint_and_mentions_are_escaped() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/twokey" and command["should_escape"] is True
    settings = manifest["settings"]
    urls = {
        command["url"],
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
        settings["interactivity"]["message_menu_options_url"],
    }
    assert len(urls) == 1 and urls.pop().endswith("/slack/events")
    assert settings["interactivity"]["is_enabled"] is True
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "app_uninstalled",
        "tokens_revoked",
    }
    assert len(manifest["display_information"]["description"]) <= 140
