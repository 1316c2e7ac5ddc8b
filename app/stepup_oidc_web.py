"""The two pages of an approver's sign-in (oidc_reauth) on twokey's one aiohttp server.

``GET /stepup/oidc/start/<token>`` shows what the link confirms (the request, the account,
the ticket, who asked) without using it up, so link scanners and prefetching browsers cannot
spend it, and a person handed someone else's link sees what they would vouch for. Its two
buttons post back to the same address: *Sign in to confirm* uses the link up and redirects to
the identity provider; *I did not approve this* uses it up, audits the refusal and alerts
security. ``GET /stepup/oidc/callback`` is where the identity provider sends the browser back:
the sign-in is verified (app.stepup_oidc) and handed to ``TwoKey.approver_signed_in``, which
records the gate. Every answer is a small HTML page whose words are escaped; a failure says
what went wrong and what to do, and changes nothing. Pages are never cached and send no
referrer (the URL carries codes).
"""

from __future__ import annotations

import html
import re

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.domain.errors import Conflict, NotFound, TwokeyError, Unavailable
from app.domain.models import Request
from app.domain.words import phrase
from app.runtime import Runtime
from app.same_origin import from_own_page
from app.stepup_oidc import (
    AGAIN,
    CALLBACK_PATH,
    LINK_TOKEN_SHAPE,
    LOGIN_TTL_S,
    START_PATH,
    STORE_DOWN,
    OidcReauthLinks,
    ReauthRefused,
    cookie_name,
)

log = structlog.get_logger("twokey.stepup_oidc")

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}
NOT_A_LINK = f"This is not a twokey sign-in link; nothing changed. {AGAIN}"
USED_UP = f"This sign-in link was already used or has run out; nothing changed. {AGAIN}"
STYLE = (
    "<style>body{font:16px system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em}"
    "button{font:inherit;padding:.5em 1em;margin:.5em .5em 0 0}</style>"
)


class Callback(BaseModel):
    """What the identity provider may put on the way back (RFC 6749 4.1.2 and 4.1.2.1)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    state: str = Field(pattern=LINK_TOKEN_SHAPE)
    code: str | None = Field(default=None, min_length=1, max_length=2048)
    error: str | None = Field(default=None, pattern=r"^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,100}$")


def page(message: str, status: int, title: str = "twokey sign-in", after: str = "") -> web.Response:
    """A plain page; the message is escaped (it may quote what someone typed or sent).
    ``after`` is markup twokey wrote itself (the confirmation's buttons), on a page whose
    referrer policy is same-origin: the browser then names this site as the Origin of the
    buttons' post (with no-referrer it would send ``Origin: null``)."""
    headers = {**HEADERS, "Referrer-Policy": "same-origin"} if after else HEADERS
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        f'<meta name=viewport content="width=device-width">{STYLE}</head>'
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>{after}</body></html>"
    )
    return web.Response(text=body, status=status, content_type="text/html", headers=headers)


def what_you_confirm(request: Request) -> str:
    """The approval the link is for, in the words of the card the approver pressed."""
    requester = request.requester_name or request.requester_id
    return (
        f"You approved request {request.id} in chat: {request.action.label} for "
        f"{request.target_name}, ticket {request.ticket}, asked by {requester}. It counts only "
        "once you sign in again. If you did not approve this, someone else may be using your "
        "chat account: say so below and security is told at once."
    )


CHOICES = (
    "<form method=post><button name=do value=sign_in type=submit>Sign in to confirm</button>"
    "<button name=do value=not_me type=submit>I did not approve this</button></form>"
)
"""Both post back to the page's own address (no action: right under any proxy prefix)."""


def mount(app: web.Application, runtime: Runtime, links: OidcReauthLinks) -> None:
    """Add the two routes for the running core and this verifier. They are served at the root
    even when TWOKEY_PUBLIC_URL has a path: the reverse proxy publishing it strips that prefix.
    The cookie's Path is the callback as browsers reach it (links.cookie_path), with no Domain:
    it reaches the way back and no other page of the host."""
    secure = links.secure

    async def show(request: web.Request) -> web.StreamResponse:
        """Opening the link: what it confirms, and the two choices. Nothing is used up."""
        token = request.match_info.get("token", "")
        if not _is_token(token):
            return page(NOT_A_LINK, 404)
        try:
            link = await links.look(token)
            approval = await runtime.store.get(link.request_id) if link is not None else None
        except Unavailable as exc:
            return page(exc.message, 503)
        except Exception as exc:  # the store's own errors: nothing was used up
            log.warning("approver_link_unreadable", error=type(exc).__name__)
            return page(STORE_DOWN, 503)
        if link is None or approval is None:
            return page(USED_UP, 410)
        if not approval.state.is_open:
            return page(
                f"Request {approval.id} is {phrase(approval.state)}: there is nothing left to "
                "confirm, and nothing changed.",
                410,
            )
        return page(what_you_confirm(approval), 200, "Confirm your approval", CHOICES)

    async def choose(request: web.Request) -> web.StreamResponse:
        """A button on the page: sign in (the link is used up), or say it was not you."""
        token = request.match_info.get("token", "")
        if not _is_token(token):
            return page(NOT_A_LINK, 404)
        if not from_own_page(request, links.public_origin):
            return page(f"This form was not sent from twokey's own page. {AGAIN}", 403)
        choice = (await request.post()).get("do")
        if choice == "not_me":
            return await not_me(token)
        if choice != "sign_in":
            return page(f"Choose one of the page's two buttons. {AGAIN}", 400)
        try:
            started = await links.begin(token)
        except ReauthRefused as exc:
            return page(exc.message, 410)
        except Unavailable as exc:
            return page(exc.message, 503)
        answer = web.HTTPSeeOther(started.url, headers=HEADERS)
        answer.set_cookie(
            started.cookie_name,
            started.cookie,
            max_age=LOGIN_TTL_S,
            path=links.cookie_path,
            secure=secure,
            httponly=True,
            samesite="Lax",  # sent on the IdP's top-level redirect back, not on embeds
        )
        return answer

    async def not_me(token: str) -> web.StreamResponse:
        try:
            refusal = await links.disown(token)
        except Unavailable as exc:
            return page(exc.message, 503)
        if refusal is None:
            return page(USED_UP, 410)
        await runtime.service.approver_disowned(refusal.request_id, refusal.approver_id)
        return page(
            f"Thank you. Your approval of request {refusal.request_id} does not count, and "
            "security was told that someone may be using your chat account. Sign out of chat "
            "on devices you do not recognise and change your password.",
            200,
            "Approval disowned",
        )

    def forget(answer: web.Response, state: str) -> web.Response:
        """This sign-in's binding cookie is used once, whatever happened (no other's)."""
        answer.del_cookie(cookie_name(state), path=links.cookie_path)
        return answer

    async def callback(request: web.Request) -> web.StreamResponse:
        try:
            query = Callback.model_validate(dict(request.query))
        except ValidationError:
            return page(f"This page was not reached from a twokey sign-in. {AGAIN}", 400)
        state = query.state
        try:
            signed = await links.finish(
                state, query.code, query.error, request.cookies.get(cookie_name(state))
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
            return forget(page(exc.message, 403), state)
        except Unavailable as exc:
            return forget(page(exc.message, 503), state)
        except (NotFound, Conflict) as exc:
            return forget(page(exc.message, 409), state)
        except TwokeyError as exc:
            return forget(page(exc.message, 403), state)
        return forget(page(decision.message, 200, "Approval verified"), state)

    app.router.add_get(START_PATH + "{token}", show)
    app.router.add_post(START_PATH + "{token}", choose)
    app.router.add_get(CALLBACK_PATH, callback)


def _is_token(token: str) -> bool:
    return re.fullmatch(LINK_TOKEN_SHAPE, token) is not None
