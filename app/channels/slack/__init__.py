"""The Slack face of twokey: Bolt on the shared aiohttp server (or Socket Mode).

``app`` mounts it, ``guard`` checks signature, tenancy and replays, ``handlers`` turn each
interaction into one service call, ``blocks`` builds every card, ``notifier`` posts and updates
them, ``identity`` maps Slack users to directory people and back. See docs/slack.md.
"""
