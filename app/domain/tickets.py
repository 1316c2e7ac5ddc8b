"""Tickets that are real: the policy's ``tickets:`` section and the checks a ticket must pass.

Before a request opens, the ticket the agent quoted is read from the ticket system (a
:class:`Ticket`, through the ``TicketSystem`` port) and must exist, be open, be recent enough
and, where the policy says so, have been raised by the person whose account would change and be
assigned to the agent (or the agent's group). It is read again when execution is claimed: a
ticket closed or reassigned meanwhile stops the change. Afterwards twokey writes what happened
back onto the ticket (:func:`ticket_note`). Pure: the adapters read and write, this module
decides and words, naming the ticket's fields as the ticket system calls them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from app.domain.durations import Duration, format_duration
from app.domain.forms import clean_text
from app.domain.models import Principal, Request, RequestState, TicketDetails

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_CLOUD_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def _no_credentials_in(parts: SplitResult) -> None:
    """A user name or password in the URL would be written in the policy file and shown
    wherever the URL is (errors, /readyz): credentials go in the ``*_env`` variables only."""
    if parts.username or parts.password:
        raise ValueError(
            "the URL must not carry a user name or password: put the credentials in the "
            "environment variables the *_env fields name"
        )
    if parts.fragment:
        raise ValueError("the URL must not carry a #fragment")


_OAUTH_FIELDS = ("client_id_env", "client_secret_env", "cloud_id", "token_url", "api_url")

ATLASSIAN_TOKEN_URL = "https://auth.atlassian.com/oauth/token"  # noqa: S105 (a URL)
"""Atlassian's token endpoint for a service account's OAuth 2.0 client credentials."""
ATLASSIAN_API_URL = "https://api.atlassian.com"
"""Atlassian's API gateway: OAuth calls go to ``/ex/jira/{cloudId}/rest/...`` there."""

INCIDENT_STATES = {
    "1": "New",
    "2": "In Progress",
    "3": "On Hold",
    "6": "Resolved",
    "7": "Closed",
    "8": "Canceled",
}
"""ServiceNow's incident states out of the box (the ``state`` field's values)."""

ITEM_STATES = {
    "-5": "Pending",
    "1": "Open",
    "2": "Work in Progress",
    "3": "Closed Complete",
    "4": "Closed Incomplete",
    "7": "Closed Skipped",
}
"""ServiceNow's requested item (``sc_req_item``) states out of the box: the task table's."""

SYSTEM_NAMES = {"servicenow": "ServiceNow", "jira": "Jira Service Management"}

DEFAULT_OPEN_STATES = {"servicenow": ["1", "2", "3"], "jira": ["new", "indeterminate"]}
"""ServiceNow: New, In Progress, On Hold. Jira: status categories To Do and In Progress."""

DEFAULT_ITEM_OPEN_STATES = ["-5", "1", "2"]
"""ServiceNow requested items: Pending, Open, Work in Progress (3 is Closed Complete there,
On Hold on an incident: why requested items have their own list)."""

SERVICENOW_TABLES = {"incident": "INC", "sc_req_item": "RITM"}
"""The ServiceNow tables twokey reads and the number prefix each gives its records out of the
box: a quoted number goes to the table its prefix names, and nowhere else."""

ServiceNowTable = Literal["incident", "sc_req_item"]

SUMMARY_MAX = 300
"""The ticket's short description as captured for the cards (each face cuts again)."""
NAME_MAX = 120


class _Fields(BaseModel):
    """What a ticket system calls the fields the checks read (for refusals that name them)."""

    state: str
    opened: str
    caller: str
    assigned: str


FIELD_NAMES = {
    "servicenow": _Fields(
        state="state",
        opened="opened_at",
        caller="caller_id",
        assigned="assigned_to or assignment_group",
    ),
    "sc_req_item": _Fields(
        state="state",
        opened="opened_at",
        caller="requested_for",
        assigned="assigned_to or assignment_group",
    ),
    "jira": _Fields(state="status", opened="created", caller="reporter", assigned="assignee"),
    "none": _Fields(state="state", opened="opened", caller="caller", assigned="assignee"),
}


def _off_means_none(value: object) -> object:
    """``max_age: off`` (or ``false``) switches the window off for a tier."""
    return None if value is False or (isinstance(value, str) and value.strip() == "off") else value


class TierTicketChecks(BaseModel):
    """One tier's own choice of the checks that may differ by tier; unset: the section's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_age: Annotated[Duration | None, BeforeValidator(_off_means_none)] = None
    """``off`` switches the window off for this tier."""
    caller_must_be_target: bool | None = None
    assigned_to_requester: bool | None = None


class TicketChecks(BaseModel):
    """The checks that apply to one request, its tier's choices resolved."""

    model_config = ConfigDict(frozen=True)

    open_states: tuple[str, ...]
    max_age: int | None
    caller_must_be_target: bool
    assigned_to_requester: bool


class WriteBack(BaseModel):
    """What twokey writes onto the ticket (never a secret or a temporary password)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notes: bool = False
    """A work note (ServiceNow ``work_notes``; a Jira internal comment) on each decision and on
    the outcome: who confirmed, who approved, when, what the identity provider answered."""
    completion_state: str | None = Field(default=None, min_length=1, max_length=40)
    """Set when the change completed: a ServiceNow ``state`` value (e.g. 6, Resolved) or a Jira
    transition id; unset: the ticket's state is left alone."""

    @field_validator("completion_state", mode="before")
    @classmethod
    def _state_as_word(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class TicketSettings(BaseModel):
    """The policy's ``tickets:`` section: whether and how quoted tickets are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: Literal["servicenow", "jira", "none"] = "none"
    """``none``: the ticket is only matched against ``ticket_pattern``."""
    instance_url: str | None = None
    """e.g. https://example.service-now.com or https://example.atlassian.net"""
    username_env: str | None = None
    """ServiceNow: the environment variable holding the API user's name (basic auth)."""
    password_env: str | None = None
    """ServiceNow: the environment variable holding its password (never the password itself)."""
    email_env: str | None = None
    """Jira: the environment variable holding the API user's email (basic auth)."""
    api_token_env: str | None = None
    """Jira: the environment variable holding that user's API token."""
    auth: Literal["basic", "token", "oauth"] | None = None
    """How twokey signs in. ServiceNow: ``basic`` (default; ``username_env``, ``password_env``)
    or ``oauth`` (client credentials). Jira: ``token`` (default; ``email_env``,
    ``api_token_env``) or ``oauth`` (a service account's OAuth 2.0 client credentials)."""
    client_id_env: str | None = None
    """``auth: oauth``: the environment variable holding the OAuth client id."""
    client_secret_env: str | None = None
    """``auth: oauth``: the environment variable holding the OAuth client secret."""
    cloud_id: str | None = None
    """Jira with ``auth: oauth``: the site's cloud id (a UUID); calls then go through
    ``https://api.atlassian.com/ex/jira/{cloud_id}``, as Atlassian requires for OAuth."""
    token_url: str | None = None
    """``auth: oauth``, for tests and egress proxies only: where tokens are asked for instead of
    ServiceNow's ``{instance_url}/oauth_token.do`` or ``https://auth.atlassian.com/oauth/token``."""
    api_url: str | None = None
    """Jira with ``auth: oauth``, for tests and egress proxies only: the API gateway instead of
    ``https://api.atlassian.com``."""
    open_states: list[str] = Field(default_factory=lambda: ["1", "2", "3"], min_length=1)
    """States that count as open. ServiceNow: incident ``state`` values (default 1, 2, 3);
    Jira: status names or status category keys (default new, indeterminate)."""
    servicenow_tables: list[ServiceNowTable] = Field(
        default_factory=lambda: list[ServiceNowTable](["incident"]), min_length=1
    )
    """ServiceNow: the tables a quoted number may be in, chosen by its prefix (INC: incident,
    RITM: sc_req_item, the requested items of the service catalog)."""
    item_open_states: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ITEM_OPEN_STATES), min_length=1
    )
    """ServiceNow requested items: ``state`` values that count as open (default -5, 1, 2)."""
    on_unavailable: Literal["refuse", "strictest_tier"] = "refuse"
    """The ticket system cannot answer when a request opens: refuse it (default), or open it
    in ``fallback_tier``, audited, the cards saying the ticket could not be checked."""
    fallback_tier: str | None = Field(default=None, min_length=1, max_length=64)
    """The tier a request opens in when its ticket could not be checked; required by
    ``on_unavailable: strictest_tier``, and it must demand at least every tier's gates."""
    max_age: Duration | None = None
    """A ticket opened longer ago than this is refused; unset: any age."""
    caller_must_be_target: bool = False
    """The ticket's caller (Jira: reporter) must be the target (for an NHI: its owner)."""
    assigned_to_requester: bool = False
    """The ticket must be assigned to the agent asking, or to one of the agent's groups."""
    one_request_per_ticket: bool = True
    """A ticket backs one twokey request: quoting it again, for anything, is refused."""
    tiers: dict[str, TierTicketChecks] = Field(default_factory=dict)
    """Per tier: ``max_age``, ``caller_must_be_target``, ``assigned_to_requester`` of its own."""
    write_back: WriteBack = Field(default_factory=WriteBack)

    @model_validator(mode="before")
    @classmethod
    def _default_states_of_the_system(cls, data: object) -> object:
        if isinstance(data, Mapping) and data.get("open_states") is None:
            system = data.get("system")
            if isinstance(system, str) and system in DEFAULT_OPEN_STATES:
                return {**data, "open_states": DEFAULT_OPEN_STATES[system]}
        return data

    @field_validator("open_states", "item_open_states", mode="before")
    @classmethod
    def _states_as_words(cls, value: object) -> object:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator(
        "username_env",
        "password_env",
        "email_env",
        "api_token_env",
        "client_id_env",
        "client_secret_env",
    )
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            # Never echo the value: someone may have pasted the secret itself here.
            raise ValueError(
                "this is not an environment variable name: credentials are never written in "
                "the policy file, only the NAME of the variable holding them (e.g. SN_PASSWORD)"
            )
        return value

    @field_validator("instance_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        local = parts.hostname in {"localhost", "127.0.0.1", "::1"}
        if not parts.hostname or parts.scheme not in {"https", "http"}:
            raise ValueError("instance_url must be a URL such as https://example.service-now.com")
        if parts.scheme == "http" and not local:
            raise ValueError("instance_url must use https (plain http only to localhost)")
        if parts.path.strip("/") or parts.query:
            raise ValueError("instance_url is the instance only, without a path")
        _no_credentials_in(parts)
        return value.rstrip("/")

    @field_validator("cloud_id")
    @classmethod
    def _cloud_id(cls, value: str | None) -> str | None:
        if value is not None and not _CLOUD_ID.fullmatch(value):
            raise ValueError(
                "cloud_id is the Jira site's cloud id, a UUID such as "
                "1324a887-45db-1bf4-1e99-ef0ff456d421 (shown at "
                "https://<site>.atlassian.net/_edge/tenant_info); not the site URL and not the "
                "organization id"
            )
        return value.lower() if value is not None else None

    @field_validator("token_url", "api_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        local = parts.hostname in {"localhost", "127.0.0.1", "::1"}
        if not parts.hostname or parts.scheme not in {"https", "http"} or parts.query:
            raise ValueError("must be a URL such as https://proxy.example.com/oauth/token")
        if parts.scheme == "http" and not local:
            raise ValueError("must use https (plain http only to localhost)")
        _no_credentials_in(parts)
        return value.rstrip("/")

    @model_validator(mode="after")
    def _system_is_complete(self) -> TicketSettings:
        self._auth_is_the_systems()
        needs = {
            ("servicenow", "basic"): ("instance_url", "username_env", "password_env"),
            ("servicenow", "oauth"): ("instance_url", "client_id_env", "client_secret_env"),
            ("jira", "token"): ("instance_url", "email_env", "api_token_env"),
            ("jira", "oauth"): ("instance_url", "cloud_id", "client_id_env", "client_secret_env"),
        }.get((self.system, self.auth_method), ())
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            how = f" with auth: {self.auth}" if self.auth is not None else ""
            raise ValueError(f"system {self.system}{how} needs {', '.join(missing)}")
        self._nothing_left_over()
        if self.on_unavailable == "strictest_tier" and self.fallback_tier is None:
            raise ValueError(
                "on_unavailable: strictest_tier needs fallback_tier, the tier a request opens "
                "in when its ticket cannot be checked (name your strictest tier)"
            )
        if self.on_unavailable == "refuse" and self.fallback_tier is not None:
            raise ValueError(
                "fallback_tier is used only with on_unavailable: strictest_tier; remove it, "
                "or set on_unavailable: strictest_tier"
            )
        if self.system != "servicenow" and self.servicenow_tables != ["incident"]:
            raise ValueError("servicenow_tables applies only to system: servicenow")
        return self

    def _auth_is_the_systems(self) -> None:
        """Each system has its own sign-in choices."""
        choices = {"servicenow": ("basic", "oauth"), "jira": ("token", "oauth")}
        if self.auth is not None and self.auth not in choices.get(self.system, ()):
            raise ValueError(
                "auth for system servicenow is basic (username_env, password_env) or oauth "
                "(client_id_env, client_secret_env); for system jira, token (email_env, "
                "api_token_env) or oauth (cloud_id, client_id_env, client_secret_env)"
                if self.system != "none"
                else "auth applies only with system servicenow or jira"
            )

    def _nothing_left_over(self) -> None:
        """No setting of another sign-in left lying around: it would look like it was used."""
        basic = ("username_env", "password_env")
        token = ("email_env", "api_token_env")
        unused = {
            ("servicenow", "basic"): (*_OAUTH_FIELDS, *token),
            ("servicenow", "oauth"): (*basic, *token),
            ("jira", "token"): (*_OAUTH_FIELDS, *basic),
            ("jira", "oauth"): (*basic, *token),
        }.get((self.system, self.auth_method), ())
        if self.system == "servicenow":
            unused += ("cloud_id", "api_url")
        given = [name for name in unused if getattr(self, name) is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} not used by system {self.system} with auth: "
                f"{self.auth_method}; remove {'them' if len(given) > 1 else 'it'} (or choose "
                "the auth that uses it)"
            )

    @property
    def auth_method(self) -> str:
        """The sign-in used: ``auth`` as written, else the system's default (basic, token)."""
        if self.auth is not None:
            return self.auth
        return {"servicenow": "basic", "jira": "token"}.get(self.system, "none")

    @property
    def oauth_token_url(self) -> str:
        """Where client-credentials tokens are asked for (``token_url`` overrides it)."""
        if self.token_url is not None:
            return self.token_url
        if self.system == "jira":
            return ATLASSIAN_TOKEN_URL
        return f"{self.instance_url}/oauth_token.do"

    @property
    def jira_api_base(self) -> str:
        """Jira's REST base: the site itself, or with OAuth the gateway's path for the site."""
        if self.auth_method != "oauth":
            return str(self.instance_url)
        return f"{self.api_url or ATLASSIAN_API_URL}/ex/jira/{self.cloud_id}"

    @property
    def checked(self) -> bool:
        return self.system != "none"

    @property
    def system_name(self) -> str:
        return SYSTEM_NAMES.get(self.system, self.system)

    @property
    def states_open(self) -> tuple[str, ...]:
        return tuple(self.open_states)

    @property
    def falls_back(self) -> bool:
        """A ticket system that cannot answer opens the request in ``fallback_tier``."""
        return self.on_unavailable == "strictest_tier" and self.fallback_tier is not None

    def checks_for(self, tier: str, table: str = "") -> TicketChecks:
        """The checks a request of ``tier`` gets: the tier's own choices over the section's
        (``table``: a ServiceNow requested item has states of its own)."""
        own = self.tiers.get(tier)
        chosen = own.model_fields_set if own is not None else set()

        def pick(name: str) -> Any:
            return getattr(own, name) if own is not None and name in chosen else getattr(self, name)

        states = self.item_open_states if table == "sc_req_item" else self.open_states
        return TicketChecks(
            open_states=tuple(states),
            max_age=pick("max_age"),
            caller_must_be_target=pick("caller_must_be_target"),
            assigned_to_requester=pick("assigned_to_requester"),
        )

    def in_words(self, tier: str | None = None) -> str:
        """What is checked, for `policy check` and `policy explain` (for one tier if named)."""
        if not self.checked:
            return "not looked up (tickets.system: none); only ticket_pattern applies"
        fields = FIELD_NAMES[self.system]
        checks = self.checks_for(tier or "")
        states = ", ".join(_state_words(s) for s in checks.open_states)
        parts = [
            f"must exist in {self.system_name} ({self.instance_url})",
            f"{fields.state} one of {states}",
        ]
        if checks.max_age is not None:
            parts.append(f"{fields.opened} within {format_duration(checks.max_age)}")
        if checks.caller_must_be_target:
            parts.append(f"{fields.caller} is the target (an NHI's owner)")
        if checks.assigned_to_requester:
            parts.append(f"{fields.assigned} is the agent or the agent's group")
        if self.one_request_per_ticket:
            parts.append("used by one request only")
        if tier is None and self.tiers:
            parts.append(f"tiers with their own checks: {', '.join(sorted(self.tiers))}")
        if self.system == "servicenow" and "sc_req_item" in self.servicenow_tables:
            item_states = ", ".join(_state_words(s, "sc_req_item") for s in self.item_open_states)
            parts.append(f"requested items (RITM) state one of {item_states}")
        if self.auth_method == "oauth":
            parts.append("signs in with OAuth client credentials")
        if self.write_back.notes:
            parts.append("each decision and the outcome written back as a work note")
        if self.falls_back:
            parts.append(
                f"{self.system_name} unreachable: opens in tier {self.fallback_tier}, audited"
            )
        else:
            parts.append(f"{self.system_name} unreachable: refused")
        return "; ".join(parts)


class Ticket(BaseModel):
    """A ticket as the ticket system holds it (only the fields the checks and cards read)."""

    model_config = ConfigDict(frozen=True)

    number: str
    state: str
    state_category: str = ""
    """Jira's status category key (new, indeterminate, done); empty for ServiceNow."""
    opened_at: datetime | None = None
    caller_email: str = ""
    caller_user_name: str = ""
    caller_name: str = ""
    """The caller's (Jira: reporter's) display name, for the cards only: never matched on."""
    assigned_to_email: str = ""
    assigned_to_user_name: str = ""
    assignment_group: str = ""
    short_description: str = ""
    ref: str = ""
    """The system's own id of the record (ServiceNow ``sys_id``, Jira issue id) for writing."""
    table: str = ""
    """ServiceNow: the table it was read from (incident, sc_req_item); empty for Jira."""


def servicenow_table(number: str, tables: Sequence[str]) -> str | None:
    """The ServiceNow table a quoted number is looked up in: the only one read, or the one its
    prefix names (INC0010001: incident, RITM0010001: sc_req_item); None when it names none of
    them (such a number is never looked up anywhere else)."""
    if len(tables) == 1:
        return tables[0]
    upper = number.upper()
    for table in tables:
        prefix = SERVICENOW_TABLES.get(table, "")
        rest = upper[len(prefix) :]
        if prefix and upper.startswith(prefix) and rest[:1].isdigit():
            return table
    return None


def _captured(text: str, limit: int) -> str:
    """Outside text kept for a card: control and format characters dropped, cut to ``limit``.
    Escaping is each face's job (Slack mrkdwn, Adaptive Card Markdown), done when shown."""
    kept = clean_text(text)
    return kept if len(kept) <= limit else kept[: limit - 1].rstrip() + "…"


def details_of(ticket: Ticket, system: str) -> TicketDetails:
    """What the approval card shows of a checked ticket: what the agent was asked, by whom."""
    return TicketDetails(
        system=system,
        summary=_captured(ticket.short_description, SUMMARY_MAX),
        caller=_captured(ticket.caller_name, NAME_MAX),
        group=_captured(ticket.assignment_group, NAME_MAX),
    )


def unchecked_details(
    system: str, number: str, tier: str, *, fallback: bool = True
) -> TicketDetails:
    """A request opened without its ticket checked (``on_unavailable: strictest_tier``), in
    the fallback tier (or, for break-glass, its own tier)."""
    where = "the fallback tier" if fallback else "its break-glass tier"
    return TicketDetails(
        system=system,
        unchecked=(
            f"Ticket {_captured(number, 64)} could not be checked: {system} did not answer "
            f"when the request opened, so it opened in {where} {_captured(tier, 64)}. "
            "Make sure the ticket is real before approving."
        ),
    )


def _state_words(state: str, table: str = "") -> str:
    name = (ITEM_STATES if table == "sc_req_item" else INCIDENT_STATES).get(state)
    return f"{state} ({name})" if name else state


def _is_open(ticket: Ticket, open_states: tuple[str, ...]) -> bool:
    wanted = {s.casefold() for s in open_states}
    return ticket.state.casefold() in wanted or (
        bool(ticket.state_category) and ticket.state_category.casefold() in wanted
    )


def ticket_problem(
    settings: TicketSettings,
    ticket: Ticket,
    person: Principal,
    now: float,
    *,
    requester: Principal | None = None,
    tier: str = "",
    at_claim: bool = False,
) -> str | None:
    """Why ``ticket`` cannot back a request about ``person`` (the target or an NHI's owner) by
    ``requester``, in words naming the ticket's field; None when it can.

    ``at_claim``: the re-check before the change runs, where the ticket must still be open,
    the target's and assigned to the agent; its age counted when the request opened."""
    checks = settings.checks_for(tier, ticket.table)
    fields = FIELD_NAMES[ticket.table if ticket.table in FIELD_NAMES else settings.system]
    number = ticket.number
    if not _is_open(ticket, checks.open_states):
        wanted = ", ".join(_state_words(s, ticket.table) for s in checks.open_states)
        state = _state_words(ticket.state, ticket.table)
        return (
            f"Ticket {number} is not open: its {fields.state} is {state}, "
            f"and a request needs one of {wanted}. Reopen it or quote an open ticket."
        )
    if checks.max_age is not None and not at_claim:
        if ticket.opened_at is None:
            return f"Ticket {number} has no {fields.opened}, so its age cannot be checked."
        age = now - ticket.opened_at.timestamp()
        if age > checks.max_age:
            opened = ticket.opened_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            return (
                f"Ticket {number} was opened too long ago: its {fields.opened} is {opened}, "
                f"more than {format_duration(checks.max_age)} ago. Quote a current ticket."
            )
    if checks.caller_must_be_target and not _same_person(ticket, person):
        return (
            f"Ticket {number}'s caller ({fields.caller}) is not {person.name}, the person whose "
            "account would change: the ticket must have been raised by them."
        )
    if checks.assigned_to_requester and requester is not None:
        if not _assigned_to(ticket, requester):
            return (
                f"Ticket {number} is not assigned to {requester.name}: its {fields.assigned} "
                f"names neither {requester.name} nor one of {requester.name}'s groups. Assign "
                "the ticket to yourself or your group first."
            )
    return None


def _same_person(ticket: Ticket, person: Principal) -> bool:
    """The caller's email, or user name, equals the person's email (case-insensitive)."""
    email = (person.email or "").strip().casefold()
    if not email:
        return False
    known = {ticket.caller_email.strip().casefold(), ticket.caller_user_name.strip().casefold()}
    return email in known


def _assigned_to(ticket: Ticket, requester: Principal) -> bool:
    """Assigned to the agent (email or user name) or to a directory group the agent is in."""
    email = (requester.email or "").strip().casefold()
    people = {ticket.assigned_to_email.strip().casefold(), ticket.assigned_to_user_name.strip()}
    people = {p.casefold() for p in people if p}
    if email and email in people:
        return True
    group = ticket.assignment_group.strip().casefold()
    return bool(group) and group in {g.casefold() for g in requester.groups}


# ---- write-back: what twokey leaves on the ticket -------------------------------------------

FINISHED_NOTES = {
    RequestState.DENIED: "denied",
    RequestState.REJECTED_BY_OWNER: 'rejected by the account owner ("this wasn\'t me")',
    RequestState.CANCELLED: "cancelled",
    RequestState.EXPIRED: "expired before it was decided; nothing was changed",
    RequestState.COMPLETED: "completed: the change was made",
    RequestState.FAILED: "failed",
    RequestState.UNKNOWN: "ended with an unknown outcome: the change may or may not have happened",
    RequestState.INTERRUPTED: "was interrupted: the change may or may not have happened",
}


def milestones(request: Request) -> list[str]:
    """What has happened to ``request`` that deserves a note, oldest first: ``opened``,
    ``confirmed``, ``approved:<approver>`` and its final state. Each is written once."""
    seen = ["opened"]
    if request.owner_confirmed_at is not None:
        seen.append("confirmed")
    seen += [f"approved:{a.approver_id}" for a in request.approvals]
    if request.state in FINISHED_NOTES:
        seen.append(request.state.value)
    return seen


def _when(ms: int | None) -> str:
    if ms is None:
        return "(time not recorded)"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def plain(text: str, limit: int = 300) -> str:
    """Typed or provider text made inert for a ticket journal: no control characters, no
    ServiceNow ``[code]`` markup (square brackets become round), bounded."""
    kept = clean_text(text).replace("[", "(").replace("]", ")")
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


def ticket_note(request: Request, milestone: str, names: Mapping[str, str]) -> str:
    """The work note for one milestone: who, when, what; never a secret (a request holds none)."""

    def who(principal_id: str | None) -> str:
        if not principal_id:
            return "twokey"
        name = names.get(principal_id, "")
        return plain(f"{name} ({principal_id})" if name else principal_id, 120)

    head = (
        f"twokey {request.id}: {request.action.label} for {plain(request.target_name, 120)} "
        f"(tier {request.plan.tier})"
    )
    if milestone == "opened":
        line = f"requested by {who(request.requester_id)} at {_when(request.created_at)}"
        gates = [f"{request.plan.approvals_needed} approval(s)"]
        if request.plan.owner_confirmation:
            gates.insert(0, "the owner's confirmation")
        return f"{head}: {line}; waiting for {' and '.join(gates)}."
    if milestone == "confirmed":
        return (
            f"{head}: the account owner {who(request.owner_id)} confirmed they asked for it, "
            f"at {_when(request.owner_confirmed_at)}."
        )
    if milestone.startswith("approved:"):
        approver = milestone.split(":", 1)[1]
        at = next((a.approved_at for a in request.approvals if a.approver_id == approver), None)
        return f"{head}: approved by {who(approver)} at {_when(at)}."
    return _final_note(request, head, who)


def _final_note(request: Request, head: str, who: Any) -> str:
    how = FINISHED_NOTES.get(request.state, request.state.value)
    parts = [f"{head}: {how}"]
    if request.state in (RequestState.DENIED, RequestState.CANCELLED):
        parts = [f"{parts[0]} by {who(request.decided_by)} at {_when(request.decided_at)}"]
        if request.decision_reason:
            parts.append(f"reason: {plain(request.decision_reason)}")
    elif request.state is RequestState.REJECTED_BY_OWNER:
        parts.append(f"at {_when(request.decided_at)}; security was alerted")
    elif request.state is not RequestState.EXPIRED:
        approvers = ", ".join(who(a.approver_id) for a in request.approvals) or "none needed"
        confirmed = (
            f"confirmed by {who(request.owner_id)} at {_when(request.owner_confirmed_at)}"
            if request.owner_confirmed_at is not None
            else "no owner confirmation needed"
        )
        parts += [
            confirmed,
            f"approved by {approvers}",
            f"finished at {_when(request.finished_at)}",
        ]
        if request.outcome_detail:
            parts.append(f"identity provider: {plain(request.outcome_detail)}")
    return "; ".join(parts) + "."


def ticket_tier_problems(data: Mapping[str, Any], tiers: Mapping[str, Any] | None) -> list[Any]:
    """Tiers named under ``tickets.tiers`` must be tiers the policy has (a typo would silently
    leave that tier with the section's checks)."""
    section = data.get("tickets")
    if not isinstance(section, Mapping) or tiers is None:
        return []
    named = section.get("tiers")
    known = ", ".join(map(str, tiers))
    problems: list[Any] = [
        (("tickets", "tiers", name), f"unknown tier {name!r}; tiers: {known}")
        for name in (named if isinstance(named, Mapping) else ())
        if name not in tiers
    ]
    fallback = section.get("fallback_tier")
    if isinstance(fallback, str) and fallback not in tiers:
        problems.append(
            (("tickets", "fallback_tier"), f"unknown tier {fallback!r}; tiers: {known}")
        )
    return problems


# ---- what people are told (the service raises or records these) -----------------------------


def ticket_in_use(number: str, other_request: str) -> str:
    return (
        f"Ticket {number} already backs twokey request {other_request}: one ticket, one request. "
        "Quote the ticket raised for this call (or open a new one)."
    )


def ticket_gone(system: str, number: str) -> str:
    return f"ticket {number} is no longer in {system}, so the change was stopped"


def ticket_unreadable(system: str, number: str) -> str:
    return f"{system} could not be reached to re-check ticket {number}, so the change was stopped"


def ticket_people_gone(number: str) -> str:
    return (
        f"the agent or the account owner of ticket {number} is no longer in the directory, "
        "so the change was stopped"
    )


def ticket_changed(problem: str) -> str:
    """A ticket closed or reassigned between the opening and the claim: the card says why."""
    return f"the ticket changed since the request opened, so the change was stopped. {problem}"
