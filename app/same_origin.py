"""Whether a browser says a request came from one of twokey's own pages (the playground's API,
the approver sign-in page's buttons): one rule for both."""

from __future__ import annotations

from aiohttp import web


def from_own_page(request: web.Request, own_origin: str, *, typed_url: bool = False) -> bool:
    """Browsers name where a request comes from: ``Origin`` on every post and cross-origin
    read, ``Sec-Fetch-Site`` on every fetch. Another origin or site is refused; ``typed_url``
    also lets through a navigation the person started themselves (``Sec-Fetch-Site: none``).
    A client that sends neither header is not a web page: it holds whatever the request
    itself needs (a link's token, a loopback address)."""
    allowed = ("same-origin", "none") if typed_url else ("same-origin",)
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in allowed:
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin.rstrip("/") == own_origin
