"""Approver step-up by signing in again at the identity provider (the ``oidc_reauth`` verifier).

A click on a card proves only that someone holds the approver's chat session. For the tiers
that say so, the approver gets a short-lived, single-use link; it starts an OpenID Connect
authorization code flow with PKCE (S256), ``prompt=login``, a small ``max_age`` and the
policy's ``acr_values`` (RFC 9470's step-up pattern). The ID token that comes back is verified
here (RS256 against the issuer's JWKS; iss, aud, azp, exp, iat, nonce, auth_time, acr); the
service then checks that it names the approver and records the gate (verify_approver.lua).

Everything in between lives in Redis, with a TTL, taken with GETDEL so each piece is used once:
the link (keyed by a hash of its token, bound to the request and the approver), then the
sign-in under way (keyed by a hash of ``state``: nonce, PKCE verifier, a hash of the browser
cookie). Tokens, codes and secrets are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import httpx
import jwt
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.domain.durations import format_duration
from app.domain.errors import Unavailable
from app.domain.models import Principal, Request
from app.domain.stepup import OidcReauth, Verifier
from app.runtime import StartupError

log = structlog.get_logger("twokey.stepup_oidc")

START_PATH = "/stepup/oidc/start/"
CALLBACK_PATH = "/stepup/oidc/callback"
COOKIE = "twokey_signin"
LOGIN_TTL_S = 10 * 60
"""How long a sign-in may take between the redirect to the IdP and the way back."""
LEEWAY_S = 30
"""Clock skew allowed between twokey and the identity provider."""
LINK_TOKEN_SHAPE = r"^[A-Za-z0-9_-]{32,128}$"  # noqa: S105 (a pattern, not a secret)
AGAIN = "Approve again in chat for a new link."
IDP_DOWN = (
    "twokey cannot reach the identity provider right now, so nothing changed. Try again in a "
    "minute: approve again in chat for a new link."
)
STORE_DOWN = "twokey cannot reach its store right now, so nothing changed. Try again in a minute."


@dataclass(frozen=True)
class SignInRefusal:
    """A sign-in bound to an approval that did not hold: a security event for the request's
    audit trail (``why`` is a word twokey chose, never anything the IdP or browser sent)."""

    request_id: str
    approver_id: str
    why: str


class ReauthRefused(Exception):
    """A sign-in that counts for nothing; the message says why, for the person's browser.
    ``refusal`` is set when it was bound to an approval and did not hold (audit it)."""

    def __init__(self, message: str, refusal: SignInRefusal | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.refusal = refusal


class _Bound(BaseModel):
    """A link: which approval it may verify."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rid: str = Field(min_length=1, max_length=64)
    approver: str = Field(min_length=1, max_length=256)


class _Login(_Bound):
    """A sign-in under way: what the way back must match."""

    nonce: str
    verifier: str
    browser: str
    """SHA-256 of the cookie set on the browser that started it."""


_B = TypeVar("_B", bound=_Bound)


class Discovery(BaseModel):
    """The parts of /.well-known/openid-configuration twokey uses."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    token_endpoint_auth_methods_supported: list[str] = ["client_secret_basic"]
    code_challenge_methods_supported: list[str] | None = None


@dataclass(frozen=True)
class SignedIn:
    """An ID token that verified: who it says signed in, for which approval."""

    request_id: str
    approver_id: str
    claimed: object


@dataclass(frozen=True)
class Started:
    """Where to send the browser, and the cookie (its name and value) that binds the way back
    to it."""

    url: str
    cookie: str
    cookie_name: str


@dataclass(frozen=True)
class LinkFor:
    """The approval a link was handed out for (read, not used up)."""

    request_id: str
    approver_id: str


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def cookie_name(state: str) -> str:
    """Each sign-in has a cookie of its own, named after its ``state``: an approver verifying
    several approvals in one browser keeps each binding, and the way back of one sign-in
    neither reads nor deletes another's."""
    return f"{COOKIE}_{digest(state)[:16]}"


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(verifier)) without padding."""
    raw = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _secure_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    local = parts.hostname in {"localhost", "127.0.0.1", "::1"}
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise Unavailable(
            f"The identity provider's {what} is not an https URL; tell the operators."
        )
    return url


class OidcReauthLinks:
    """The ``oidc_reauth`` approver verifier (app.ports.ReauthLinks) and the two halves of
    its sign-in, for the web routes: ``begin`` (a link opened) and ``finish`` (the way back)."""

    verifier = Verifier.OIDC_REAUTH.value

    def __init__(
        self,
        settings: OidcReauth,
        client_secret: SecretStr,
        public_url: str,
        redis: Redis,
        namespace: str,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._secret = client_secret
        self.public_url = public_url.rstrip("/")
        self._redis = redis
        self._ns = namespace
        self._client = client or httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        self._clock = clock
        self._discovery: Discovery | None = None
        self._jwks: jwt.PyJWKSet | None = None

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def redirect_uri(self) -> str:
        return self.public_url + CALLBACK_PATH

    @property
    def public_origin(self) -> str:
        """Where browsers reach twokey, as an ``Origin`` header names it."""
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def cookie_path(self) -> str:
        """The callback's path as browsers see it, under TWOKEY_PUBLIC_URL's own path (a reverse
        proxy may publish twokey under a prefix it strips): the binding cookie then reaches the
        way back, and no other page of the host."""
        return urlsplit(self.public_url).path + CALLBACK_PATH

    @property
    def secure(self) -> bool:
        """Browsers reach twokey over https: its cookies must never travel over plain http."""
        return urlsplit(self.public_url).scheme == "https"

    @property
    def issuer(self) -> str:
        assert self.settings.issuer is not None  # OidcReauth refuses an incomplete section
        return self.settings.issuer

    @property
    def client_id(self) -> str:
        assert self.settings.client_id is not None
        return self.settings.client_id

    # ---- the link ----------------------------------------------------------------------------

    async def link_for(self, request: Request, approver: Principal) -> str:
        """A new single-use link for this approval; only a hash of its token is stored."""
        token = secrets.token_urlsafe(32)
        bound = _Bound(rid=request.id, approver=approver.id)
        await self._put("link", token, bound.model_dump_json(), self.settings.link_ttl)
        log.info("approver_link_issued", request=request.id, approver=approver.id)
        return f"{self.public_url}{START_PATH}{token}"

    async def look(self, token: str) -> LinkFor | None:
        """Which approval a link is for, leaving it unused: opening the link only shows what it
        confirms, so a link scanner or a browser's prefetch does not use it up."""
        bound = await self._read("link", token, _Bound, use_up=False)
        return LinkFor(request_id=bound.rid, approver_id=bound.approver) if bound else None

    async def disown(self, token: str) -> SignInRefusal | None:
        """The approver says they did not approve: the link is used up, and what to audit and
        alert is returned (None when the link was already used or ran out)."""
        bound = await self._take("link", token, _Bound)
        if bound is None:
            return None
        log.warning("approver_disowned_approval", request=bound.rid, approver=bound.approver)
        return SignInRefusal(request_id=bound.rid, approver_id=bound.approver, why="not_me")

    async def begin(self, token: str) -> Started:
        """The approver chose to sign in: use the link up, and send the browser to the IdP."""
        bound = await self._take("link", token, _Bound)
        if bound is None:
            raise ReauthRefused(
                f"This sign-in link was already used or has run out; nothing changed. {AGAIN}"
            )
        discovery = await self.discovery()
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        browser = secrets.token_urlsafe(32)
        login = _Login(
            **bound.model_dump(), nonce=nonce, verifier=verifier, browser=digest(browser)
        )
        await self._put("login", state, login.model_dump_json(), LOGIN_TTL_S)
        log.info("approver_signin_started", request=bound.rid, approver=bound.approver)
        return Started(
            url=self._authorize_url(discovery, state, nonce, verifier),
            cookie=browser,
            cookie_name=cookie_name(state),
        )

    def _authorize_url(self, discovery: Discovery, state: str, nonce: str, verifier: str) -> str:
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid email profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
            "prompt": "login",
            "max_age": str(self.settings.max_age),
        }
        if self.settings.acr_values:
            params["acr_values"] = " ".join(self.settings.acr_values)
        endpoint = discovery.authorization_endpoint
        return endpoint + ("&" if urlsplit(endpoint).query else "?") + urlencode(params)

    # ---- the way back ------------------------------------------------------------------------

    async def finish(
        self, state: str, code: str | None, error: str | None, cookie: str | None
    ) -> SignedIn:
        """The IdP sent the browser back: use up the sign-in, exchange the code, verify the
        ID token. Raises ReauthRefused (nothing changed) for anything that does not hold."""
        login = await self._take("login", state, _Login)
        if login is None:
            raise ReauthRefused(
                f"This sign-in was already used or has run out; nothing changed. {AGAIN}"
            )
        if cookie is None or not hmac.compare_digest(digest(cookie), login.browser):
            log.warning("approver_signin_other_browser", request=login.rid)
            raise ReauthRefused(
                "This sign-in came back to a different browser than the one that opened the "
                f"link, so nothing changed. Open the link and sign in in the same browser. {AGAIN}",
                _refusal(login, "other_browser"),
            )
        if error is not None or not code:
            log.info("approver_signin_not_done", request=login.rid, error=error or "no_code")
            raise ReauthRefused(
                f"The identity provider did not sign you in ({error or 'no code came back'}), "
                f"so nothing changed. {AGAIN}"
            )
        id_token = await self._exchange(code, login)
        claims = await self._verified(id_token, login)
        return SignedIn(login.rid, login.approver, claims.get(self.settings.person_claim))

    async def _exchange(self, code: str, login: _Login) -> str:
        """The authorization code for tokens, with the PKCE verifier and client authentication
        as the IdP supports it (client_secret_basic unless it offers only client_secret_post)."""
        discovery = await self.discovery()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": login.verifier,
        }
        auth: httpx.BasicAuth | None = None
        methods = discovery.token_endpoint_auth_methods_supported
        if "client_secret_basic" in methods or "client_secret_post" not in methods:
            # RFC 6749 2.3.1: both are form-urlencoded before they go in the Basic header.
            secret = quote(self._secret.get_secret_value(), safe="")
            auth = httpx.BasicAuth(quote(self.client_id, safe=""), secret)
        else:
            form |= {"client_id": self.client_id, "client_secret": self._secret.get_secret_value()}
        try:
            answer = await self._client.post(
                discovery.token_endpoint, data=form, auth=auth or httpx.USE_CLIENT_DEFAULT
            )
        except httpx.HTTPError as exc:
            log.warning("oidc_token_unreachable", error=type(exc).__name__)
            raise Unavailable(IDP_DOWN) from exc
        body = _json(answer)
        token = body.get("id_token") if answer.status_code == 200 else None
        if not isinstance(token, str):
            log.warning("oidc_token_refused", status=answer.status_code, error=body.get("error"))
            raise ReauthRefused(
                "The identity provider would not confirm this sign-in (the code was refused: "
                f"already used, or too old), so nothing changed. {AGAIN}",
                _refusal(login, "code_refused"),
            )
        return token

    async def _verified(self, id_token: str, login: _Login) -> Mapping[str, Any]:
        """The ID token's signature and claims, as OIDC Core 3.1.3.7 and RFC 9470 ask."""
        try:
            key = await self._signing_key(id_token)
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=["RS256"],
                audience=self.client_id,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]},
            )
        except jwt.InvalidSignatureError as exc:
            raise self._refused(login, "signature", "its signature does not verify") from exc
        except jwt.ExpiredSignatureError as exc:
            raise self._refused(login, "expired", "it had run out") from exc
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise self._refused(login, "issuer", "it was not issued to twokey by its IdP") from exc
        except jwt.PyJWTError as exc:
            log.warning("approver_signin_invalid", request=login.rid, error=type(exc).__name__)
            raise self._refused(login, "invalid_token", "it is not a valid ID token") from exc
        self._check_claims(claims, login)
        return claims

    def _check_claims(self, claims: Mapping[str, Any], login: _Login) -> None:
        now = self._clock()
        azp = claims.get("azp")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if (azp is not None or len(audiences) > 1) and azp != self.client_id:
            raise self._refused(login, "azp", "it was issued to another application")
        nonce = claims["nonce"]
        if not isinstance(nonce, str) or not hmac.compare_digest(nonce, login.nonce):
            raise self._refused(login, "nonce", "it belongs to another sign-in (nonce)")
        iat = claims["iat"]
        if not isinstance(iat, int | float) or iat < now - LOGIN_TTL_S - LEEWAY_S:
            raise self._refused(login, "iat", "it was issued too long ago")
        auth_time = claims.get("auth_time")
        if not isinstance(auth_time, int | float) or isinstance(auth_time, bool):
            raise self._refused(login, "auth_time", "it does not say when you signed in")
        if now - auth_time > self.settings.max_age + LEEWAY_S:
            log.warning("approver_signin_refused", request=login.rid, reason="auth_time")
            raise ReauthRefused(
                "The identity provider did not ask you to sign in again just now (your sign-in "
                f"is older than {format_duration(self.settings.max_age)}), so it does not count "
                f"and nothing changed. {AGAIN}",
                _refusal(login, "auth_time"),
            )
        if self.settings.person_claim == "email" and claims.get("email_verified") is not True:
            # an address anyone could set on their own IdP account names nobody
            raise self._refused(
                login,
                "email_unverified",
                "it does not say the email address is verified (email_verified); an IdP that "
                "never says so is matched by its id instead (matches: id)",
            )
        wanted = self.settings.acr_values
        if wanted and claims.get("acr") not in wanted:
            log.warning("approver_signin_refused", request=login.rid, reason="acr")
            raise ReauthRefused(
                "The identity provider did not confirm the sign-in strength this approval "
                f"needs (acr: one of {', '.join(wanted)}), so nothing changed. {AGAIN}",
                _refusal(login, "acr"),
            )

    @staticmethod
    def _refused(login: _Login, reason: str, why: str) -> ReauthRefused:
        log.warning("approver_signin_refused", request=login.rid, reason=reason)
        return ReauthRefused(
            f"The identity provider's answer does not hold ({why}), so nothing changed. {AGAIN}",
            _refusal(login, reason),
        )

    # ---- discovery and keys ------------------------------------------------------------------

    async def discovery(self) -> Discovery:
        """The issuer's metadata, read once; its ``issuer`` must be the configured one."""
        if self._discovery is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                found = Discovery.model_validate(await self._get_json(url))
            except ValidationError as exc:
                log.error("oidc_metadata_unreadable", error_count=exc.error_count())
                raise Unavailable(IDP_DOWN) from exc
            if found.issuer != self.issuer:
                log.error("oidc_issuer_mismatch", configured=self.issuer, found=found.issuer)
                raise Unavailable(
                    "The identity provider's metadata names another issuer than the policy's "
                    "step_up.oidc.issuer; tell the operators. Nothing changed."
                )
            for what in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                _secure_url(getattr(found, what), what)
            methods = found.code_challenge_methods_supported
            if methods is not None and "S256" not in methods:
                raise Unavailable(
                    "The identity provider does not offer PKCE S256; tell the operators."
                )
            self._discovery = found
        return self._discovery

    async def _signing_key(self, id_token: str) -> Any:
        """The JWKS key the token names (kid), fetched again once if the IdP rotated keys."""
        header = jwt.get_unverified_header(id_token)
        if header.get("alg") != "RS256":
            raise jwt.InvalidAlgorithmError("not RS256")
        kid = header.get("kid")
        for fresh in (False, True):
            keys = await self._keys(fresh)
            matching = [k for k in keys.keys if kid is None or k.key_id == kid]
            if len(matching) == 1 or (kid is not None and matching):
                return matching[0].key
        raise jwt.InvalidKeyError("no such key in the identity provider's JWKS")

    async def _keys(self, fresh: bool) -> jwt.PyJWKSet:
        if self._jwks is None or fresh:
            discovery = await self.discovery()
            self._jwks = jwt.PyJWKSet.from_dict(await self._get_json(discovery.jwks_uri))
        return self._jwks

    async def _get_json(self, url: str) -> Any:
        try:
            answer = await self._client.get(url)
            answer.raise_for_status()
            return answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("oidc_metadata_unavailable", error=type(exc).__name__)
            raise Unavailable(IDP_DOWN) from exc

    # ---- single-use records ------------------------------------------------------------------

    def _key(self, kind: str, token: str) -> str:
        return f"{self._ns}:oidc:{kind}:{digest(token)}"

    async def _put(self, kind: str, token: str, value: str, ttl_s: int) -> None:
        try:
            await self._redis.set(self._key(kind, token), value, ex=ttl_s)
        except RedisError as exc:
            log.warning("oidc_store_unavailable", error=type(exc).__name__)
            raise Unavailable(STORE_DOWN) from exc

    async def _take(self, kind: str, token: str, model: type[_B]) -> _B | None:
        """GETDEL: whoever reads it first has it; nobody reads it again (nor anything that
        does not read as what twokey stored)."""
        return await self._read(kind, token, model, use_up=True)

    async def _read(self, kind: str, token: str, model: type[_B], *, use_up: bool) -> _B | None:
        key = self._key(kind, token)
        try:
            raw = await (self._redis.getdel(key) if use_up else self._redis.get(key))
        except RedisError as exc:
            log.warning("oidc_store_unavailable", error=type(exc).__name__)
            raise Unavailable(STORE_DOWN) from exc
        if raw is None:
            return None
        try:
            return model.model_validate_json(raw)
        except ValidationError:
            log.warning("oidc_record_unreadable", kind=kind)
            return None


def _refusal(login: _Login, why: str) -> SignInRefusal:
    return SignInRefusal(request_id=login.rid, approver_id=login.approver, why=why)


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def build_reauth(
    settings: OidcReauth | None,
    public_url: str | None,
    redis: Redis,
    namespace: str,
    environ: Mapping[str, str],
) -> OidcReauthLinks | None:
    """The verifier the policy's ``step_up.oidc`` describes, or None without one. Refuses to
    start (StartupError) without the public URL or the client secret: approvals needing it
    could never count, and nobody would be told why."""
    if settings is None:
        return None
    if public_url is None:
        raise StartupError(
            "The policy's step_up.oidc has approvers sign in again through links to twokey: set "
            "TWOKEY_PUBLIC_URL to the address their browsers reach twokey at "
            "(e.g. https://twokey.example.com)."
        )
    name = settings.client_secret_env or ""
    secret = environ.get(name, "")
    if not secret:
        raise StartupError(
            f"The policy's step_up.oidc.client_secret_env names {name}, which is not set: put "
            "twokey's client secret at the identity provider in it."
        )
    return OidcReauthLinks(settings, SecretStr(secret), public_url, redis, namespace)
