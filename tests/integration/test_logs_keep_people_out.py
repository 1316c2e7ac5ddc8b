"""What reaches the log when connectors talk to their providers: JSON lines, and no person.

Logging is configured as `twokey serve` configures it (``configure_logging(LOG_LEVEL)``), the
real Okta, Entra, Google and webhook connectors call the local stand-ins, and the test reads
what was really written to stderr. At INFO and at DEBUG no email (plain or URL-encoded), query
string, header value, token, key or temporary password may appear, and every line must be one
JSON object. `twokey connectors check` is run as a subprocess too, the way an operator runs it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.connectors import entra, google, okta, webhook
from app.domain.models import Action, Principal, PrincipalKind
from app.logs import configure_logging
from app.ports import Outcome
from tests.connectors import RecordingSleep, request_for
from tests.connectors.okta_standin import OktaStandIn, load_okta_spec, okta_group, okta_user
from tests.connectors_cloud.google_standin import GoogleStandIn, WorkspaceUser, workspace_group
from tests.connectors_cloud.graph_standin import GraphStandIn, GraphUser, group, method

ROOT = Path(__file__).resolve().parents[2]

OKTA_TOKEN = "00TESTssws-" + "l0gs" * 8
ALICE_OKTA = okta_user("00ualice0001", "alice.okta@example.com", "Alice", "Example")
BOB_OKTA = okta_user("00ubob000002", "bob.okta@example.com", "Bob", "Example")
LINK_MARKER = "cursor-5f3e9a1c"
"""In Okta's ``link`` answer header, beside Bob's address: must never reach the log."""

TENANT = "contoso.onmicrosoft.com"
ENTRA_CLIENT = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
ENTRA_SECRET = "Qx8~logs-secret-for-tests~7hF2"
ALICE_ENTRA_ID = "6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0"
ALICE_ENTRA = "alice.entra@contoso.com"

SERVICE_ACCOUNT = "twokey@twokey-test.iam.gserviceaccount.com"
GOOGLE_KEY_ID = "5f1c0ffee0ddba11ab1ec0de5eed5a1tfeed0003"
GOOGLE_ADMIN = "twokey-admin@example.com"
ALICE_GOOGLE_ID = "104857600000000000001"
ALICE_GOOGLE = "alice.google@example.com"

WEBHOOK_KEY = "whsec-" + "L0g" * 12
SERVICE = Principal(
    id="svc-backup",
    kind=PrincipalKind.NHI,
    display_name="backup service account",
    owner_id="00ualice0001",
    system="aws",
)
NEW_KEY = "AKIA-logs-new-key-material-93b1"

PEOPLE = (
    "alice.okta@example.com",
    "bob.okta@example.com",
    ALICE_ENTRA,
    ALICE_GOOGLE,
    "a.google@example.com",
    GOOGLE_ADMIN,
    SERVICE_ACCOUNT,
)
QUERY_WORDS = ("search=", "$filter", "$select", "filter=", "limit=", "maxResults", "customer=")
EMAIL = re.compile(r"[\w.+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)
URL_QUERY = re.compile(r"(?:https?://|/)[^\s?\"'<>]*\?[^\s\"'<>]+")


@dataclass
class Stands:
    """The four providers on local ports, and every secret they handed out or were shown."""

    okta: OktaStandIn
    graph: GraphStandIn
    workspace: GoogleStandIn
    hook_url: str
    hook_headers: list[dict[str, str]] = field(default_factory=list)

    def secrets(self) -> list[str]:
        found = [OKTA_TOKEN, ENTRA_SECRET, WEBHOOK_KEY, NEW_KEY, LINK_MARKER]
        found += self.okta.temp_passwords + self.okta.access_tokens
        found += list(self.graph.tokens) + self.graph.passes
        found += list(self.workspace.tokens)
        found += [u.password for u in self.workspace.users.values() if u.password]
        found += [h["Twokey-Signature"] for h in self.hook_headers]
        return [s for s in found if s]


@pytest.fixture(scope="module")
def google_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def stands(
    google_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stands]:
    okta_org = OktaStandIn(load_okta_spec(), api_token=OKTA_TOKEN)
    okta_org.add_user(json.loads(json.dumps(ALICE_OKTA)), [okta_group("00gstaff0001", "Staff")])
    okta_org.add_user(json.loads(json.dumps(BOB_OKTA)), [])

    graph = GraphStandIn(TENANT, ENTRA_CLIENT, ENTRA_SECRET)
    graph.add_user(
        GraphUser(
            id=ALICE_ENTRA_ID,
            display_name="Alice Adams",
            upn=ALICE_ENTRA,
            mail=ALICE_ENTRA,
            member_of=[group("Staff")],
            methods=[method("passwordAuthenticationMethod")],
        )
    )

    public = google_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    workspace = GoogleStandIn(SERVICE_ACCOUNT, public.decode(), GOOGLE_KEY_ID)
    workspace.admins.add(GOOGLE_ADMIN)
    workspace.add_user(
        WorkspaceUser(
            id=ALICE_GOOGLE_ID,
            primary_email=ALICE_GOOGLE,
            full_name="Alice Adams",
            aliases=["a.google@example.com"],
            groups=[workspace_group("staff@example.com", "Staff")],
        )
    )

    hook_headers: list[dict[str, str]] = []

    async def receive(request: web.Request) -> web.Response:
        hook_headers.append(dict(request.headers))
        await request.read()
        return web.json_response({"outcome": "completed", "secret": NEW_KEY})

    hook_app = web.Application()
    hook_app.router.add_post("/twokey/hook", receive)
    hook = TestServer(hook_app, host="127.0.0.1")

    await okta_org.start()
    await graph.start()
    await workspace.start()
    await hook.start_server()
    key_json = json.dumps(
        {
            "type": "service_account",
            "private_key_id": GOOGLE_KEY_ID,
            "private_key": google_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            "client_email": SERVICE_ACCOUNT,
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )
    monkeypatch.setenv("TK_LOGS_OKTA_TOKEN", OKTA_TOKEN)
    monkeypatch.setenv("TK_LOGS_ENTRA_SECRET", ENTRA_SECRET)
    monkeypatch.setenv("TK_LOGS_GOOGLE_KEY", key_json)
    monkeypatch.setenv("TK_LOGS_WEBHOOK_KEY", WEBHOOK_KEY)
    try:
        yield Stands(okta_org, graph, workspace, str(hook.make_url("/twokey/hook")), hook_headers)
    finally:
        await hook.close()
        await workspace.close()
        await graph.close()
        await okta_org.close()
    assert okta_org.violations == [] and graph.violations == [] and workspace.violations == []


def connector_entries(stands: Stands) -> list[dict[str, Any]]:
    """The four connectors as an operator writes them in the policy file."""
    return [
        {
            "type": "okta",
            "org_url": stands.okta.base_url,
            "api_token_env": "TK_LOGS_OKTA_TOKEN",
            "timeout": 5,
        },
        {
            "type": "entra",
            "tenant_id": TENANT,
            "client_id": ENTRA_CLIENT,
            "client_secret_env": "TK_LOGS_ENTRA_SECRET",
            "login_url": stands.graph.origin,
            "graph_url": stands.graph.graph_url,
            "timeout": 5,
        },
        {
            "type": "google",
            "admin_subject": GOOGLE_ADMIN,
            "service_account_key_env": "TK_LOGS_GOOGLE_KEY",
            "token_url": stands.workspace.token_url,
            "api_url": stands.workspace.origin,
            "timeout": 5,
        },
        {
            "type": "webhook",
            "name": "rotator",
            "url": stands.hook_url,
            "secret_env": "TK_LOGS_WEBHOOK_KEY",
            "actions": ["rotate-secret"],
        },
    ]


def assert_clean(text: str, secrets: Iterable[str]) -> list[dict[str, Any]]:
    """Every line is one JSON object; no person, query string, header value or secret."""
    assert text.strip(), "nothing was logged: the capture is not seeing the log"
    events: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"a log line is not JSON: {line[:300]}") from None
        assert isinstance(event, dict), line
        events.append(event)
    for person in PEOPLE:
        assert person not in text
        assert person.replace("@", "%40") not in text
    assert not EMAIL.search(text), EMAIL.search(text)
    assert not URL_QUERY.search(text), URL_QUERY.search(text)
    for word in QUERY_WORDS:
        assert word not in text, word
    for secret in secrets:
        assert secret not in text, "a secret or header value reached the log"
    return events


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_connector_calls_log_json_without_people_queries_headers_or_tokens(
    level: str, stands: Stands, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging(level)  # what `twokey serve` does with LOG_LEVEL
    sleep = RecordingSleep()
    okta_entry, entra_entry, google_entry, hook_entry = connector_entries(stands)
    built = [
        okta.build(okta_entry, sleep=sleep),
        entra.build(entra_entry, sleep=sleep),
        google.build(google_entry, sleep=sleep),
        webhook.build(hook_entry, sleep=sleep),
    ]
    okta_c, entra_c, google_c, hook_c = built
    assert isinstance(okta_c, okta.OktaConnector)
    assert isinstance(entra_c, entra.EntraConnector)
    assert isinstance(google_c, google.GoogleConnector)
    assert isinstance(hook_c, webhook.WebhookConnector)
    bob_search = (
        f"<{stands.okta.base_url}/api/v1/users?after={LINK_MARKER}&limit=10&search="
        'profile.email+eq+%22bob.okta%40example.com%22>; rel="self"'
    )
    stands.okta.answer_next(
        "listUsers", 200, [json.loads(json.dumps(BOB_OKTA))], {"link": bob_search}
    )
    try:
        [bob] = await okta_c.find_by_email("bob.okta@example.com")
        assert (await okta_c.get("alice.okta@example.com")) is not None  # a login in the path
        assert await okta_c.search("alice")
        okta_reset = await okta_c.execute(
            Action.RESET_PASSWORD, bob, request_for(Action.RESET_PASSWORD, bob)
        )
        assert okta_reset.outcome is Outcome.COMPLETED and okta_reset.secret is not None
        await okta_c.check()

        [alice_e] = await entra_c.find_by_email(ALICE_ENTRA)
        assert (await entra_c.get(ALICE_ENTRA)) is not None  # a UPN in the path
        tap = await entra_c.execute(
            Action.TEMPORARY_ACCESS, alice_e, request_for(Action.TEMPORARY_ACCESS, alice_e)
        )
        assert tap.outcome is Outcome.COMPLETED and tap.secret is not None
        await entra_c.check()

        [alice_g] = await google_c.find_by_email(ALICE_GOOGLE)  # the address is in the path
        assert (await google_c.get(ALICE_GOOGLE_ID)) is not None
        reset = await google_c.execute(
            Action.RESET_PASSWORD, alice_g, request_for(Action.RESET_PASSWORD, alice_g)
        )
        assert reset.outcome is Outcome.COMPLETED and reset.secret is not None
        await google_c.check()

        rotated = await hook_c.execute(
            Action.ROTATE_SECRET, SERVICE, request_for(Action.ROTATE_SECRET, SERVICE)
        )
        assert rotated.outcome is Outcome.COMPLETED
    finally:
        for connector in built:
            await connector.aclose()  # type: ignore[attr-defined]

    handed = [r.secret.get_secret_value() for r in (okta_reset, tap, reset) if r.secret]
    events = assert_clean(capfd.readouterr().err, [*stands.secrets(), *handed])
    providers = {e.get("provider") for e in events if e.get("event") == "provider_call"}
    assert providers == {"Okta", "Microsoft Graph", "Google Workspace", "the webhook 'rotator'"}
    # Library records (the stand-ins' aiohttp access log) came through the same renderer.
    assert any(e.get("logger") == "aiohttp.access" for e in events)
    assert not any(str(e.get("logger", "")).startswith(("httpx", "httpcore")) for e in events)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_connectors_check_logs_json_without_people_queries_headers_or_tokens(
    level: str, stands: Stands, tmp_path: Path
) -> None:
    policy = yaml.safe_load((ROOT / "app/policy/example_policy.yaml").read_text())
    policy["connectors"] = connector_entries(stands)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOKEY_")}
    env.update(LOG_LEVEL=level, PYTHONPATH=str(ROOT))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "connectors",
        "check",
        "--policy",
        str(path),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    report = out.decode()
    assert process.returncode == 0, report + err.decode()
    assert "4 connectors checked" in report
    events = assert_clean(err.decode(), stands.secrets())
    providers = {e.get("provider") for e in events if e.get("event") == "provider_call"}
    assert providers >= {"Okta", "Microsoft Graph", "Google Workspace"}, providers
    debug = [e for e in events if e["level"] == "debug"]
    assert bool(debug) is (level == "DEBUG"), "LOG_LEVEL took effect, for libraries too"


def test_the_log_checks_catch_each_kind_of_leak() -> None:
    """The checks above would pass on an empty log: prove they catch each kind of leak."""
    line = json.dumps({"event": "x", "level": "info"})
    leaks = [
        "HTTP Request: GET http://x/api/v1/users?search=a",
        '{"event": "GET /users/bob%40example.com"}',
        "plain text",
        '{"event": "provider_call", "path": "/admin/directory/v1/users/a@example.com"}',
    ]
    for leak in leaks:
        with pytest.raises(AssertionError):
            assert_clean(f"{line}\n{leak}\n", [])
    with pytest.raises(AssertionError):
        assert_clean(json.dumps({"event": "token abc123secret"}), ["abc123secret"])
    assert assert_clean(line, ["abc123secret"]) == [{"event": "x", "level": "info"}]


def test_library_warnings_and_errors_lose_queries_addresses_and_headers(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """What a client library may still say at WARNING (urllib3 names the URL it retries) and a
    traceback quoting a URL reach the log scrubbed; below WARNING a client library says nothing,
    even when its level is lowered after start-up."""
    configure_logging("DEBUG")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/v1/users?search=profile.email+eq+%22bob%40example.com%22"
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        urllib3.PoolManager().request("GET", url, retries=urllib3.Retry(total=1, backoff_factor=0))
    logging.getLogger("httpcore").setLevel(logging.DEBUG)
    logging.getLogger("httpcore.http11").debug(
        "receive_response_headers.complete return_value=%r",
        (b"HTTP/1.1", 200, b"OK", [(b"link", f"<{url}>; rel=next".encode())]),
    )
    logging.getLogger("botocore.endpoint").warning(
        "sent headers [('Authorization', 'AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE0001')]"
    )
    try:
        raise RuntimeError(f"GET {url} answered 500 (Authorization: Bearer {OKTA_TOKEN})")
    except RuntimeError:
        logging.getLogger("aiohttp.server").exception("Error handling request")

    events = assert_clean(capfd.readouterr().err, [OKTA_TOKEN, "AKIAEXAMPLE0001", "rel=next"])
    by_logger = {e["logger"]: e for e in events}
    assert "Retrying" in by_logger["urllib3.connectionpool"]["event"]
    assert "/api/v1/users" in by_logger["urllib3.connectionpool"]["event"]
    assert "httpcore.http11" not in by_logger
    assert "('Authorization', [redacted])" in by_logger["botocore.endpoint"]["event"]
    assert "RuntimeError" in by_logger["aiohttp.server"]["exception"]


HOOK_KEY = "Zk9qHookCapability0123"
"""The last part of a Slack response_url: whoever holds the URL may post as twokey."""


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_a_slack_answer_that_fails_never_logs_its_response_url(
    level: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """An ephemeral answer through a response_url whose connection fails: slack_sdk would log
    the URL it retries (and at DEBUG the URL and body of every answer). Nothing of it may be
    written, at either level; slack_sdk's own loggers stay below WARNING too."""
    import aiohttp
    from slack_sdk.web.async_client import AsyncWebClient

    from app.channels.slack.handlers import SlackHandlers

    configure_logging(level)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api/"
    hook = f"http://127.0.0.1:{port}/commands/T0TWOKEY/1234567890/{HOOK_KEY}"
    async with aiohttp.ClientSession() as session:
        client = AsyncWebClient(token="xoxb-test", base_url=api, session=session)
        handlers = SlackHandlers(None, None, client, None, api_url=api)  # type: ignore[arg-type]
        with pytest.raises(aiohttp.ClientConnectionError):
            await handlers.answer_at_hook(hook, "Request TK-1 opened", [])
    logging.getLogger("slack_sdk.webhook.async_client").warning("POST %s failed", hook)
    events = assert_clean(capfd.readouterr().err, [HOOK_KEY])
    assert [e["event"] for e in events] == [f"POST {api[:-4]}commands/[redacted] failed"]


def test_slack_hook_urls_are_scrubbed_wherever_they_are_quoted() -> None:
    from app.logs import scrub

    for kind in ("commands", "actions", "services", "workflows", "triggers"):
        said = scrub(f"POST https://hooks.slack.com/{kind}/T0ABC/B1/{HOOK_KEY} failed")
        assert HOOK_KEY not in said
        assert said == f"POST https://hooks.slack.com/{kind}/[redacted] failed"
