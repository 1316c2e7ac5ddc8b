"""The AWS IAM connector against moto's IAM server, behind a fault-injecting local proxy.

moto (server mode, in a thread on a free port) plays IAM. Between the connector and moto sits a
small aiohttp proxy on 127.0.0.1 that records every IAM action the connector sends and, when a
test asks, answers as AWS does when it throttles or refuses, or forwards a call and then never
answers (a lost answer). Nothing of ours is patched.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import boto3
import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer
from moto.server import ThreadedMotoServer

from app.connectors.aws_iam import (
    RETIRE_TAG_PREFIX,
    AwsIamConnector,
    build,
    iam_user_for,
)
from app.connectors.base import ConnectorConfigError
from app.domain.models import Action, Principal, PrincipalKind
from app.ports import ACT_BEFORE, ExecutionResult, Outcome
from tests.nhi import assert_never_logged, capture_everything, nhi, rotation_request

USER = "deploy-bot"
IAM_XMLNS = "https://iam.amazonaws.com/doc/2010-05-08/"
SLOW_S = 2.0
"""How long a ``slow`` call takes (an IAM under load; under the read timeout of DEADLINED)."""
DEADLINED = {"connect_timeout": 0.5, "read_timeout": 3}
"""A change may take 3.5 s at most: with the deadline 4.5 s away, a change starts only within
the first second, and never after a slow call (robust to a loaded machine either way)."""

# ---- moto and the proxy in front of it ---------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The standard chain finds these made-up keys in the environment, and nothing else."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOPERATOR00000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-secret-" + secrets.token_hex(8))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def iam(moto_url: str, aws_credentials: None) -> Any:
    """A plain boto3 client straight to moto, for arranging and inspecting IAM in tests."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    return boto3.session.Session().client("iam", endpoint_url=moto_url, region_name="us-east-1")


@dataclass
class Call:
    action: str
    params: dict[str, str]


@dataclass
class FaultyIam:
    """A recording proxy to moto that can throttle, refuse or lose the answer to an action."""

    upstream: str
    calls: list[Call] = field(default_factory=list)
    faults: dict[str, list[str]] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    session: aiohttp.ClientSession | None = None

    def on(self, action: str, *behaviours: str) -> None:
        """Answer the next calls of ``action`` with these behaviours, in order: ``throttle``,
        ``deny``, ``lose-answer`` (forward, then never answer), ``hang`` (never forward),
        ``slow`` (forward after ``SLOW_S``)."""
        self.faults.setdefault(action, []).extend(behaviours)

    def actions(self) -> list[str]:
        return [c.action for c in self.calls]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        params = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        action = params.get("Action", "?")
        self.calls.append(Call(action, params))
        assert params.get("Version") == "2010-05-08", "IAM query API version missing"
        behaviour = self.faults.get(action, []).pop(0) if self.faults.get(action) else ""
        if behaviour == "throttle":
            return _iam_error(400, "Throttling", "Rate exceeded")
        if behaviour == "deny":
            return _iam_error(
                403,
                "AccessDenied",
                f"User: arn:aws:iam::123456789012:user/twokey is not authorized to perform: "
                f"iam:{action} on resource: user {params.get('UserName')}",
            )
        if behaviour == "hang":
            await self.release.wait()
            return web.Response(status=504)
        if behaviour == "slow":
            await asyncio.sleep(SLOW_S)
        answer = await self.forward(request, body)
        if behaviour == "lose-answer":
            await self.release.wait()
        return answer

    async def forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host"}}
        async with self.session.post(self.upstream + request.path, data=body, headers=headers) as r:
            return web.Response(status=r.status, body=await r.read(), content_type=r.content_type)


def _iam_error(status: int, code: str, message: str) -> web.Response:
    """An error as IAM's query API sends it (XML ErrorResponse)."""
    xml = (
        f'<ErrorResponse xmlns="{IAM_XMLNS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
        f"<RequestId>{secrets.token_hex(16)}</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, text=xml, content_type="text/xml")


@pytest.fixture
async def aws(moto_url: str, iam: Any) -> AsyncIterator[FaultyIam]:
    proxy = FaultyIam(moto_url)
    proxy.session = aiohttp.ClientSession()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    proxy.url = f"http://127.0.0.1:{server.port}"
    try:
        yield proxy
    finally:
        proxy.release.set()
        await server.close()
        await proxy.session.close()


def connector(aws: FaultyIam, **settings: Any) -> AwsIamConnector:
    config = {
        "type": "aws_iam",
        "region": "us-east-1",
        "endpoint_url": aws.url,
        "grace_period": "7d",
        "read_timeout": 2,
        "throttle_retries": 2,
    }
    return build(config | settings)


def keys_of(iam: Any, user: str = USER) -> dict[str, str]:
    """{access key id: Active|Inactive} as IAM (moto) holds them."""
    listed = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    return {k["AccessKeyId"]: k["Status"] for k in listed}


def tags_of(iam: Any, user: str = USER) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=user)["Tags"]}


def user_with_keys(iam: Any, *statuses: str) -> list[str]:
    iam.create_user(UserName=USER)
    ids = []
    for status in statuses:
        key_id = iam.create_access_key(UserName=USER)["AccessKey"]["AccessKeyId"]
        if status == "Inactive":
            iam.update_access_key(UserName=USER, AccessKeyId=key_id, Status="Inactive")
        ids.append(key_id)
    return ids


def secret_lines(text: str) -> dict[str, str]:
    pairs = (line.split(" = ", 1) for line in text.strip().splitlines())
    return {k: v for k, v in pairs}


BOT = nhi(f"nhi:{USER}", "aws")


# ---- rotation ---------------------------------------------------------------------------------


async def test_rotation_creates_a_new_key_and_deactivates_the_old_one(
    aws: FaultyIam, iam: Any
) -> None:
    (old,) = user_with_keys(iam, "Active")
    before = datetime.now(UTC)

    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    handed = secret_lines(result.secret.get_secret_value())
    new = handed["aws_access_key_id"]
    assert len(handed["aws_secret_access_key"]) >= 40
    assert keys_of(iam) == {old: "Inactive", new: "Active"}
    assert f"old key {old} deactivated; delete after 7d" in result.detail
    assert handed["aws_secret_access_key"] not in result.detail + repr(result)
    assert result.secret_label == f"new AWS access key for IAM user {USER}"
    deadline = datetime.strptime(tags_of(iam)[RETIRE_TAG_PREFIX + old], "%Y-%m-%dT%H:%M:%SZ")
    expected = before + timedelta(days=7)
    assert abs(deadline.replace(tzinfo=UTC) - expected) < timedelta(minutes=5)
    assert aws.actions() == ["ListAccessKeys", "CreateAccessKey", "UpdateAccessKey", "TagUser"]
    update = aws.calls[2].params
    assert update == update | {"UserName": USER, "AccessKeyId": old, "Status": "Inactive"}


async def test_the_new_key_really_works(aws: FaultyIam, iam: Any) -> None:
    user_with_keys(iam, "Active")
    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))
    assert result.secret is not None
    handed = secret_lines(result.secret.get_secret_value())
    as_the_nhi = boto3.session.Session(
        aws_access_key_id=handed["aws_access_key_id"],
        aws_secret_access_key=handed["aws_secret_access_key"],
    ).client("iam", endpoint_url=aws.upstream, region_name="us-east-1")
    listed = as_the_nhi.list_access_keys(UserName=USER)["AccessKeyMetadata"]
    assert handed["aws_access_key_id"] in {k["AccessKeyId"] for k in listed}


async def test_a_user_without_keys_gets_a_first_one(aws: FaultyIam, iam: Any) -> None:
    user_with_keys(iam)
    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))
    assert result.outcome is Outcome.COMPLETED, result.detail
    assert list(keys_of(iam).values()) == ["Active"]
    assert "no old active key" in result.detail
    assert "UpdateAccessKey" not in aws.actions()


async def test_two_active_keys_are_refused_without_any_change(aws: FaultyIam, iam: Any) -> None:
    first, second = user_with_keys(iam, "Active", "Active")

    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))

    assert result.outcome is Outcome.FAILED
    assert result.secret is None
    assert "2 active access keys" in result.detail
    assert first in result.detail and second in result.detail
    assert "Deactivate the key that is no longer in use" in result.detail
    assert keys_of(iam) == {first: "Active", second: "Active"}
    assert aws.actions() == ["ListAccessKeys"]


async def test_an_inactive_second_key_is_deleted_first(aws: FaultyIam, iam: Any) -> None:
    active, inactive = user_with_keys(iam, "Active", "Inactive")

    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    new = secret_lines(result.secret.get_secret_value())["aws_access_key_id"]
    assert keys_of(iam) == {active: "Inactive", new: "Active"}
    assert f"deleted the inactive key {inactive} first" in result.detail
    assert aws.actions()[:3] == ["ListAccessKeys", "DeleteAccessKey", "UntagUser"]
    assert aws.calls[1].params["AccessKeyId"] == inactive


async def test_with_two_inactive_keys_the_older_one_makes_room(aws: FaultyIam, iam: Any) -> None:
    older, newer = user_with_keys(iam, "Inactive", "Inactive")

    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    new = secret_lines(result.secret.get_secret_value())["aws_access_key_id"]
    assert keys_of(iam) == {newer: "Inactive", new: "Active"}
    assert aws.calls[1].params["AccessKeyId"] == older


async def test_a_refused_tag_still_completes_and_says_what_to_do(aws: FaultyIam, iam: Any) -> None:
    (old,) = user_with_keys(iam, "Active")
    aws.on("TagUser", "deny")

    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))

    assert result.outcome is Outcome.COMPLETED
    assert result.secret is not None
    assert f"delete {old} by hand after" in result.detail
    assert keys_of(iam)[old] == "Inactive"
    assert tags_of(iam) == {}


async def test_the_iam_user_name_can_come_from_a_tag(aws: FaultyIam, iam: Any) -> None:
    iam.create_user(UserName="Billing.Export@prod")
    target = nhi("nhi:billing-export", "aws", tags=frozenset({"aws-iam-user:Billing.Export@prod"}))
    result = await connector(aws).execute(Action.ROTATE_SECRET, target, rotation_request(target))
    assert result.outcome is Outcome.COMPLETED, result.detail
    assert len(keys_of(iam, "Billing.Export@prod")) == 1


def test_which_iam_user_an_nhi_is() -> None:
    assert iam_user_for(nhi("nhi:deploy-bot", "aws")) == "deploy-bot"
    tagged = nhi("svc-42", "aws", tags=frozenset({"aws-iam-user:ci", "prod"}))
    assert iam_user_for(tagged) == "ci"
    assert iam_user_for(nhi("svc-42", "aws")) is None  # no nhi: prefix and no tag
    two = frozenset({"aws-iam-user:a", "aws-iam-user:b"})
    assert iam_user_for(nhi("nhi:x", "aws", tags=two)) is None  # unsure: refused
    assert iam_user_for(nhi("nhi:has space", "aws")) is None


def test_what_the_connector_supports(aws: FaultyIam) -> None:
    iam_connector = connector(aws)
    assert iam_connector.supports(Action.ROTATE_SECRET, BOT)
    assert not iam_connector.supports(Action.RESET_PASSWORD, BOT)
    assert not iam_connector.supports(Action.ROTATE_SECRET, nhi("nhi:x", "vault"))
    person = Principal(id="alice", kind=PrincipalKind.HUMAN, system="aws")
    assert not iam_connector.supports(Action.ROTATE_SECRET, person)
    assert not iam_connector.supports(Action.ROTATE_SECRET, nhi("svc-1", "aws"))
    other_account = connector(aws, system="aws-prod")
    assert other_account.supports(Action.ROTATE_SECRET, nhi("nhi:x", "aws-prod"))


async def test_an_unsupported_target_fails_with_words_and_no_call(aws: FaultyIam) -> None:
    target = nhi("svc-1", "aws")
    result = await connector(aws).execute(Action.ROTATE_SECRET, target, rotation_request(target))
    assert result.outcome is Outcome.FAILED
    assert "cannot tell which IAM user" in result.detail
    assert aws.calls == []


# ---- provider errors, timeouts, throttling ------------------------------------------------------


async def test_an_unknown_user_fails_with_aws_words(aws: FaultyIam, iam: Any) -> None:
    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))
    assert result.outcome is Outcome.FAILED
    assert result.secret is None
    assert "NoSuchEntity" in result.detail and "cannot be found" in result.detail
    assert aws.actions() == ["ListAccessKeys"]


async def test_a_lost_answer_to_create_is_unknown_and_never_retried(
    aws: FaultyIam, iam: Any
) -> None:
    (old,) = user_with_keys(iam, "Active")
    aws.on("CreateAccessKey", "lose-answer")

    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))

    assert result.outcome is Outcome.UNKNOWN
    assert result.secret is None
    assert "may or may not have happened" in result.detail
    assert aws.actions() == ["ListAccessKeys", "CreateAccessKey"]
    keys = keys_of(iam)
    assert len(keys) == 2 and keys[old] == "Active"  # the key exists; the old one untouched


async def test_a_throttled_create_is_retried_and_makes_one_key(aws: FaultyIam, iam: Any) -> None:
    (old,) = user_with_keys(iam, "Active")
    aws.on("CreateAccessKey", "throttle")

    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert aws.actions().count("CreateAccessKey") == 2
    assert len(keys_of(iam)) == 2 and keys_of(iam)[old] == "Inactive"


async def test_throttling_that_does_not_stop_fails_with_words(aws: FaultyIam, iam: Any) -> None:
    (old,) = user_with_keys(iam, "Active")
    aws.on("CreateAccessKey", "throttle", "throttle")

    result = await connector(aws, throttle_retries=1).execute(
        Action.ROTATE_SECRET, BOT, rotation_request(BOT)
    )

    assert result.outcome is Outcome.FAILED
    assert "kept throttling" in result.detail and "Throttling" in result.detail
    assert aws.actions().count("CreateAccessKey") == 2
    assert keys_of(iam) == {old: "Active"}


async def test_a_refused_deactivation_takes_the_new_key_back(aws: FaultyIam, iam: Any) -> None:
    (old,) = user_with_keys(iam, "Active")
    aws.on("UpdateAccessKey", "deny")

    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))

    assert result.outcome is Outcome.FAILED
    assert result.secret is None
    assert "AccessDenied" in result.detail and "deleted again" in result.detail
    assert keys_of(iam) == {old: "Active"}
    assert aws.actions() == [
        "ListAccessKeys",
        "CreateAccessKey",
        "UpdateAccessKey",
        "DeleteAccessKey",
    ]


# The service hands connectors a deadline (ACT_BEFORE): a rotation in a worker thread outlives a
# timeout, so it must stop itself before a change that could land after the lease.


async def rotate_with_a_deadline(aws: FaultyIam) -> ExecutionResult:
    """A rotation as the service runs it, with its deadline 4.5 s away (see DEADLINED)."""
    handed = ACT_BEFORE.set(time.monotonic() + 4.5)
    try:
        return await connector(aws, **DEADLINED).execute(
            Action.ROTATE_SECRET, BOT, rotation_request(BOT)
        )
    finally:
        ACT_BEFORE.reset(handed)


async def test_no_change_starts_that_could_end_after_the_deadline(aws: FaultyIam, iam: Any) -> None:
    (old,) = user_with_keys(iam, "Active")
    aws.on("ListAccessKeys", "slow")
    result = await rotate_with_a_deadline(aws)

    assert result.outcome is Outcome.FAILED and result.secret is None
    assert "time to act ran out before it could create a new access key" in result.detail
    assert aws.actions() == ["ListAccessKeys"]
    assert keys_of(iam) == {old: "Active"}


async def test_a_rotation_stopped_by_the_deadline_still_takes_its_new_key_back(
    aws: FaultyIam, iam: Any
) -> None:
    """Taking back is restoring: never stopped by the time limit."""
    (old,) = user_with_keys(iam, "Active")
    aws.on("CreateAccessKey", "slow")
    result = await rotate_with_a_deadline(aws)

    assert result.outcome is Outcome.FAILED and result.secret is None
    assert "time to act ran out before it could deactivate" in result.detail
    assert "deleted again" in result.detail
    assert aws.actions() == ["ListAccessKeys", "CreateAccessKey", "DeleteAccessKey"]
    assert keys_of(iam) == {old: "Active"}


async def test_a_lost_answer_to_deactivate_is_unknown_but_hands_over_the_new_key(
    aws: FaultyIam, iam: Any
) -> None:
    (old,) = user_with_keys(iam, "Active")
    aws.on("UpdateAccessKey", "lose-answer")

    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))

    assert result.outcome is Outcome.UNKNOWN
    assert result.secret is not None  # the new key exists for sure: its owner needs it
    new = secret_lines(result.secret.get_secret_value())["aws_access_key_id"]
    assert keys_of(iam) == {old: "Inactive", new: "Active"}
    assert aws.actions().count("UpdateAccessKey") == 1


async def test_an_unreachable_endpoint_fails_and_changes_nothing(aws: FaultyIam, iam: Any) -> None:
    closed = TestServer(web.Application(), host="127.0.0.1")
    await closed.start_server()
    port = closed.port
    await closed.close()  # nothing listens there any more
    user_with_keys(iam, "Active")

    result = await connector(aws, endpoint_url=f"http://127.0.0.1:{port}").execute(
        Action.ROTATE_SECRET, BOT, rotation_request(BOT)
    )

    assert result.outcome is Outcome.FAILED
    assert "could not reach AWS IAM" in result.detail


async def test_missing_credentials_fail_with_words(
    aws: FaultyIam, iam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_with_keys(iam, "Active")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    result = await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))

    assert result.outcome is Outcome.FAILED
    assert "no usable AWS credentials" in result.detail
    assert aws.calls == []


# ---- the clean-up job -------------------------------------------------------------------------


async def test_old_keys_are_deleted_only_after_the_grace_period(aws: FaultyIam, iam: Any) -> None:
    (old,) = user_with_keys(iam, "Active")
    iam_connector = connector(aws)
    rotated = await iam_connector.execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))
    assert rotated.secret is not None
    new = secret_lines(rotated.secret.get_secret_value())["aws_access_key_id"]
    now = datetime.now(UTC)

    early = await iam_connector.delete_expired_keys(now=now + timedelta(days=1))
    assert early.deleted == () and early.problems == ()
    assert [w.split(" until ")[0] for w in early.waiting] == [f"{USER}/{old}"]
    assert keys_of(iam) == {old: "Inactive", new: "Active"}

    due = await iam_connector.delete_expired_keys(now=now + timedelta(days=7, hours=1))
    assert due.deleted == (f"{USER}/{old}",) and due.problems == ()
    assert keys_of(iam) == {new: "Active"}
    assert RETIRE_TAG_PREFIX + old not in tags_of(iam)

    again = await iam_connector.delete_expired_keys(now=now + timedelta(days=30))
    assert again == again.model_copy(update={"deleted": (), "waiting": (), "problems": ()})


async def test_a_key_switched_back_on_is_not_deleted(aws: FaultyIam, iam: Any) -> None:
    (old,) = user_with_keys(iam, "Active")
    iam_connector = connector(aws)
    await iam_connector.execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))
    iam.update_access_key(UserName=USER, AccessKeyId=old, Status="Active")

    report = await iam_connector.delete_expired_keys(now=datetime.now(UTC) + timedelta(days=8))

    assert report.deleted == ()
    assert len(report.problems) == 1 and "switched back on" in report.problems[0]
    assert keys_of(iam)[old] == "Active"


async def test_a_key_deleted_by_hand_only_loses_its_tag(aws: FaultyIam, iam: Any) -> None:
    (old,) = user_with_keys(iam, "Active")
    iam_connector = connector(aws)
    await iam_connector.execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))
    iam.delete_access_key(UserName=USER, AccessKeyId=old)

    report = await iam_connector.delete_expired_keys(now=datetime.now(UTC) + timedelta(days=8))

    assert report.deleted == () and report.problems == ()
    assert tags_of(iam) == {}


async def test_the_clean_up_only_looks_under_its_iam_path(aws: FaultyIam, iam: Any) -> None:
    (old,) = user_with_keys(iam, "Active")
    await connector(aws).execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))
    elsewhere = connector(aws, path_prefix="/nhi/")

    report = await elsewhere.delete_expired_keys(now=datetime.now(UTC) + timedelta(days=8))

    assert report.deleted == () and report.waiting == ()
    assert old in keys_of(iam)
    assert aws.calls[-1].params["PathPrefix"] == "/nhi/"


# ---- configuration ----------------------------------------------------------------------------


def test_credentials_in_the_policy_file_are_refused() -> None:
    with pytest.raises(ConnectorConfigError, match="never written in the policy file") as caught:
        build(
            {
                "type": "aws_iam",
                "region": "us-east-1",
                "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            }
        )
    assert "wJalrXUtnFEMI" not in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"region": "Ireland"}, "not an AWS region"),
        ({"region": "us-east-1", "grace_period": "soon"}, "grace_period"),
        ({"region": "us-east-1", "colour": "red"}, "colour: unknown setting"),
        ({"region": "us-east-1", "endpoint_url": "ftp://x"}, "not an http(s) URL"),
        ({"region": "us-east-1", "endpoint_url": "http://iam.example.com"}, "plain http"),
        ({"region": "us-east-1", "path_prefix": "nhi"}, "starts and ends with '/'"),
        ({}, "region: Field required"),
    ],
)
def test_bad_settings_are_named(settings: dict[str, Any], words: str) -> None:
    with pytest.raises(ConnectorConfigError, match="aws_iam connector configuration") as caught:
        build({"type": "aws_iam"} | settings)
    assert words in str(caught.value)


def test_a_grace_period_is_a_duration() -> None:
    built = build({"type": "aws_iam", "region": "eu-west-2", "grace_period": "36h"})
    assert built.config.grace_period == 36 * 3600
    assert built.name == "aws_iam"


# ---- secrets never reach the logs -------------------------------------------------------------


async def test_no_secret_reaches_the_logs(
    aws: FaultyIam, iam: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capture_everything(caplog)
    user_with_keys(iam, "Active")
    iam_connector = connector(aws)
    first = await iam_connector.execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))
    aws.on("UpdateAccessKey", "lose-answer")
    second = await iam_connector.execute(Action.ROTATE_SECRET, BOT, rotation_request(BOT))
    await iam_connector.delete_expired_keys(now=datetime.now(UTC) + timedelta(days=8))

    handed = []
    for result in (first, second):
        assert result.secret is not None
        handed.append(secret_lines(result.secret.get_secret_value())["aws_secret_access_key"])
    operator_secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert any(r.name.startswith("botocore") for r in caplog.records)  # wire logs were on
    assert_never_logged(caplog, *handed, operator_secret)
