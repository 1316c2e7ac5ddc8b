"""Slack accounts and directory people, both ways, through the Web API.

A Slack user becomes a :class:`ChatUser` from ``users.info`` (verified email, guest, bot and
deleted flags, home team); the service then resolves it to exactly one directory principal or
refuses. The other way, a directory principal is reached on Slack by ``users.lookupByEmail``
with their directory email, and only if that Slack account is an active full member of one of
our workspaces whose email is that same address, confirmed by Slack: a one-time secret must
never go to a guest, a bot or someone in another organisation who happens to share a name.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.channels.common import KeptAnswers
from app.channels.slack.guard import Tenancy
from app.domain.errors import IdentityUnsure, Unavailable
from app.domain.models import ChatUser
from app.ports import Directory

log = structlog.get_logger("twokey.slack.identity")

SLACK_DOWN = (
    "Slack did not answer when twokey asked who you are, so nothing was changed. Please try "
    "again in a minute."
)
USER_KEEP_S = 30.0
"""How long the answer of users.info for the person acting is kept (Slack's Tier 4 method)."""
USERS_MOST = 10_000
"""Slack users kept at most (then the memory starts afresh)."""
FOREIGN = (
    "{who}: this Slack account belongs to another organisation (Slack Connect). Only members "
    "of this workspace can request, confirm or approve identity changes."
)


def chat_user_from(user: dict[str, Any], *, require_confirmed_email: bool) -> ChatUser:
    """A users.info ``user`` object as a ChatUser (pure; the service judges it)."""
    profile = user.get("profile") or {}
    email = profile.get("email") if isinstance(profile.get("email"), str) else None
    confirmed = user.get("is_email_confirmed")
    verified = bool(email) and (confirmed is True or not require_confirmed_email)
    return ChatUser(
        platform="slack",
        user_id=str(user.get("id", "")),
        team_id=str(user.get("team_id") or ""),
        email=email or None,
        email_verified=verified,
        display_name=str(profile.get("real_name") or user.get("real_name") or "")[:120],
        is_bot=bool(user.get("is_bot")) or user.get("id") == "USLACKBOT",
        is_guest=bool(user.get("is_restricted")) or bool(user.get("is_ultra_restricted")),
        deleted=bool(user.get("deleted")),
    )


def home_teams(user: dict[str, Any]) -> tuple[str | None, ...]:
    """Every team / enterprise id a Slack user object says the user belongs to."""
    enterprise = user.get("enterprise_user") or {}
    profile = user.get("profile") or {}
    return (
        user.get("team_id"),
        profile.get("team") if not user.get("team_id") else None,
        enterprise.get("enterprise_id"),
    )


class SlackPeople:
    """Who a Slack user is, and which Slack user a directory person is."""

    def __init__(
        self,
        client: AsyncWebClient,
        directory: Directory,
        tenancy: Tenancy,
        *,
        require_confirmed_email: bool = True,
        cache_s: float = 300.0,
        user_s: float = USER_KEEP_S,
    ) -> None:
        self.client = client
        self.directory = directory
        self.tenancy = tenancy
        self.require_confirmed_email = require_confirmed_email
        self.cache_s = cache_s
        self._slack_ids: dict[str, tuple[float, str | None]] = {}
        self.user_s = user_s
        self._users: KeptAnswers[str, ChatUser] = KeptAnswers(user_s, USERS_MOST)

    async def chat_user(self, user_id: str, *, who: str = "You") -> ChatUser:
        """users.info for one Slack user; refuse another organisation's member outright.

        The person acting (``who`` "You") is kept ``user_s`` seconds when Slack said they are
        one of ours: a burst of clicks asks Slack once (users.info is rate limited), and the
        service still resolves them in the directory, and re-reads every approver before any
        claim. A target is always asked afresh."""
        remember = who == "You" and self.user_s > 0
        if remember:
            kept = self._users.get(user_id)
            if kept is not None:
                return kept
        person = await self._users_info(user_id, who)
        if remember:
            self._users.keep(user_id, person)
        return person

    async def _users_info(self, user_id: str, who: str) -> ChatUser:
        try:
            answer = await self.client.users_info(user=user_id)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "")) if exc.response is not None else ""
            if error in ("user_not_found", "user_not_visible"):
                raise IdentityUnsure(f"{who}: Slack does not know this user.") from exc
            log.warning("slack_users_info_failed", error=error or type(exc).__name__)
            raise Unavailable(SLACK_DOWN) from exc
        except OSError as exc:
            log.warning("slack_users_info_failed", error=type(exc).__name__)
            raise Unavailable(SLACK_DOWN) from exc
        user = answer.get("user")
        if not isinstance(user, dict):
            raise Unavailable(SLACK_DOWN)
        if user.get("is_stranger") or not await self.tenancy.is_member_team(*home_teams(user)):
            raise IdentityUnsure(FOREIGN.format(who=who))
        return chat_user_from(user, require_confirmed_email=self.require_confirmed_email)

    async def slack_id_of(self, principal_id: str, *, fresh: bool = False) -> str | None:
        """The Slack user id of a directory person, or None when they cannot be reached safely.

        ``fresh`` skips the short cache: a secret is only ever sent after a new look-up.
        """
        cached = self._slack_ids.get(principal_id)
        if not fresh and cached is not None and cached[0] > time.monotonic():
            return cached[1]
        found = await self._look_up(principal_id)
        ttl = self.cache_s if found else min(self.cache_s, 60.0)
        self._slack_ids[principal_id] = (time.monotonic() + ttl, found)
        return found

    async def _look_up(self, principal_id: str) -> str | None:
        try:
            principal = await self.directory.get(principal_id)
        except Exception as exc:
            log.warning("directory_unavailable", error=type(exc).__name__)
            return None
        if principal is None or not principal.email or principal.disabled:
            return None
        try:
            answer = await self.client.users_lookupByEmail(email=principal.email)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "")) if exc.response is not None else ""
            if error != "users_not_found":
                log.warning("slack_lookup_failed", error=error or type(exc).__name__)
            return None
        except OSError as exc:
            log.warning("slack_lookup_failed", error=type(exc).__name__)
            return None
        user = answer.get("user")
        if not isinstance(user, dict):
            return None
        person = chat_user_from(user, require_confirmed_email=self.require_confirmed_email)
        same_email = (person.email or "").casefold() == principal.email.casefold()
        ours = not user.get("is_stranger") and await self.tenancy.is_member_team(*home_teams(user))
        trusted = same_email and person.email_verified
        if not trusted or not ours or person.deleted or person.is_bot or person.is_guest:
            log.warning("slack_account_unusable", principal=principal_id)
            return None
        return person.user_id
