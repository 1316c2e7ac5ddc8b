"""Approver sign-in (oidc_reauth) with twokey published under a path by a reverse proxy, end to
end: TWOKEY_PUBLIC_URL=https://tools.example.com/twokey, and the proxy strips ``/twokey`` before
twokey's one aiohttp server, which serves its routes at ``/...``. The browser (httpx: its
cookie jar applies Path, Domain and Secure as browsers do) reaches twokey only through that
proxy, and the identity provider is the local stand-in. At the root nothing changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import Morsel, SimpleCookie
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestServer

from app.bootstrap import build_runtime
from app.domain.models import RequestState
from app.notify import RecordingNotifier
from app.settings import Settings
from app.stepup_oidc import CALLBACK_PATH, COOKIE, START_PATH
from app.web import create_app
from tests.integration.test_step_up_oidc import Twokey, assert_nothing_changed, oidc_policy
from tests.oidc_standin import CLIENT_SECRET, OidcStandIn


class ReverseProxy(httpx.AsyncBaseTransport):
    """The operator's proxy, as the browser meets it: ``public`` and everything under its path
    goes to ``upstream`` with that prefix stripped; the rest of its host is some other
    application (each request kept in ``elsewhere``, answered 404); other hosts (the IdP) are
    reached directly."""

    def __init__(self, public: str, upstream: str) -> None:
        url = httpx.URL(public)
        self.origin = (url.scheme, url.host, url.port)
        self.prefix = url.path.rstrip("/")
        self.upstream = httpx.URL(upstream)
        self.network = httpx.AsyncHTTPTransport()
        self.forwarded: list[str] = []
        """Paths (with the query) as twokey's server received them."""
        self.elsewhere: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if (url.scheme, url.host, url.port) != self.origin:
            return await self.network.handle_async_request(request)
        if url.path != self.prefix and not url.path.startswith(self.prefix + "/"):
            self.elsewhere.append(request)
            return httpx.Response(404, request=request)
        stripped = url.raw_path[len(self.prefix.encode()) :]
        if not stripped.startswith(b"/"):
            stripped = b"/" + stripped
        self.forwarded.append(stripped.decode())
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"host"]
        upstream = httpx.Request(
            request.method,
            self.upstream.copy_with(raw_path=stripped),
            headers=headers,
            content=await request.aread(),
        )
        return await self.network.handle_async_request(upstream)

    async def aclose(self) -> None:
        await self.network.aclose()


@dataclass
class Published:
    twokey: Twokey
    proxy: ReverseProxy
    public_url: str
    """TWOKEY_PUBLIC_URL as the operator wrote it (with or without a trailing slash)."""

    @property
    def base(self) -> str:
        return self.public_url.rstrip("/")

    @property
    def prefix(self) -> str:
        return httpx.URL(self.base).path.rstrip("/")


@pytest.fixture
async def idp() -> AsyncIterator[OidcStandIn]:
    standin = OidcStandIn(user={"email": "carol@example.com"})
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()
    assert standin.violations == [], "requests outside what OIDC and PKCE specify"


@pytest.fixture
async def published(
    request: pytest.FixtureRequest,
    idp: OidcStandIn,
    redis_url: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Published]:
    """twokey as `serve` builds it, published at ``request.param`` through ReverseProxy."""
    public_url: str = request.param
    monkeypatch.setenv("TEST_OIDC_CLIENT_SECRET", CLIENT_SECRET)
    policy = tmp_path / "policy.yaml"
    policy.write_text(oidc_policy(idp.issuer))
    settings = Settings(
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_AUDIT_KEY="oidc-test-audit-key-long-enough",
        TWOKEY_ACCEPT_EVICTION_RISK=True,
        TWOKEY_PLAYGROUND=False,
        TWOKEY_POLICY=str(policy),
        TWOKEY_DATA_DIR=str(tmp_path / "data"),
        TWOKEY_PUBLIC_URL=public_url,
    )
    runtime = await build_runtime(settings)
    notifier = RecordingNotifier()
    runtime.notifier.add(notifier)
    server = TestServer(create_app(settings, runtime=runtime, sweeper=False))
    await server.start_server()
    proxy = ReverseProxy(public_url, f"http://127.0.0.1:{server.port}")
    browser = httpx.AsyncClient(transport=proxy, timeout=10.0)
    try:
        yield Published(Twokey(runtime, notifier, browser, idp), proxy, public_url)
    finally:
        await browser.aclose()
        await server.close()
        await runtime.close()


def binding_cookie(answer: httpx.Response) -> Morsel[str]:
    """The one Set-Cookie of the sign-in, as a browser parses it."""
    [header] = answer.headers.get_list("set-cookie")
    parsed: SimpleCookie = SimpleCookie()
    parsed.load(header)
    [name] = parsed
    assert name.startswith(COOKIE + "_")  # one cookie per sign-in
    return parsed[name]


def in_jar(browser: httpx.AsyncClient) -> list[tuple[str, bool, bool]]:
    """The browser's binding cookies: (path, whether twokey named a Domain, secure)."""
    return [
        (c.path, c.domain_specified, c.secure)
        for c in browser.cookies.jar
        if c.name.startswith(COOKIE)
    ]


UNDER_A_PATH = [
    "https://tools.example.com/twokey",
    "https://tools.example.com/twokey/",
    "https://tools.example.com/apps/twokey",
    "http://localhost/twokey",
]


@pytest.mark.parametrize("published", UNDER_A_PATH, indirect=True)
async def test_under_a_path_the_sign_in_keeps_the_prefix_and_the_approval_counts(
    published: Published,
) -> None:
    twokey, proxy, base = published.twokey, published.proxy, published.base
    https = base.startswith("https://")
    callback = published.prefix + CALLBACK_PATH
    rid, link = await twokey.approved_by_carol()
    token = link.rsplit("/", 1)[1]
    assert link == f"{base}{START_PATH}{token}"

    started = await twokey.start_sign_in(link)
    cookie = binding_cookie(started)
    assert cookie["path"] == callback
    assert cookie["domain"] == ""  # this host only
    assert bool(cookie["secure"]) is https  # Secure exactly when browsers reach twokey on https
    assert cookie["httponly"] is True and cookie["samesite"] == "Lax"
    assert in_jar(twokey.browser) == [(callback, False, https)]

    at_idp = await twokey.browser.get(started.headers["location"])
    assert twokey.idp.authorize_params[0]["redirect_uri"] == base + CALLBACK_PATH
    back = at_idp.headers["location"]
    assert back.startswith(f"{base}{CALLBACK_PATH}?")
    page = await twokey.browser.get(back)
    await twokey.runtime.service.settle_pushes()
    assert page.status_code == 200, page.text  # the cookie reached the callback through the proxy
    assert "your approval of " + rid + " counts now" in page.text
    forgotten = binding_cookie(page)
    assert (forgotten["path"], forgotten["max-age"], forgotten["domain"]) == (callback, "0", "")
    assert in_jar(twokey.browser) == []

    # twokey's server saw its own root-relative routes; nothing else of the host was asked
    assert proxy.forwarded[:2] == [START_PATH + token] * 2  # the page, then its button
    assert proxy.forwarded[2].startswith(CALLBACK_PATH + "?")
    assert len(proxy.forwarded) == 3 and proxy.elsewhere == []
    done = await twokey.request(rid)
    assert done.state is RequestState.COMPLETED
    assert [a.approver_id for a in done.approvals] == ["carol"]
    assert done.approvals_unverified == ()
    verified = [e for e in await twokey.events(rid) if e["kind"] == "approver_verified"]
    assert [(e["actor"], e["via"]) for e in verified] == [("carol", "oidc_reauth")]


@pytest.mark.parametrize("published", ["https://tools.example.com/twokey/"], indirect=True)
async def test_under_a_path_the_cookie_reaches_no_other_page_of_the_host(
    published: Published,
) -> None:
    twokey, proxy = published.twokey, published.proxy
    rid, link = await twokey.approved_by_carol()
    back = await twokey.to_idp_and_back(link)
    host = "https://tools.example.com"
    for other in ("/", CALLBACK_PATH, "/other" + CALLBACK_PATH, "/twokey-old" + CALLBACK_PATH):
        assert (await twokey.browser.get(host + other)).status_code == 404
    assert len(proxy.elsewhere) == 4
    assert all(COOKIE not in r.headers.get("cookie", "") for r in proxy.elsewhere)
    assert (await twokey.browser.get(f"{host}/twokey/healthz")).status_code == 200  # twokey's

    # a way back without the cookie (a proxy under another path) changes nothing
    elsewhere = httpx.URL(back).copy_with(path="/other" + CALLBACK_PATH)
    assert (await twokey.browser.get(str(elsewhere))).status_code == 404
    page = await twokey.browser.get(back)
    await twokey.runtime.service.settle_pushes()
    assert page.status_code == 200, page.text
    assert (await twokey.request(rid)).state is RequestState.COMPLETED


@pytest.mark.parametrize("published", ["https://tools.example.com/twokey"], indirect=True)
async def test_under_a_path_a_way_back_in_another_browser_still_changes_nothing(
    published: Published,
) -> None:
    twokey = published.twokey
    rid, link = await twokey.approved_by_carol()
    back = await twokey.to_idp_and_back(link)
    async with httpx.AsyncClient(transport=published.proxy) as other_browser:
        page = await other_browser.get(back)
    assert page.status_code == 403 and "different browser" in page.text
    assert binding_cookie(page)["path"] == "/twokey" + CALLBACK_PATH
    await assert_nothing_changed(twokey, rid)


ROOT = [
    ("https://twokey.example.com", "; Secure"),
    ("https://twokey.example.com/", "; Secure"),
    ("http://localhost:8080", ""),
]


@pytest.mark.parametrize(("published", "secure"), ROOT, indirect=["published"])
async def test_at_the_root_the_sign_in_is_as_before(published: Published, secure: str) -> None:
    twokey = published.twokey
    rid, link = await twokey.approved_by_carol()
    assert link.startswith(f"{published.base}{START_PATH}")
    started = await twokey.start_sign_in(link)
    name = binding_cookie(started).key
    value = twokey.browser.cookies[name]
    # byte for byte what twokey sent before paths were supported (one cookie per sign-in)
    assert started.headers["set-cookie"] == (
        f"{name}={value}; HttpOnly; Max-Age=600; Path={CALLBACK_PATH}; SameSite=Lax{secure}"
    )
    at_idp = await twokey.browser.get(started.headers["location"])
    assert twokey.idp.authorize_params[0]["redirect_uri"] == published.base + CALLBACK_PATH
    page = await twokey.browser.get(at_idp.headers["location"])
    await twokey.runtime.service.settle_pushes()
    assert page.status_code == 200, page.text
    assert page.headers["set-cookie"] == (
        f'{name}=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path={CALLBACK_PATH}'
    )
    done = await twokey.request(rid)
    assert done.state is RequestState.COMPLETED
    assert [a.approver_id for a in done.approvals] == ["carol"]
