"""A local Duo Auth API that checks every request's signature as Duo documents it.

An aiohttp server on 127.0.0.1 answering `POST /auth/v2/auth` (async push) and `GET
/auth/v2/auth_status` in Duo's response shapes ({"stat": "OK", "response": ...}). Each request
must carry a Date header within five minutes and `Authorization: Basic ikey:hex(HMAC-SHA512(
skey, canonical))`, the canonical request being the Date, the method, the API host (lower
case), the path and the sorted URL-encoded parameters, one per line. A bad signature is
answered as Duo does (401, code 40103) and kept in ``refused``.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import secrets
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import TestServer

IKEY = "DIWJ8X6AEYOR5OMC6TQ1"
SKEY = "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep"
API_HOST = "api-xxxxxxxx.duosecurity.com"


class DuoStandIn:
    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        """username -> what each auth_status poll answers (waiting, allow, deny, timeout)."""
        self.pushes: list[dict[str, str]] = []
        self.refused: list[str] = []
        self._tx: dict[str, str] = {}
        self._server: TestServer | None = None
        self.base_url = ""

    def enroll(self, username: str, answers: list[str]) -> None:
        self.answers[username] = list(answers)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/auth/v2/auth", self._auth)
        app.router.add_get("/auth/v2/auth_status", self._status)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        self.base_url = str(self._server.make_url("")).rstrip("/")
        return self.base_url

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    def _signed(self, request: web.Request, params: dict[str, str]) -> bool:
        date = request.headers.get("Date", "")
        parsed = email.utils.parsedate_to_datetime(date) if date else None
        if parsed is None or abs(parsed.timestamp() - time.time()) > 300:
            self.refused.append(f"{request.path}: Date missing or skewed")
            return False
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        ikey, _, signature = base64.b64decode(token or "").decode().partition(":")
        args = "&".join(
            f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(params.items())
        )
        canon = "\n".join([date, request.method, API_HOST, request.path, args])
        expected = hmac.new(SKEY.encode(), canon.encode(), hashlib.sha512).hexdigest()
        if scheme != "Basic" or ikey != IKEY or not hmac.compare_digest(signature, expected):
            self.refused.append(f"{request.path}: bad signature")
            return False
        return True

    async def _auth(self, request: web.Request) -> web.Response:
        params = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if not self._signed(request, params):
            return _fail(401, 40103, "Invalid signature in request credentials")
        if params.get("factor") != "push" or params.get("async") != "1":
            return _fail(400, 40002, "Invalid request parameters", "factor/async")
        if params.get("username") not in self.answers:
            return _fail(400, 40002, "Invalid request parameters", "username")
        txid = secrets.token_hex(16)
        self._tx[txid] = params["username"]
        self.pushes.append(params)
        return web.json_response({"stat": "OK", "response": {"txid": txid}})

    async def _status(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if not self._signed(request, params):
            return _fail(401, 40103, "Invalid signature in request credentials")
        user = self._tx.get(params.get("txid", ""))
        if user is None:
            return _fail(400, 40002, "Invalid request parameters", "txid")
        queue = self.answers[user]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        body: dict[str, Any] = {
            "waiting": {
                "result": "waiting",
                "status": "pushed",
                "status_msg": "Pushed a login request to your device...",
            },
            "allow": {
                "result": "allow",
                "status": "allow",
                "status_msg": "Success. Logging you in...",
            },
            "deny": {"result": "deny", "status": "deny", "status_msg": "Login request denied."},
            "timeout": {"result": "deny", "status": "timeout", "status_msg": "Login timed out."},
        }[answer]
        return web.json_response({"stat": "OK", "response": body})


def _fail(status: int, code: int, message: str, detail: str = "") -> web.Response:
    body: dict[str, Any] = {"stat": "FAIL", "code": code, "message": message}
    if detail:
        body["message_detail"] = detail
    return web.json_response(body, status=status)
