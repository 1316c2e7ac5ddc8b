"""Bot Framework authentication, both ways, kept inside the Teams folder.

Inbound: every activity's bearer token is checked by botbuilder's ``authenticate_request``
(signature against the channel's published keys, issuer, audience = our app id, the
``serviceurl`` claim = the activity's serviceUrl, Teams endorsement) *before* anything else
runs, and any failure of any kind is a refusal (the HTTP layer answers 401, never 500). On top of
botbuilder: a claims validator that refuses every token not issued by the Bot Framework channel
(Emulator-style Entra tokens, whose ``appid`` is the bot itself, and skill tokens), and a check of
our own that the activity names a serviceUrl at all (botbuilder skips the claim check without one).

Outbound: the connector token is fetched asynchronously (client credentials, aiohttp) and cached
until shortly before it expires, instead of botbuilder building a new MSAL app and fetching a
token synchronously on the event loop at every turn. Connector clients are kept too, one per
service URL, audience and token (:class:`ConnectorClients`): botbuilder builds two new msrest
clients on every turn (about 4 ms of CPU each, most of it msrest drawing up its retry list), and
a client kept forever would outlive its token. Each kept client gets :func:`bounded_retries`.
The OpenID metadata and keys botbuilder fetches with blocking ``requests`` are fetched in a
worker thread.

Where the Bot Framework lives (login, OpenID metadata, issuer, scope) is :class:`Endpoints`:
the public cloud in production; tests point it at local stand-ins, never switching checks off.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
import structlog
from botbuilder.schema import Activity
from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import (
    AuthenticateRequestResult,
    AuthenticationConfiguration,
    BotFrameworkAuthentication,
    ClaimsIdentity,
    ConnectorFactory,
    ServiceClientCredentialsFactory,
)
from botframework.connector.auth.jwt_token_extractor import (
    JwtTokenExtractor,
    _OpenIdConfig,
    _OpenIdMetadata,
)
from botframework.connector.auth.managedidentity_app_credentials import (
    ManagedIdentityAppCredentials,
)
from jwt.algorithms import RSAAlgorithm
from msrest.authentication import Authentication
from prometheus_client import Counter
from urllib3 import Retry

from app.settings import Settings

log = structlog.get_logger("twokey.teams.auth")

PUBLIC_LOGIN = "https://login.microsoftonline.com"
PUBLIC_METADATA = "https://login.botframework.com/v1/.well-known/openidconfiguration"
PUBLIC_ISSUER = "https://api.botframework.com"
PUBLIC_SCOPE = "https://api.botframework.com"
MULTI_TENANT_AUTHORITY = "botframework.com"
TOKEN_EARLY_S = 300
"""A cached connector token is replaced this long before it expires."""
TOKEN_TIMEOUT_S = 10
SILENT_RETRIES = 1
"""msrest's own retries of a call (connection failure, 502/503/504 on GET/PUT/DELETE)."""
CONNECTOR_TIMEOUT_S = 10
"""The longest one Bot Connector call made here (not through msrest) may take."""
QUICK_RETRY_S = 0.2
"""The pause before the one quick retry of a connection failure or a 502/503/504."""
CLIENTS_KEPT = 64
"""Connector clients kept (service URL x audience); the least recently used goes first."""
RETIRE_AFTER_S = 120.0
"""A replaced connector client is closed this long after (a call still under way on it ends
first: msrest gives a call at most 100 s)."""
USER_AGENT = "twokey (botbuilder-python)"

REFUSED = Counter(
    "twokey_teams_refused_total",
    "Teams activities refused before any work, by reason.",
    ["reason"],
)


class TeamsAuthError(Exception):
    """An inbound activity is not provably from the Bot Framework channel for this bot."""


@dataclass(frozen=True)
class Endpoints:
    """Where the Bot Framework's identity services are (the public cloud by default)."""

    login_base: str = PUBLIC_LOGIN
    """Entra login host; the token URL is ``<base>/<tenant>/oauth2/v2.0/token``."""
    openid_metadata: str = PUBLIC_METADATA
    channel_issuer: str = PUBLIC_ISSUER
    oauth_scope: str = PUBLIC_SCOPE
    emulator_metadata: str = PUBLIC_METADATA
    """Only ever used to *refuse* Emulator tokens after botbuilder verified them."""


@dataclass(frozen=True)
class BotConfig:
    """The attribute names botbuilder's configuration readers expect, mapped explicitly from
    MICROSOFT_* settings (botbuilder reads APP_ID, not MICROSOFT_APP_ID)."""

    APP_ID: str
    APP_PASSWORD: str
    APP_TYPE: str
    APP_TENANTID: str
    TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL: str
    TO_BOT_FROM_CHANNEL_TOKEN_ISSUER: str
    TO_CHANNEL_FROM_BOT_LOGIN_URL: str
    TO_CHANNEL_FROM_BOT_OAUTH_SCOPE: str
    TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL: str
    VALIDATE_AUTHORITY: bool = True


def bot_config(settings: Settings, endpoints: Endpoints) -> BotConfig:
    """The whole parameterized family at once: setting one alone turns the others to None."""
    app_type = settings.microsoft_app_type
    tenant = settings.microsoft_app_tenant_id or ""
    authority = tenant if app_type != "MultiTenant" and tenant else MULTI_TENANT_AUTHORITY
    password = settings.microsoft_app_password
    return BotConfig(
        APP_ID=settings.microsoft_app_id or "",
        APP_PASSWORD=password.get_secret_value() if password is not None else "",
        APP_TYPE=app_type,
        APP_TENANTID=tenant,
        TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL=endpoints.openid_metadata,
        TO_BOT_FROM_CHANNEL_TOKEN_ISSUER=endpoints.channel_issuer,
        TO_CHANNEL_FROM_BOT_LOGIN_URL=f"{endpoints.login_base.rstrip('/')}/{authority}",
        TO_CHANNEL_FROM_BOT_OAUTH_SCOPE=endpoints.oauth_scope,
        TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL=endpoints.emulator_metadata,
    )


# ---- outbound: the connector token -------------------------------------------------------------


class BearerToken(Authentication):
    """msrest credentials that only attach a token fetched beforehand (no I/O when signing)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def signed_session(self, session: Any = None) -> Any:
        session = super().signed_session(session)
        session.headers["Authorization"] = f"Bearer {self._token}"
        return session

    def __repr__(self) -> str:
        return "BearerToken(***)"


class ConnectorTokens(ServiceClientCredentialsFactory):  # type: ignore[misc]
    """Connector credentials from one cached token per scope, fetched without blocking."""

    def __init__(
        self,
        config: BotConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Any = time.monotonic,
    ) -> None:
        self.config = config
        self.session = session
        self.clock = clock
        self._tokens: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetched = 0
        """How many tokens were fetched (tests: a turn reuses the cached one)."""

    async def is_valid_app_id(self, app_id: str) -> bool:
        return bool(self.config.APP_ID) and app_id == self.config.APP_ID

    async def is_authentication_disabled(self) -> bool:
        return False  # never: an unset app id refuses everything instead

    async def create_credentials(
        self, app_id: str, oauth_scope: str, login_endpoint: str, validate_authority: bool
    ) -> Authentication:
        if not await self.is_valid_app_id(app_id):
            raise TeamsAuthError("credentials asked for another app id")
        return BearerToken(
            await self.token(oauth_scope or self.config.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE)
        )

    async def token(self, scope: str) -> str:
        cached = self._tokens.get(scope)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(scope)
            if cached is not None and cached[0] > self.clock():
                return cached[1]
            token, lifetime = await self._fetch(scope)
            self.fetched += 1
            self._tokens[scope] = (self.clock() + max(lifetime - TOKEN_EARLY_S, 30), token)
            return token

    def forget(self, scope: str, token: str) -> None:
        """Drop the cached token for ``scope`` if it is still ``token`` (the Bot Connector
        refused it: revoked, or the app's secret rotated), so the next call fetches a new one."""
        cached = self._tokens.get(scope)
        if cached is not None and cached[1] == token:
            del self._tokens[scope]

    async def _fetch(self, scope: str) -> tuple[str, float]:
        full_scope = scope if scope.endswith("/.default") else f"{scope}/.default"
        if self.config.APP_TYPE == "UserAssignedMSI":
            credentials = ManagedIdentityAppCredentials(self.config.APP_ID, scope)
            token = await asyncio.to_thread(credentials.get_access_token)
            return str(token), _lifetime(str(token))
        url = f"{self.config.TO_CHANNEL_FROM_BOT_LOGIN_URL}/oauth2/v2.0/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self.config.APP_ID,
            "client_secret": self.config.APP_PASSWORD,
            "scope": full_scope,
        }
        try:
            async with self.session.post(
                url, data=form, timeout=aiohttp.ClientTimeout(total=TOKEN_TIMEOUT_S)
            ) as answer:
                body = await answer.json(content_type=None)
                status = answer.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.error("teams_token_failed", error=type(exc).__name__)
            raise TeamsAuthError("could not get a connector token") from exc
        if status != 200 or not isinstance(body, dict) or not body.get("access_token"):
            error = body.get("error") if isinstance(body, dict) else None
            log.error("teams_token_refused", status=status, error=str(error or "")[:60])
            raise TeamsAuthError("the login service refused the bot's credentials")
        lifetime = float(body.get("expires_in") or 3600)
        return str(body["access_token"]), lifetime


def _lifetime(token: str) -> float:
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        return max(float(exp) - time.time(), 0.0) if exp else 3600.0
    except jwt.PyJWTError:
        return 3600.0


# ---- inbound: the activity's token -------------------------------------------------------------


UNKNOWN_KEY_REFRESH_EVERY_S = 60.0
"""At most one signing-key fetch a minute for tokens naming a key not yet known."""


class _MetadataOffLoop(_OpenIdMetadata):  # type: ignore[misc]
    """botbuilder's OpenID metadata cache, refreshed in a worker thread (it uses ``requests``),
    that fetches the keys again when a token names one it does not know.

    botbuilder's own ``_find`` raises IndexError for an unknown key id, so its "refresh when a
    key is missing" never runs: after the Bot Framework rotated its keys every activity was
    refused until the daily refresh. An unknown key now refreshes once, at most once a minute
    (a stream of made-up key ids cannot make the bot hammer the login service), and a key still
    unknown after that is refused as a bad token.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._refreshing = asyncio.Lock()
        self._by_kid: dict[str, Any] = {}
        self._attempts = 0
        self._unknown_refreshed_at = float("-inf")

    async def get(self, key_id: str) -> Any:
        if self.last_updated < datetime.now() - timedelta(days=1):
            await self._refresh_once(self._attempts)
        key = self._find(key_id)
        if key is None and self._may_refresh_for_unknown_key():
            self._unknown_refreshed_at = time.monotonic()
            await self._refresh_once(self._attempts)
            key = self._find(key_id)
        if key is None:
            raise PermissionError("the token names a signing key the channel does not publish")
        return key

    def _may_refresh_for_unknown_key(self) -> bool:
        return time.monotonic() - self._unknown_refreshed_at >= UNKNOWN_KEY_REFRESH_EVERY_S

    async def _refresh_once(self, seen: int) -> None:
        """Refresh unless another turn tried while this one waited: during an outage of the
        login service, turns arriving together share one failed fetch instead of queueing
        behind a ten-second timeout each."""
        async with self._refreshing:
            if self._attempts != seen:
                return
            self._attempts += 1
            await asyncio.to_thread(self._refresh_blocking)

    def _find(self, key_id: str) -> Any:
        return self._by_kid.get(key_id)

    def _refresh_blocking(self) -> None:
        import requests

        response = requests.get(self.url, timeout=10)
        response.raise_for_status()
        keys = requests.get(response.json()["jwks_uri"], timeout=10)
        keys.raise_for_status()
        self.keys = keys.json()["keys"]
        self._by_kid = _parsed_keys(self.keys)
        self.last_updated = datetime.now()


def _parsed_keys(keys: Any) -> dict[str, Any]:
    """The published keys parsed once per fetch (not once per activity), by key id. A key that
    is not an RSA key twokey can read is left out: only a token naming it is refused."""
    parsed: dict[str, Any] = {}
    for key in keys if isinstance(keys, list) else []:
        if not isinstance(key, dict) or not key.get("kid"):
            continue
        try:
            public_key = RSAAlgorithm.from_jwk(json.dumps(key))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        parsed[str(key["kid"])] = _OpenIdConfig(public_key, key.get("endorsements", []))
    return parsed


def keys_fetched_off_loop(*urls: str) -> None:
    """Install a fresh off-loop metadata fetcher for these URLs (botbuilder caches per URL in
    the process): a newly mounted app never trusts keys an earlier one fetched."""
    for url in urls:
        JwtTokenExtractor.metadataCache[url] = _MetadataOffLoop(url)


def channel_claims_only(config: BotConfig) -> Any:
    """A claims validator: only tokens the Bot Framework channel issued to this bot."""

    async def validate(claims_list: list[dict[str, Any]]) -> None:
        for claims in claims_list:
            if claims.get("iss") != config.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER:
                raise PermissionError("not issued by the Bot Framework channel")
            if config.APP_ID and config.APP_ID in (claims.get("appid"), claims.get("azp")):
                raise PermissionError("a token the bot issued to itself (Emulator-style)")
            if claims.get("aud") != config.APP_ID:
                raise PermissionError("wrong audience")

    return validate


class ConnectorClients(ConnectorFactory):  # type: ignore[misc]
    """One connector client per service URL and audience, kept while its token is current.

    Used for every turn (in place of the factory botbuilder makes per request) and by the
    notifier, so a replica builds a client about once an hour per service URL, not twice a turn.
    """

    def __init__(self, config: BotConfig, tokens: ConnectorTokens) -> None:
        self.config = config
        self.tokens = tokens
        self._kept: OrderedDict[tuple[str, str], tuple[str, Any]] = OrderedDict()
        self._retired: list[tuple[float, Any]] = []
        self.built = 0
        """How many clients were built (tests: turns reuse the kept one)."""

    async def create(self, service_url: str, audience: str | None = None) -> Any:
        if self._retired:
            await self._close_retired()
        scope = audience or self.config.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE
        token = await self.tokens.token(scope)
        key = (service_url, scope)
        kept = self._kept.get(key)
        if kept is not None and kept[0] == token:
            self._kept.move_to_end(key)
            return kept[1]
        if kept is not None:
            self._retire(kept[1])
        client = bounded_retries(ConnectorClient(BearerToken(token), base_url=service_url))
        client.config.add_user_agent(USER_AGENT)
        self.built += 1
        self._kept[key] = (token, client)
        self._kept.move_to_end(key)
        while len(self._kept) > CLIENTS_KEPT:
            self._retire(self._kept.popitem(last=False)[1][1])
        return client

    async def close(self) -> None:
        """Close every client, kept or retired (the server is stopping)."""
        everything = [client for _, client in self._kept.values()]
        everything += [client for _, client in self._retired]
        self._kept.clear()
        self._retired.clear()
        for client in everything:
            await _close_client(client)

    def _retire(self, client: Any) -> None:
        """A replaced client keeps its HTTP session (and its sockets) open until
        :data:`RETIRE_AFTER_S` has passed, for calls still under way on it."""
        self._retired.append((self.tokens.clock() + RETIRE_AFTER_S, client))

    async def _close_retired(self) -> None:
        now = self.tokens.clock()
        due = [client for when, client in self._retired if when <= now]
        self._retired = [(when, client) for when, client in self._retired if when > now]
        for client in due:
            await _close_client(client)


async def _close_client(client: Any) -> None:
    try:
        await client.__aexit__(None, None, None)
    except Exception as exc:  # closing is tidying up: never let it fail a call
        log.warning("teams_client_not_closed", error=type(exc).__name__)


@dataclass(frozen=True)
class ConnectorAnswer:
    """The parts of a refused Bot Connector answer its caller acts on (429: Retry-After)."""

    status_code: int
    headers: Mapping[str, str]


class ConnectorRefused(Exception):
    """The Bot Connector answered an error (``response`` as msrest's errors carry it)."""

    def __init__(self, response: ConnectorAnswer) -> None:
        super().__init__(f"http_{response.status_code}")
        self.response = response


async def replace_activity(
    clients: ConnectorClients,
    service_url: str,
    conversation: str,
    activity_id: str,
    activity: Mapping[str, Any],
    audience: str | None = None,
) -> None:
    """PUT /v3/conversations/{id}/activities/{id} (Bot Connector "update activity") with the
    activity as plain JSON on the shared HTTP session.

    A card update is most of what a button press sends, and msrest's model serialization of
    an Adaptive Card costs about a millisecond of CPU per call; the REST call itself is simple.
    The same retry rule as :func:`bounded_retries` (PUT is safe to repeat): one quick retry of a
    connection failure or a 502/503/504; anything else not 2xx raises :class:`ConnectorRefused`
    (a 429 is the caller's to wait out)."""
    path = f"{_conversation_path(conversation)}/activities/{quote(activity_id, safe='')}"
    await _connector_json(clients, "PUT", service_url, path, activity, audience)


async def send_to_conversation(
    clients: ConnectorClients,
    service_url: str,
    conversation: str,
    activity: Mapping[str, Any],
    audience: str | None = None,
) -> str | None:
    """POST /v3/conversations/{id}/activities (Bot Connector "send to conversation") as plain
    JSON on the shared HTTP session; the new activity's id, if the connector named one.

    msrest sends through ``requests`` in a worker thread, which costs more CPU than the message
    itself. A POST is not safe to repeat once sent (Teams would show the message twice), so
    only a connection that never opened is tried once more."""
    answer = await _connector_json(
        clients,
        "POST",
        service_url,
        f"{_conversation_path(conversation)}/activities",
        activity,
        audience,
    )
    sent = answer.get("id") if isinstance(answer, dict) else None
    return str(sent) if sent else None


def _conversation_path(conversation: str) -> str:
    return f"/v3/conversations/{quote(conversation, safe='')}"


async def _connector_json(
    clients: ConnectorClients,
    method: str,
    service_url: str,
    path: str,
    body: Mapping[str, Any],
    audience: str | None,
) -> Any:
    """One Bot Connector REST call with the connector token; its JSON answer (None if empty).

    Retries once, after :data:`QUICK_RETRY_S`: a connection that never opened (any method), and
    for PUT a dropped connection or a 502/503/504, as msrest's bounded policy does. A 401 is
    tried once more with a newly fetched token (the cached one may have been revoked before its
    expiry): nothing was done on a 401, so even a POST is safe to repeat."""
    scope = audience or clients.config.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE
    url = f"{service_url.rstrip('/')}{path}"
    repeatable = method != "POST"
    timeout = aiohttp.ClientTimeout(total=CONNECTOR_TIMEOUT_S)
    retried = token_renewed = False
    while True:
        token = await clients.tokens.token(scope)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with clients.tokens.session.request(
                method, url, json=body, headers=headers, timeout=timeout
            ) as answer:
                raw = await answer.read()
                status, answer_headers = answer.status, dict(answer.headers)
        except aiohttp.ClientConnectorError:
            if retried:
                raise
            retried = True
            await asyncio.sleep(QUICK_RETRY_S)
            continue
        except (aiohttp.ClientConnectionError, TimeoutError):
            if retried or not repeatable:
                raise
            retried = True
            await asyncio.sleep(QUICK_RETRY_S)
            continue
        if status < 300:
            return _json_or_none(raw)
        if status == 401 and not token_renewed:
            token_renewed = True
            clients.tokens.forget(scope, token)
            continue
        if status in (502, 503, 504) and repeatable and not retried:
            retried = True
            await asyncio.sleep(QUICK_RETRY_S)
            continue
        raise ConnectorRefused(ConnectorAnswer(status, answer_headers))


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return None


def bounded_retries(client: Any) -> Any:
    """Replace msrest's retry policy on this connector client: one quick retry of what is safe
    to repeat, no sleeping on ``Retry-After`` in a worker thread (a 429 is the caller's to
    handle, see notifier.py)."""
    policy = Retry(
        total=SILENT_RETRIES,
        connect=SILENT_RETRIES,
        read=0,
        status=SILENT_RETRIES,
        other=0,
        allowed_methods=frozenset({"GET", "PUT", "DELETE"}),
        status_forcelist=frozenset({502, 503, 504}),
        backoff_factor=0.2,
        backoff_max=1.0,
        raise_on_status=False,
        respect_retry_after_header=False,
    )
    # msrest reads this urllib3 1.x name (to log it) whenever it sets up a session
    setattr(policy, "BACKOFF_MAX", policy.backoff_max)  # noqa: B010
    client.config.retry_policy.policy = policy
    # msrest applied its policy to the client's requests session when it built the client:
    # apply ours to that session too (the one its async sender uses from the event loop).
    driver = getattr(getattr(client.config.pipeline, "_sender", None), "driver", None)
    session = getattr(driver, "session", None)
    adapters = getattr(session, "adapters", None)
    if not isinstance(adapters, dict) or not adapters:
        log.warning("teams_retry_policy_not_set")
        return client
    for adapter in adapters.values():
        adapter.max_retries = policy
    return client


def authentication(config: BotConfig, tokens: ConnectorTokens) -> BotFrameworkAuthentication:
    from botbuilder.integration.aiohttp import ConfigurationBotFrameworkAuthentication

    class KeptClientsAuthentication(ConfigurationBotFrameworkAuthentication):  # type: ignore[misc]
        """botbuilder's authentication, handing out kept connector clients (see the module
        docstring) instead of building new ones for every turn."""

        def __init__(self) -> None:
            super().__init__(
                config,
                credentials_factory=tokens,
                auth_configuration=AuthenticationConfiguration(
                    required_endorsements=[], claims_validator=channel_claims_only(config)
                ),
            )
            self.clients = ConnectorClients(config, tokens)
            self._user_tokens: dict[str, tuple[str, Any]] = {}

        async def authenticate_request(self, activity: Activity, auth_header: str) -> Any:
            result = await super().authenticate_request(activity, auth_header)
            result.connector_factory = self.clients
            return result

        def create_connector_factory(self, claims_identity: ClaimsIdentity) -> Any:
            return self.clients

        async def create_user_token_client(self, claims_identity: ClaimsIdentity) -> Any:
            """twokey signs no user in; botbuilder still wants a client on every turn: keep
            one per app id and token."""
            app_id = str(config.APP_ID)
            token = await tokens.token(config.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE)
            kept = self._user_tokens.get(app_id)
            if kept is not None and kept[0] == token:
                return kept[1]
            client = await super().create_user_token_client(claims_identity)
            self._user_tokens[app_id] = (token, client)
            return client

    keys_fetched_off_loop(
        config.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL,
        config.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL,
    )
    return KeptClientsAuthentication()


async def authenticate(
    auth: BotFrameworkAuthentication, activity: Activity, header: str
) -> AuthenticateRequestResult:
    """The activity's token checked in full, or TeamsAuthError (whatever botbuilder raised)."""
    if not header.startswith("Bearer ") or len(header) > 16_384:
        raise TeamsAuthError("missing_token")
    if not activity.service_url:
        raise TeamsAuthError("no_service_url")
    try:
        result = await auth.authenticate_request(activity, header)
    except Exception as exc:
        raise TeamsAuthError(type(exc).__name__) from exc
    identity: ClaimsIdentity | None = getattr(result, "claims_identity", None)
    if identity is None or not identity.is_authenticated:
        raise TeamsAuthError("not_authenticated")
    if identity.get_claim_value("serviceurl") != activity.service_url:
        raise TeamsAuthError("service_url_mismatch")
    return result
