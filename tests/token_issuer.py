"""The bearer tokens the ServiceNow and Jira stand-ins hand out for OAuth 2.0 client
credentials (RFC 6749 section 4.4) and then check on every call, as the real systems do: a
token that was never issued, or whose ``expires_in`` has run out, is refused with 401."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

CLIENT_ID = "twokey-client-7f3a"
CLIENT_SECRET = "oauth-Cl1ent-s3cret-do-not-log"


@dataclass
class TokenIssuer:
    lifetime_s: float = 1800.0
    """``expires_in`` of each token issued."""
    requests: int = 0
    """Token requests answered (granted or not)."""
    issued: dict[str, float] = field(default_factory=dict)
    """Token -> when it stops being accepted (monotonic)."""
    refused_bearers: int = 0
    """Calls refused because their bearer token was unknown or expired."""

    def grant(self, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The token endpoint's answer to these request fields: status and JSON body."""
        self.requests += 1
        if fields.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if fields.get("client_id") != CLIENT_ID or fields.get("client_secret") != CLIENT_SECRET:
            return 401, {"error": "access_denied", "error_description": "Unauthorized"}
        token = secrets.token_urlsafe(24)
        self.issued[token] = time.monotonic() + self.lifetime_s
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime_s}
        return 200, body

    def accepts(self, authorization: str | None) -> bool:
        """Whether this ``Authorization`` header carries a live token (counted when not)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme == "Bearer" and self.issued.get(token, 0.0) > time.monotonic():
            return True
        self.refused_bearers += 1
        return False

    def expire_all(self) -> None:
        """Every token issued so far stops working now (revoked, or run out early)."""
        self.issued = dict.fromkeys(self.issued, 0.0)

    def all_tokens(self) -> list[str]:
        return list(self.issued)
