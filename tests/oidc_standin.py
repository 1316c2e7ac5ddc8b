"""A local OpenID Connect provider for the approver sign-in tests (oidc_reauth).

It speaks what twokey uses of OIDC Core, Discovery and RFC 7636 on 127.0.0.1: discovery, a
JWKS of an RSA key generated per test, ``/authorize`` that checks the request and "signs in"
``user`` (redirecting back with a single-use code), and ``/token`` that checks client
authentication (Basic), the code, the redirect URI and the PKCE ``code_verifier`` (S256), then
answers an RS256 ID token. Knobs (``claims``, ``sign_with``, ``auth_age``) let a test make the
token wrong in exactly one way; ``violations`` lists every request twokey got wrong.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

CLIENT_ID = "twokey-test-client"
CLIENT_SECRET = "s3cret-for-the-standin-only"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Pending:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    acr: str | None


@dataclass
class OidcStandIn:
    user: dict[str, Any] = field(default_factory=dict)
    """The claims of whoever signs in at /authorize (email, preferred_username, ...)."""
    claims: dict[str, Any] = field(default_factory=dict)
    """Claims put in (or, with value None, taken out of) every ID token."""
    auth_age: int = 0
    """How many seconds before the token ``auth_time`` says the sign-in was."""
    sign_with: rsa.RSAPrivateKey | None = None
    """Sign with this key instead of the published one (a forged token)."""
    deny: str | None = None
    """Answer /authorize with this OAuth error instead of a code."""
    key: rsa.RSAPrivateKey = field(default_factory=new_key)
    kid: str = "standin-key-1"
    violations: list[str] = field(default_factory=list)
    codes_redeemed: list[str] = field(default_factory=list)
    authorize_params: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._codes: dict[str, Pending] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    @property
    def issuer(self) -> str:
        return self.base_url

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/keys", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.base_url}/authorize",
                "token_endpoint": f"{self.base_url}/token",
                "jwks_uri": f"{self.base_url}/keys",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return web.json_response({"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]})

    def _violation(self, text: str) -> web.Response:
        self.violations.append(text)
        return web.json_response(
            {"error": "invalid_request", "error_description": text}, status=400
        )

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        self.authorize_params.append(q)
        expected = {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "code_challenge_method": "S256",
            "prompt": "login",
        }
        for name, value in expected.items():
            if q.get(name) != value:
                return self._violation(f"/authorize {name}={q.get(name)!r}")
        if "openid" not in q.get("scope", "").split():
            return self._violation("/authorize scope without openid")
        for name in ("state", "nonce", "code_challenge", "redirect_uri", "max_age"):
            if not q.get(name):
                return self._violation(f"/authorize without {name}")
        if not q["max_age"].isdigit():
            return self._violation("/authorize max_age not a number of seconds")
        target = q["redirect_uri"]
        if self.deny is not None:
            back = urlencode({"error": self.deny, "state": q["state"]})
            raise web.HTTPFound(f"{target}?{back}")
        code = secrets.token_urlsafe(24)
        acr = q.get("acr_values", "").split()
        self._codes[code] = Pending(
            CLIENT_ID, target, q["code_challenge"], q["nonce"], acr[0] if acr else None
        )
        raise web.HTTPFound(f"{target}?{urlencode({'code': code, 'state': q['state']})}")

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.violations.append("/token without the client's Basic authentication")
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "authorization_code":
            return self._violation("/token grant_type")
        code = str(form.get("code", ""))
        pending = self._codes.pop(code, None)
        if pending is None:  # unknown or already redeemed: RFC 6749 4.1.2, single use
            return web.json_response({"error": "invalid_grant"}, status=400)
        if form.get("redirect_uri") != pending.redirect_uri:
            return self._violation("/token redirect_uri differs from /authorize")
        verifier = str(form.get("code_verifier", ""))
        digest = hashlib.sha256(verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != pending.challenge:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "PKCE"}, status=400
            )
        self.codes_redeemed.append(code)
        return web.json_response(
            {"access_token": "at", "token_type": "Bearer", "id_token": self._id_token(pending)}
        )

    def _id_token(self, pending: Pending) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "00u-" + str(self.user.get("email", "someone")),
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "auth_time": now - self.auth_age,
            "nonce": pending.nonce,
            **({"acr": pending.acr} if pending.acr else {}),
            "email_verified": True,  # as Okta and Google say of a verified address
            **self.user,
        }
        for name, value in self.claims.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        key = self.sign_with or self.key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})
