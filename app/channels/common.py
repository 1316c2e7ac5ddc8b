"""What every channel shares: message references, button actions and their codec.

A button carries only the request id and the action (invariant 7): everything a card shows and
everything a decision rests on comes from the stored request, never from the click's payload.
"""

from __future__ import annotations

import json
from enum import StrEnum

import redis.asyncio as aioredis
from pydantic import ValidationError

from app.domain.errors import BadInput, Unavailable
from app.domain.forms import parse_request_id
from app.ports import MessageRef as MessageRef  # re-exported: where channels find it
from app.store.keys import Keys


class ButtonAction(StrEnum):
    CONFIRM = "confirm"
    REJECT = "reject"
    APPROVE = "approve"
    DENY = "deny"
    DISPUTE = "dispute"
    CANCEL = "cancel"


def encode_button(action: ButtonAction, request_id: str) -> str:
    """The whole value a button carries: ``approve:TK-4K7M2P9Q``."""
    return f"{action.value}:{request_id}"


def decode_button(value: str) -> tuple[ButtonAction, str]:
    """Parse a button value strictly; anything else is refused and changes nothing."""
    if not isinstance(value, str) or len(value) > 64 or value.count(":") != 1:
        raise BadInput("This button is not one of twokey's.")
    action, request_id = value.split(":")
    try:
        return ButtonAction(action), parse_request_id(request_id)
    except ValueError as exc:
        raise BadInput("This button is not one of twokey's.") from exc


class MessageRefs:
    """Message references in Redis, in the request's hash slot, kept as long as the request."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, retention_s: int = 31 * 86400) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_s = retention_s

    async def remember(self, request_id: str, ref: MessageRef) -> None:
        key = self.keys.message_refs(request_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, ref.name, ref.model_dump_json())
                pipe.expire(key, self.retention_s)
                await pipe.execute()
        except (OSError, aioredis.ConnectionError, aioredis.TimeoutError) as exc:
            raise Unavailable("Could not record where the card was posted.") from exc

    async def of(self, request_id: str, platform: str | None = None) -> list[MessageRef]:
        raw = await self.redis.hgetall(self.keys.message_refs(request_id))
        refs = []
        for value in raw.values():
            try:
                ref = MessageRef.model_validate(json.loads(value))
            except (ValueError, ValidationError):
                continue
            if platform is None or ref.platform == platform:
                refs.append(ref)
        return refs
