"""The two pages of an approver's sign-in (oidc_reauth) on twokey's one aiohttp server.

``GET /stepup/oidc/start/<token>`` uses the link up and redirects to the identity provider;
``GET /stepup/oidc/callback`` is where it sends the browser back: the sign-in is verified
(app.stepup_oidc) and handed to ``TwoKey.approver_signed_in``, which records the gate. Every
answer is a small HTML page whose words are escaped; a failure says what went wrong and what to
do, and changes nothing. Pages are never cached and send no referrer (the URL carries codes).
"""

from __future__ import annotations

import html
import re

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.domain.errors import Conflict, NotFound, TwokeyError, Unavailable
from app.runtime import Runtime
from app.stepup_oidc import (
    AGAIN,
    CALLBACK_PATH,
    COOKIE,
    LINK_TOKEN_SHAPE,
    LOGIN_TTL_S,
    START_PATH,
    OidcReauthLinks,
    ReauthRefused,
)

log = structlog.get_logger("twokey.stepup_oidc")

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}
NOT_A_LINK = f"This is not a twokey sign-in link; nothing changed. {AGAIN}"


class Callback(BaseModel):
    """What the identity provider may put on the way back (RFC 6749 4.1.2 and 4.1.2.1)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    state: str = Field(pattern=LINK_TOKEN_SHAPE)
    code: str | None = Field(default=None, min_length=1, max_length=2048)
    error: str | None = Field(default=None, pattern=r"^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,100}$")


def page(message: str, status: int, title: str = "twokey sign-in") -> web.Response:
    """A plain page; the message is escaped (it may quote what someone typed or sent)."""
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        '<meta name=viewport content="width=device-width">'
        "<style>body{font:16px system-ui,sans-serif;max-width:36em;margin:3em auto;"
        "padding:0 1em}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return web.Response(text=body, status=status, content_type="text/html", headers=HEADERS)


def mount(app: web.Application, runtime: Runtime, links: OidcReauthLinks) -> None:
    """Add the two routes for the running core and this verifier. They are served at the root
    even when TWOKEY_PUBLIC_URL has a path: the reverse proxy publishing it strips that prefix.
    The cookie's Path is the callback as browsers reach it (links.cookie_path), with no Domain:
    it reaches the way back and no other page of the host."""
    secure = links.secure

    async def start(request: web.Request) -> web.StreamResponse:
        token = request.match_info.get("token", "")
        if not _is_token(token):
            return page(NOT_A_LINK, 404)
        try:
            started = await links.begin(token)
        except ReauthRefused as exc:
            return page(exc.message, 410)
        except Unavailable as exc:
            return page(exc.message, 503)
        answer = web.HTTPFound(started.url, headers=HEADERS)
        answer.set_cookie(
            COOKIE,
            started.cookie,
            max_age=LOGIN_TTL_S,
            path=links.cookie_path,
            secure=secure,
            httponly=True,
            samesite="Lax",  # sent on the IdP's top-level redirect back, not on embeds
        )
        return answer

    def forget(answer: web.Response) -> web.Response:
        """The browser's binding cookie is used once, whatever happened."""
        answer.del_cookie(COOKIE, path=links.cookie_path)
        return answer

    async def callback(request: web.Request) -> web.StreamResponse:
        try:
            query = Callback.model_validate(dict(request.query))
        except ValidationError:
            return forget(page(f"This page was not reached from a twokey sign-in. {AGAIN}", 400))
        try:
            signed = await links.finish(
                query.state, query.code, query.error, request.cookies.get(COOKIE)
            )
            decision = await runtime.service.approver_signed_in(
                signed.request_id, signed.approver_id, signed.claimed
            )
        except ReauthRefused as exc:
            if exc.refusal is not None:  # bound to an approval and did not hold: audited
                refusal = exc.refusal
                await runtime.service.approver_signin_failed(
                    refusal.request_id, refusal.approver_id, refusal.why
                )
            return forget(page(exc.message, 403))
        except Unavailable as exc:
            return forget(page(exc.message, 503))
        except (NotFound, Conflict) as exc:
            return forget(page(exc.message, 409))
        except TwokeyError as exc:
            return forget(page(exc.message, 403))
        return forget(page(decision.message, 200, "Approval verified"))

    app.router.add_get(START_PATH + "{token}", start)
    app.router.add_get(CALLBACK_PATH, callback)


def _is_token(token: str) -> bool:
    return re.fullmatch(LINK_TOKEN_SHAPE, token) is not None
