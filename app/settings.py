"""Settings from the environment (pydantic-settings); imports nothing of ours.

Every setting is documented in README.md and .env.example. Secrets are SecretStr so they never
appear in a repr or a log line.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DOMAIN = re.compile(r"(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}")
_PUBLIC_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)*/?")
"""TWOKEY_PUBLIC_URL's path: nothing a browser would rewrite, nor a cookie attribute (;)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    @field_validator(
        "audit_keys_previous", "slack_allowed_teams", "teams_allowed_tenants", mode="before"
    )
    @classmethod
    def _json_list(cls, value: Any, info: Any) -> Any:
        """A list setting is a JSON list, decoded here (not by pydantic-settings before any
        validation), so a malformed one is reported beside every other mistake, not alone."""
        if not isinstance(value, str):
            return value
        if not value.strip():
            return []
        alias = cls.model_fields[info.field_name].alias or info.field_name
        example = _LIST_EXAMPLES.get(alias, '["..."]')
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if not isinstance(decoded, list):
            raise ValueError(f"should be a JSON list, e.g. {alias}='{example}'")
        return decoded

    # where to listen
    host: str = Field(default="127.0.0.1", alias="HOST")
    port: int = Field(default=3000, ge=1, le=65535, alias="PORT")

    # state
    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    """Unset: an embedded Valkey server with its data under TWOKEY_DATA_DIR."""
    data_dir: Path = Field(default=Path(".twokey"), alias="TWOKEY_DATA_DIR")
    namespace: str = Field(
        default="tk", pattern=r"^[a-z][a-z0-9_-]{0,15}$", alias="TWOKEY_NAMESPACE"
    )
    accept_eviction_risk: bool = Field(default=False, alias="TWOKEY_ACCEPT_EVICTION_RISK")

    # policy, directory, audit
    policy_path: Path | None = Field(default=None, alias="TWOKEY_POLICY")
    directory_path: Path | None = Field(default=None, alias="TWOKEY_DIRECTORY")
    audit_key: SecretStr | None = Field(default=None, alias="TWOKEY_AUDIT_KEY")
    """HMAC key of the audit chain. Unset: a key generated once under TWOKEY_DATA_DIR."""
    audit_keys_previous: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, alias="TWOKEY_AUDIT_KEYS_PREVIOUS"
    )
    """Keys that sealed before TWOKEY_AUDIT_KEY (JSON list, newest first): verified with only."""
    directory_cache_ttl: float = Field(
        default=60.0, ge=0, le=3600, alias="TWOKEY_DIRECTORY_CACHE_TTL"
    )
    """Seconds a directory connector's answer is kept in Redis; 0 turns the cache off."""

    # forwarding sealed audit events to a SIEM (app/audit/forward.py); unset URL: not forwarded
    audit_forward_url: str | None = Field(default=None, alias="TWOKEY_AUDIT_FORWARD_URL")
    """syslog+tls://host:port, splunk-hec://host:port or https://host/path (a webhook)."""
    audit_forward_token: SecretStr | None = Field(default=None, alias="TWOKEY_AUDIT_FORWARD_TOKEN")
    audit_forward_secret: SecretStr | None = Field(
        default=None, alias="TWOKEY_AUDIT_FORWARD_SECRET"
    )
    audit_forward_ca_file: Path | None = Field(default=None, alias="TWOKEY_AUDIT_FORWARD_CA_FILE")
    audit_forward_batch: int = Field(default=100, ge=1, le=1000, alias="TWOKEY_AUDIT_FORWARD_BATCH")

    # step-up one-time codes by email (SMTP); unset host: the email_code verifier cannot start
    smtp_host: str | None = Field(default=None, alias="TWOKEY_SMTP_HOST")
    smtp_port: int = Field(default=587, ge=1, le=65535, alias="TWOKEY_SMTP_PORT")
    smtp_from: str = Field(default="twokey@localhost", alias="TWOKEY_SMTP_FROM")
    smtp_starttls: bool = Field(default=True, alias="TWOKEY_SMTP_STARTTLS")
    smtp_username: str | None = Field(default=None, alias="TWOKEY_SMTP_USERNAME")
    smtp_password: SecretStr | None = Field(default=None, alias="TWOKEY_SMTP_PASSWORD")

    # step-up one-time codes by text message: the customer's SMS gateway behind a signed
    # webhook (app/sms.py checks both at start-up); unset: the sms_code verifier cannot start
    sms_webhook_url: str | None = Field(default=None, alias="TWOKEY_SMS_WEBHOOK_URL")
    sms_webhook_secret: SecretStr | None = Field(default=None, alias="TWOKEY_SMS_WEBHOOK_SECRET")
    sms_webhook_timeout: float = Field(
        default=10.0, gt=0, le=30, alias="TWOKEY_SMS_WEBHOOK_TIMEOUT"
    )

    # step-up by Duo Push (a Duo Auth API application); unset: the duo_push verifier cannot start
    duo_api_host: str | None = Field(default=None, alias="TWOKEY_DUO_API_HOST")
    duo_ikey: str | None = Field(default=None, alias="TWOKEY_DUO_IKEY")
    duo_skey: SecretStr | None = Field(default=None, alias="TWOKEY_DUO_SKEY")

    # where people's browsers reach twokey (approvers' sign-in links: step_up.oidc)
    public_url: str | None = Field(default=None, alias="TWOKEY_PUBLIC_URL")
    """e.g. https://twokey.example.com; https, or plain http on localhost only. A path (e.g.
    https://tools.example.com/twokey) is a reverse proxy's prefix, stripped before twokey."""

    # timing
    sweep_interval: float = Field(default=1.0, gt=0, le=60, alias="TWOKEY_SWEEP_INTERVAL")
    execution_lease: int = Field(default=120, ge=5, le=3600, alias="TWOKEY_EXECUTION_LEASE")
    claim_grace: int = Field(default=5, ge=1, le=600, alias="TWOKEY_CLAIM_GRACE")

    # Slack
    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_URL")
    slack_allowed_teams: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="SLACK_ALLOWED_TEAMS"
    )
    slack_app_id: str | None = Field(default=None, alias="SLACK_APP_ID")
    slack_require_confirmed_email: bool = Field(default=True, alias="SLACK_REQUIRE_CONFIRMED_EMAIL")
    """Only trust a Slack email Slack marks confirmed; set false where SSO manages emails."""

    # Microsoft Teams / Bot Framework
    microsoft_app_id: str | None = Field(default=None, alias="MICROSOFT_APP_ID")
    microsoft_app_password: SecretStr | None = Field(default=None, alias="MICROSOFT_APP_PASSWORD")
    microsoft_app_tenant_id: str | None = Field(default=None, alias="MICROSOFT_APP_TENANT_ID")
    microsoft_app_type: Literal["MultiTenant", "SingleTenant", "UserAssignedMSI"] = Field(
        default="SingleTenant", alias="MICROSOFT_APP_TYPE"
    )
    teams_allowed_tenants: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="TEAMS_ALLOWED_TENANTS"
    )
    """Entra tenant ids whose Teams activities are served; empty: the app's own tenant."""

    # playground
    playground: bool | None = Field(default=None, alias="TWOKEY_PLAYGROUND")
    """Unset: on exactly when no chat credentials are configured (and only on loopback)."""

    demo: bool = Field(default=False, alias="TWOKEY_DEMO")
    """Run the example policy or the sandbox directory beside real chat credentials, on
    purpose (a demo workspace). Without it twokey refuses that combination."""

    log_level: str = Field(default="INFO", alias="LOG_LEVEL")

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: object) -> object:
        """An empty REDIS_URL is a mistake (a secret that did not arrive), not "embedded"."""
        if isinstance(value, str) and not value.strip():
            raise ValueError(
                "REDIS_URL is set but empty: set it to your Redis (e.g. "
                "redis://redis.internal:6379/0), or unset it to run an embedded Valkey "
                "(for trying twokey only)"
            )
        return value

    @field_validator(
        "policy_path", "directory_path", "data_dir", "audit_forward_ca_file", mode="before"
    )
    @classmethod
    def _path_given(cls, value: object) -> object:
        """An empty path would silently mean the current folder."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("is set but empty: give a path, or unset it for the default")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if not isinstance(logging.getLevelName(level), int):
            raise ValueError("should be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        """Links built on it are followed by browsers: https, no path tricks or credentials."""
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        local = parts.hostname in {"localhost", "127.0.0.1", "::1"}
        if not parts.hostname or parts.scheme not in {"https", "http"}:
            raise ValueError("TWOKEY_PUBLIC_URL must be a URL such as https://twokey.example.com")
        if parts.scheme == "http" and not local:
            raise ValueError("TWOKEY_PUBLIC_URL must use https (plain http only on localhost)")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("TWOKEY_PUBLIC_URL takes no query, fragment or credentials")
        if not _PUBLIC_PATH.fullmatch(parts.path) or {".", ".."} & set(parts.path.split("/")):
            # the path becomes cookie Paths and redirect URIs: it must read the same to browsers
            raise ValueError(
                "TWOKEY_PUBLIC_URL's path (a reverse proxy's prefix) takes only letters, digits "
                "and -._~ between single slashes, e.g. https://tools.example.com/twokey"
            )
        return value.strip().rstrip("/")

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None and self.slack_signing_secret is not None

    @property
    def teams_enabled(self) -> bool:
        return self.microsoft_app_id is not None

    @property
    def playground_enabled(self) -> bool:
        if self.playground is not None:
            return self.playground
        return not self.any_chat_credential

    def incomplete_chat_credentials(self) -> str | None:
        """A chat channel half configured, or given what cannot be its credential (a token of
        another kind, swapped tokens, an id that is no GUID): without this, Slack or Teams would
        stay off, or fail at the first message, while the operator believes it is served. None
        when nothing is amiss. Never quotes a value: it may be a secret."""
        return (
            self.incomplete_slack_credentials()
            or self.incomplete_teams_credentials()
            or self.mistyped_slack_tokens()
            or self.mistyped_teams_ids()
        )

    def mistyped_slack_tokens(self) -> str | None:
        bot = self.slack_bot_token.get_secret_value() if self.slack_bot_token else None
        app = self.slack_app_token.get_secret_value() if self.slack_app_token else None
        if bot is not None and bot.startswith("xapp-") and (app is None or app.startswith("xox")):
            return (
                "SLACK_BOT_TOKEN holds an app-level token (xapp-...): it belongs in "
                "SLACK_APP_TOKEN, and SLACK_BOT_TOKEN takes the Bot User OAuth Token (xoxb-..., "
                "your Slack app's OAuth & Permissions page)."
            )
        if bot is not None and not bot.startswith(("xoxb-", "xoxe.xoxb-")):
            kind = "a user token (xoxp-...)" if bot.startswith("xoxp-") else "not a bot token"
            return (
                f"SLACK_BOT_TOKEN is {kind}: twokey acts as its own bot, so set it to the Bot "
                "User OAuth Token, which starts xoxb- (your Slack app's OAuth & Permissions page)."
            )
        if app is not None and not app.startswith("xapp-"):
            return (
                "SLACK_APP_TOKEN is not an app-level token: Socket Mode needs one starting "
                "xapp- with the connections:write scope (your Slack app's Basic Information "
                "page, App-Level Tokens)."
            )
        return None

    def mistyped_teams_ids(self) -> str | None:
        guid = "a GUID like 00000000-0000-0000-0000-000000000000"
        if self.microsoft_app_id is not None and not _GUID.fullmatch(self.microsoft_app_id):
            return (
                f"MICROSOFT_APP_ID should be the bot's Microsoft App ID, {guid} (the Azure Bot's "
                "Configuration page; docs/teams.md)."
            )
        tenant = self.microsoft_app_tenant_id
        if tenant is not None and not (_GUID.fullmatch(tenant) or _DOMAIN.fullmatch(tenant)):
            return (
                f"MICROSOFT_APP_TENANT_ID should be your Microsoft Entra tenant id, {guid} "
                "(or its domain, e.g. contoso.onmicrosoft.com)."
            )
        if any(not _GUID.fullmatch(t) for t in self.teams_allowed_tenants):
            return (
                f"TEAMS_ALLOWED_TENANTS should list tenant ids, each {guid}: Teams names a "
                "tenant by its id, so anything else would never match."
            )
        return None

    def incomplete_slack_credentials(self) -> str | None:
        slack_set = [
            name
            for name, value in (
                ("SLACK_BOT_TOKEN", self.slack_bot_token),
                ("SLACK_SIGNING_SECRET", self.slack_signing_secret),
                ("SLACK_APP_TOKEN", self.slack_app_token),
            )
            if value is not None
        ]
        if slack_set and self.slack_bot_token is None:
            return (
                f"{' and '.join(slack_set)} {'is' if len(slack_set) == 1 else 'are'} set but "
                "SLACK_BOT_TOKEN is not: Slack needs the Bot User OAuth Token (xoxb-..., on your "
                "Slack app's OAuth & Permissions page) too; set it, or unset "
                f"{' and '.join(slack_set)} to run without Slack."
            )
        if slack_set == ["SLACK_BOT_TOKEN"]:
            return (
                "SLACK_BOT_TOKEN is set but neither SLACK_SIGNING_SECRET (Slack over HTTP: "
                "your Slack app's Basic Information page) nor SLACK_APP_TOKEN (Socket Mode, "
                "xapp-...) is: set one of them, or unset SLACK_BOT_TOKEN to run without Slack."
            )
        return None

    def incomplete_teams_credentials(self) -> str | None:
        if self.microsoft_app_password is not None and self.microsoft_app_id is None:
            return (
                "MICROSOFT_APP_PASSWORD is set but MICROSOFT_APP_ID is not: set it to the bot's "
                "Microsoft App ID (docs/teams.md), or unset MICROSOFT_APP_PASSWORD to run "
                "without Teams."
            )
        if (
            self.microsoft_app_id is not None
            and self.microsoft_app_password is None
            and self.microsoft_app_type != "UserAssignedMSI"
        ):
            return (
                "MICROSOFT_APP_ID is set but MICROSOFT_APP_PASSWORD is not: create a client "
                "secret for the bot's app registration (docs/teams.md) and set it, or unset "
                "MICROSOFT_APP_ID to run without Teams."
            )
        return None

    @property
    def any_chat_credential(self) -> bool:
        """Any Slack or Teams credential, even an incomplete set: the playground stays off."""
        return any(
            value is not None
            for value in (
                self.slack_bot_token,
                self.slack_signing_secret,
                self.slack_app_token,
                self.microsoft_app_id,
                self.microsoft_app_password,
            )
        )


# ---- a bad setting, told in words -----------------------------------------------------------

_LIST_EXAMPLES = {
    "SLACK_ALLOWED_TEAMS": '["T0123456"]',
    "TEAMS_ALLOWED_TENANTS": '["00000000-0000-0000-0000-000000000000"]',
    "TWOKEY_AUDIT_KEYS_PREVIOUS": '["<the previous key>"]',
}
_PARSED_FIELD = re.compile(r'error parsing value for field "(\w+)" from source "(\w+)"')
_NAMESPACE_WORDS = (
    "should be 1 to 16 characters: a lower-case letter, then lower-case letters, digits, "
    "'_' or '-' (e.g. tk)"
)


def _alias(field: str) -> str:
    info = Settings.model_fields.get(field)
    return info.alias if info is not None and info.alias else field.upper()


def _bounds(name: str) -> str:
    """`` (at least 1, at most 65535)``: the range a number setting takes, as declared."""
    info = next((f for f in Settings.model_fields.values() if f.alias == name), None)
    words = []
    for rule in info.metadata if info is not None else ():
        for attribute, word in (("ge", "at least"), ("gt", "more than"), ("le", "at most")):
            if getattr(rule, attribute, None) is not None:
                words.append(f"{word} {getattr(rule, attribute)}")
    return f" ({', '.join(words)})" if words else ""


def _dotenv() -> dict[str, str | None]:
    """The ``.env`` file in the folder twokey runs in, as Settings reads it (a bare name: None)."""
    from dotenv import dotenv_values

    try:
        return {k: v for k, v in dotenv_values(".env").items() if k}
    except (OSError, UnicodeDecodeError):
        return {}


def environment() -> dict[str, str]:
    """The environment as twokey's settings see it: ``.env`` beneath the process environment.
    A secret the policy names with ``*_env`` (a connector's token, the step-up client secret)
    may then live in either, like any setting."""
    found = {k: v for k, v in _dotenv().items() if v is not None}
    found.update(os.environ)
    return found


def names_set() -> list[str]:
    """Every name set in the environment or ``.env`` (a bare name too: someone meant it)."""
    return [*os.environ, *_dotenv()]


OUR_PREFIXES = ("TWOKEY_", "SLACK_", "MICROSOFT_", "TEAMS_", "REDIS_")
"""Where a name set in the environment or .env is checked for a misspelt setting."""


def misspelt_settings(names: Iterable[str]) -> list[str]:
    """Names set (in the environment or .env) that are near misses of a setting left unset.

    A misspelt name is not read, so its setting would silently keep its default: the example
    policy, an embedded Redis, a generated audit key. Only close matches are named (names of
    other tools, and the secrets a policy names with ``*_env``, are left alone)."""
    known = sorted(f.alias for f in Settings.model_fields.values() if f.alias)
    given = {name.upper() for name in names}
    problems = []
    for name in sorted(given - set(known)):
        if not name.startswith(OUR_PREFIXES):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close and close[0] not in given:
            problems.append(
                f"{name} is not a setting twokey knows: did you mean {close[0]}? (as it is, "
                f"{close[0]} is not set and keeps its default)"
            )
    return problems


def setting_problems(exc: ValidationError | SettingsError) -> list[str]:
    """What is wrong with the settings, one sentence each, naming the variable and what it
    takes. Never the value given: it may be a secret."""
    if isinstance(exc, SettingsError):
        found = _PARSED_FIELD.search(str(exc))
        if found is None:
            return [f"a setting cannot be read: {exc}"]
        name = _alias(found.group(1))
        where = " (in .env)" if "DotEnv" in found.group(2) else ""
        example = _LIST_EXAMPLES.get(name, '["..."]')
        return [f"{name}{where} should be a JSON list, e.g. {name}='{example}'"]
    problems = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else "a setting"
        kind, message = error["type"], str(error["msg"])
        if kind in ("int_parsing", "int_type", "int_from_float"):
            words = "should be a whole number" + _bounds(name)
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            whole = str(error.get("input", "")).lstrip("-").isdigit()
            words = f"should be a {'whole ' if whole else ''}number" + _bounds(name)
        elif kind in ("float_parsing", "float_type"):
            words = "should be a number" + _bounds(name)
        elif kind in ("bool_parsing", "bool_type"):
            words = "should be true or false"
        elif kind == "string_pattern_mismatch" and name == "TWOKEY_NAMESPACE":
            words = _NAMESPACE_WORDS
        elif kind == "value_error":
            words = message.removeprefix("Value error, ")
        else:
            words = message.removeprefix("Input ")
        problems.append(words if words.startswith(name) else f"{name} {words}")
    return problems
