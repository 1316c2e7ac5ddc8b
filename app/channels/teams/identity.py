"""Teams accounts and directory people.

A mention or a sender carries only a ``29:`` id, so who someone is comes from the conversation's
roster (``TeamsInfo.get_member``): their UPN, Entra object id, tenant and role. Where Teams
answers 404 (a 1:1 chat holds only the bot and the person), the roster of the team that holds
the approvals channel is asked instead. The service then resolves the account to exactly one
directory person, as for Slack, so one person with a Slack and a Teams account is one principal.

A member of a tenant twokey does not serve, a guest, or an account with no email is passed on as
unsure and refused by the service: never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
from botbuilder.core import TurnContext
from botbuilder.core.teams import TeamsInfo
from botbuilder.schema import Activity, ErrorResponseException
from botbuilder.schema.teams import TeamsChannelAccount

from app.channels.common import KeptAnswers
from app.domain.errors import IdentityUnsure, Unavailable
from app.domain.models import ChatUser
from app.ports import Directory

log = structlog.get_logger("twokey.teams.identity")

PLATFORM = "teams"
MEMBER_KEEP_S = 30.0
"""How long a roster answer (who a Teams user is) is kept: a press or command from the same
person within it needs no Bot Connector call. As Slack keeps users.info; a person's directory
roles are still read for every decision."""
MEMBERS_KEPT = 10_000
TEAMS_DOWN = (
    "Teams did not answer when twokey asked who this is, so nothing was changed. Please try "
    "again in a minute."
)
FOREIGN = (
    "{who}: this Teams account belongs to another organisation. Only members of this "
    "organisation can request, confirm or approve identity changes."
)


def chat_user_from(member: TeamsChannelAccount, allowed_tenants: Iterable[str]) -> ChatUser:
    """A roster entry as a ChatUser (pure; the service judges it).

    A Teams user is known by their sign-in name (UPN) only: its domain is one the tenant has
    proven it owns (a domain is verified in one tenant at most) and it is unique within the
    tenant. The roster's ``email`` is the account's ``mail`` attribute, which a tenant's admins
    (any allowed partner tenant's included) may set to anyone's address: trusted, it let an
    account whose mail named an approver approve as them, and receive an owner's secret. It is
    read only from an entry that carries no UPN at all.
    """
    tenant = member.tenant_id or ""
    upn = (member.user_principal_name or "").strip()
    # Teams always gives the UPN; only a roster entry without one (none an attacker can make in
    # Teams: every account has a UPN) falls back to the email it carries.
    email = upn if "@" in upn else (None if upn else (member.email or "").strip() or None)
    guest = (member.user_role or "").lower() in ("guest", "anonymous") or "#EXT#" in upn.upper()
    return ChatUser(
        platform=PLATFORM,
        user_id=str(member.aad_object_id or member.id or ""),
        team_id=tenant,
        email=email,
        email_verified=bool(email) and tenant in set(allowed_tenants),
        display_name=str(member.name or "")[:120],
        is_guest=guest,
    )


def tenant_of(activity: Activity) -> str:
    """The tenant an activity names, in ``channelData.tenant.id`` and ``conversation.tenantId``
    (botbuilder maps only ``tenantID``, so Teams' ``tenantId`` is among the extra properties).
    Two that disagree name no tenant, and no tenant is allowed."""
    data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    tenant = data.get("tenant")
    from_channel = tenant.get("id") if isinstance(tenant, dict) else None
    conversation = activity.conversation
    extra = getattr(conversation, "additional_properties", None) or {}
    from_conversation = getattr(conversation, "tenant_id", None) or extra.get("tenantId")
    named = {str(t) for t in (from_channel, from_conversation) if t}
    return named.pop() if len(named) == 1 else ""


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


class TeamsPeople:
    """Who a Teams user is (through the roster), and names for cards."""

    def __init__(
        self, directory: Directory, allowed_tenants: Iterable[str], roster_fallback: str | None
    ) -> None:
        self.directory = directory
        self.allowed_tenants = frozenset(allowed_tenants)
        self.roster_fallback = roster_fallback
        """The approvals channel's conversation id: its team's roster answers for 1:1 chats."""
        self._members: KeptAnswers[tuple[str, str], TeamsChannelAccount] = KeptAnswers(
            MEMBER_KEEP_S, MEMBERS_KEPT
        )

    async def member(self, turn: TurnContext, member_id: str) -> TeamsChannelAccount:
        """The roster's answer for ``member_id``, kept :data:`MEMBER_KEEP_S` per tenant."""
        key = (tenant_of(turn.activity), member_id)
        kept = self._members.get(key)
        if kept is not None:
            return kept
        found = await self._look_up(turn, member_id)
        self._members.keep(key, found)
        return found

    async def _look_up(self, turn: TurnContext, member_id: str) -> TeamsChannelAccount:
        try:
            return await TeamsInfo.get_member(turn, member_id)
        except ErrorResponseException as exc:
            if status_of(exc) != 404 or not self.roster_fallback:
                return self._unavailable(exc)
        except Exception as exc:
            return self._unavailable(exc)
        try:
            client: Any = turn.turn_state.get(turn.adapter.BOT_CONNECTOR_CLIENT_KEY)
            found = await client.conversations.get_conversation_member(
                self.roster_fallback, member_id
            )
            return TeamsChannelAccount().deserialize(
                dict(found.serialize(), **(found.additional_properties or {}))
            )
        except ErrorResponseException as exc:
            if status_of(exc) == 404:
                raise IdentityUnsure("Teams does not know this user.") from exc
            return self._unavailable(exc)
        except Exception as exc:
            return self._unavailable(exc)

    def _unavailable(self, exc: BaseException) -> TeamsChannelAccount:
        if status_of(exc) == 404:
            raise IdentityUnsure("Teams does not know this user.") from exc
        log.warning("teams_member_lookup_failed", error=type(exc).__name__, status=status_of(exc))
        raise Unavailable(TEAMS_DOWN) from exc

    async def chat_user(self, turn: TurnContext, member_id: str, *, who: str = "You") -> ChatUser:
        member = await self.member(turn, member_id)
        if member.tenant_id and member.tenant_id not in self.allowed_tenants:
            raise IdentityUnsure(FOREIGN.format(who=who))
        return chat_user_from(member, self.allowed_tenants)

    async def names(self, principal_ids: Iterable[str | None]) -> dict[str, str]:
        names: dict[str, str] = {}
        for pid in {p for p in principal_ids if p}:
            try:
                principal = await self.directory.get(pid)
            except Exception as exc:
                log.warning("directory_unavailable", error=type(exc).__name__)
                return names
            if principal is not None:
                names[pid] = principal.name
        return names
