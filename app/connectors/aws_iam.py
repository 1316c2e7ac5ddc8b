"""AWS IAM: rotate a non-human identity's access key, then retire the old one after a grace period.

An NHI whose ``Principal.system`` is ``aws`` (or the connector's ``system``) is an IAM user. Its
user name comes from a tag ``aws-iam-user:<name>`` on the principal or, without one, from its id
after ``nhi:`` (``nhi:deploy-bot`` -> ``deploy-bot``); see docs/connectors-aws-vault.md.

Rotation, and why in this order:

1. List the user's keys. AWS allows two per user: with two active keys there is no room for a
   new one and twokey will not guess which one is unused, so it refuses. With two keys of which
   one is inactive, that inactive key is deleted first (it is already out of use).
2. Create the new key: its id and secret are the owner's one-time secret.
3. Deactivate the old key (not delete: a forgotten consumer breaks loudly but can be switched
   back on during the grace period), and record on the user, as the tag
   ``twokey:delete-after:<key id>``, when it may be deleted. :meth:`AwsIamConnector.
   delete_expired_keys` is the operator job that deletes inactive keys whose time has come.

Calls run in a thread (boto3 is blocking) with botocore timeouts and botocore's own retries off:
a call that timed out may have been applied, so it is never repeated blindly and the outcome is
``unknown``. Only throttling, which AWS answers before doing anything, is retried, a few times
with backoff. Credentials come from the standard AWS chain (environment, profile, role), never
from the policy file.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as NotConnected
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from app.connectors.base import (
    RotatingConnector,
    Stopped,
    config_problem,
    is_loopback,
    refuse_inline_secrets,
    taken_back,
    time_to_change,
)
from app.connectors.checks import CheckResult, missing, note, works
from app.connectors.plugin import ConnectorPlugin, in_words
from app.domain.durations import Duration, format_duration
from app.domain.models import Action, Principal, Request
from app.ports import ExecutionResult, Outcome

if TYPE_CHECKING:
    from types_boto3_iam.client import IAMClient

log = logging.getLogger(__name__)

NHI_PREFIX = "nhi:"
USER_TAG_PREFIX = "aws-iam-user:"
"""A principal tag ``aws-iam-user:<name>`` names the IAM user behind an NHI."""
RETIRE_TAG_PREFIX = "twokey:delete-after:"
"""IAM user tag ``twokey:delete-after:<access key id>`` = UTC time the old key may be deleted."""
KEYS_PER_USER = 2
"""AWS's quota of access keys per IAM user."""

_IAM_USER_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")
_IAM_PATH = re.compile(r"/([\x21-\x7e]{1,510}/)?")
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+){1,3}")
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)
_UNCLEAR_STATUSES = frozenset({500, 502, 504})
"""Answers after which a change may or may not have been made (internal error, gateway)."""
_MAX_THROTTLE_WAIT = 20.0
_INLINE_CREDENTIALS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "credentials",
        "profile",
    }
)
_WIRE_LOGGERS = ("botocore.parsers", "botocore.endpoint", "botocore.auth", "botocore.awsrequest")

T = TypeVar("T")


# ---- configuration ---------------------------------------------------------------------------


class AwsIamConfig(BaseModel):
    """The ``type: aws_iam`` connector block of the policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["aws_iam"]
    name: str = Field(default="aws_iam", min_length=1, max_length=64)
    system: str = Field(default="aws", min_length=1, max_length=64)
    """The ``Principal.system`` value of the NHIs this connector rotates."""
    region: str
    endpoint_url: str | None = None
    """Only for tests and private endpoints; AWS's own endpoint is used when absent."""
    grace_period: Duration = 7 * 86400
    """How long an old key stays inactive before ``delete_expired_keys`` deletes it."""
    path_prefix: str = "/"
    """IAM path the clean-up job scans for users with retired keys."""
    connect_timeout: float = Field(default=5.0, gt=0, le=60)
    read_timeout: float = Field(default=15.0, gt=0, le=120)
    throttle_retries: int = Field(default=3, ge=0, le=5)

    @field_validator("region")
    @classmethod
    def _is_region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError(f"{value!r} is not an AWS region name (e.g. us-east-1, eu-west-2)")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _is_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"https?://[^\s/@]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not an http(s) URL (e.g. https://iam.amazonaws.com)")
        if value.startswith("http://") and not is_loopback(urlsplit(value).hostname or ""):
            raise ValueError(
                f"{value!r} uses plain http: new keys only travel over https "
                "(plain http is allowed for 127.0.0.1 and localhost, for local testing)"
            )
        return value

    @field_validator("path_prefix")
    @classmethod
    def _is_iam_path(cls, value: str) -> str:
        if not _IAM_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not an IAM path: it starts and ends with '/'")
        return value


def _reject_inline_credentials(raw: Mapping[str, Any]) -> None:
    refuse_inline_secrets(
        raw,
        _INLINE_CREDENTIALS,
        "aws_iam",
        "AWS credentials are never written in the policy file. twokey uses the standard AWS "
        "chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, AWS_PROFILE, "
        "or the role of the instance, task or pod it runs in.",
    )


# ---- which IAM user ---------------------------------------------------------------------------


def iam_user_for(target: Principal) -> str | None:
    """The IAM user behind an NHI: its ``aws-iam-user:`` tag, else its id after ``nhi:``.

    None when neither gives a valid IAM user name, or when several tags disagree: an unsure
    target is refused, never guessed.
    """
    tagged = {t.removeprefix(USER_TAG_PREFIX) for t in target.tags if t.startswith(USER_TAG_PREFIX)}
    if len(tagged) > 1:
        return None
    if tagged:
        name = tagged.pop()
    elif target.id.startswith(NHI_PREFIX):
        name = target.id.removeprefix(NHI_PREFIX)
    else:
        return None
    return name if _IAM_USER_NAME.fullmatch(name) else None


# ---- what a call can end in -------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    id: str
    active: bool
    created: datetime


class KeyCleanupReport(BaseModel):
    """What one run of :meth:`AwsIamConnector.delete_expired_keys` did, in words."""

    model_config = ConfigDict(frozen=True)

    deleted: tuple[str, ...] = ()
    """``user/key id`` of each old key deleted now."""
    waiting: tuple[str, ...] = ()
    """``user/key id until <time>`` of each retired key whose grace period is still running."""
    problems: tuple[str, ...] = ()
    """What could not be done and what a person should do about it."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _keep_wire_logs_quiet() -> None:
    """botocore's debug logs print whole responses and signed headers: new secret keys and
    session tokens would reach the logs. Drop those records wherever logging is configured."""
    for name in _WIRE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropWireDebug) for f in logger.filters):
            logger.addFilter(_DropWireDebug())


class _DropWireDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _short(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ---- the connector ----------------------------------------------------------------------------


class AwsIamConnector(RotatingConnector[AwsIamConfig]):
    """The :class:`~app.ports.IdentityProvider` port for IAM users' access keys (rotate-secret)."""

    provider = "AWS IAM"
    kind = "aws_iam"
    look = "Check the user's access keys in IAM"

    def __init__(self, config: AwsIamConfig, *, clock: Callable[[], datetime] = _utc_now) -> None:
        super().__init__(config)
        self._clock = clock
        self._iam: IAMClient = boto3.session.Session(region_name=config.region).client(
            "iam",
            endpoint_url=config.endpoint_url,
            config=Config(
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                retries={"total_max_attempts": 1, "mode": "standard"},
                user_agent_extra="twokey",
            ),
        )
        _keep_wire_logs_quiet()

    async def delete_expired_keys(self, now: datetime | None = None) -> KeyCleanupReport:
        """The operator job: delete old keys twokey retired whose grace period has passed.

        Only keys that are still inactive are deleted; one that was switched back on is left
        alone and reported. Safe to run as often as you like.
        """
        report = await asyncio.to_thread(self._delete_expired_keys, now or self._clock())
        log.info(
            "aws_iam clean-up: %d deleted, %d waiting, %d problems",
            len(report.deleted),
            len(report.waiting),
            len(report.problems),
        )
        for problem in report.problems:
            log.warning("aws_iam clean-up: %s", problem)
        return report

    # ---- `twokey connectors check` (in a worker thread) --------------------------------------

    def _check(self) -> list[CheckResult]:
        """Read-only: who the credentials are (STS) and whether IAM users can be listed."""
        what = "AWS credentials (sts get-caller-identity)"
        sts: Any = boto3.session.Session(region_name=self.config.region).client(
            "sts",
            endpoint_url=self.config.endpoint_url,
            config=Config(
                connect_timeout=self.config.connect_timeout,
                read_timeout=self.config.read_timeout,
                retries={"total_max_attempts": 1, "mode": "standard"},
                user_agent_extra="twokey",
            ),
        )
        try:
            who = self._call("identify the caller", sts.get_caller_identity, changes=False)
        except Stopped as stop:
            return [missing(what, f"{stop.words}; nothing else can be checked")]
        results = [works(what, f"signed in as {who.get('Arn', '?')}")]
        listing = f"list IAM users under {self.config.path_prefix} (iam:ListUsers, for aws-cleanup)"
        try:
            self._call(
                "list IAM users",
                partial(self._iam.list_users, PathPrefix=self.config.path_prefix, MaxItems=1),
                changes=False,
            )
            results.append(works(listing))
        except Stopped as stop:
            results.append(missing(listing, stop.words))
        results.append(
            note(
                "changes (rotate-secret)",
                "not tried: a read-only check cannot prove them; the credentials need "
                "iam:ListAccessKeys, iam:CreateAccessKey, iam:UpdateAccessKey, "
                "iam:DeleteAccessKey, iam:TagUser, iam:UntagUser and iam:ListUserTags on the NHI "
                "users",
            )
        )
        return results

    # ---- rotation (in a worker thread) -------------------------------------------------------

    def _not_known(self, target: Principal) -> str:
        if iam_user_for(target) is None:
            return (
                f"AWS IAM: cannot tell which IAM user {target.id} is. Give it one tag "
                f"'{USER_TAG_PREFIX}<user name>' or an id 'nhi:<user name>'; nothing done."
            )
        return ""

    def _where(self, target: Principal) -> str:
        return f"AWS IAM user {iam_user_for(target)}"

    def _rotate(self, target: Principal, request: Request) -> ExecutionResult:
        user = iam_user_for(target)
        assert user is not None  # _not_known checked it
        return self._rotate_access_key(user)

    def _rotate_access_key(self, user: str) -> ExecutionResult:
        prefix = f"AWS IAM user {user}: "
        done: list[str] = []
        try:
            keys = self._access_keys(user)
            inactive = sorted((k for k in keys if not k.active), key=lambda k: k.created)
            active = [k for k in keys if k.active]
            if len(keys) >= KEYS_PER_USER and not inactive:
                ids = ", ".join(k.id for k in keys)
                return ExecutionResult(
                    outcome=Outcome.FAILED,
                    detail=prefix + f"already has {len(keys)} active access keys ({ids}); AWS "
                    f"allows {KEYS_PER_USER}, so there is no room for a new one. Deactivate the "
                    "key that is no longer in use, then ask again. Nothing was changed.",
                )
            if len(keys) >= KEYS_PER_USER:
                spare = inactive[0]
                self._call(
                    f"delete the inactive access key {spare.id}",
                    partial(self._iam.delete_access_key, UserName=user, AccessKeyId=spare.id),
                    changes=True,
                )
                self._forget_retirement(user, spare.id)
                done.append(
                    f"deleted the inactive key {spare.id} first to make room (AWS allows "
                    f"{KEYS_PER_USER} keys per user)"
                )
            created = self._call(
                "create a new access key",
                partial(self._iam.create_access_key, UserName=user),
                changes=True,
            )["AccessKey"]
            new_id = created["AccessKeyId"]
            secret = SecretStr(
                f"aws_access_key_id = {new_id}\n"
                f"aws_secret_access_key = {created['SecretAccessKey']}\n"
            )
            label = f"new AWS access key for IAM user {user}"
            done.append(f"new access key {new_id} created")
            retired = []
            for old in active:
                try:
                    self._call(
                        f"deactivate the old access key {old.id}",
                        partial(
                            self._iam.update_access_key,
                            UserName=user,
                            AccessKeyId=old.id,
                            Status="Inactive",
                        ),
                        changes=True,
                    )
                except Stopped as stop:
                    if stop.outcome is Outcome.UNKNOWN:
                        # The new key certainly exists and the old one may be off: the owner
                        # needs the new key either way.
                        return ExecutionResult(
                            outcome=Outcome.UNKNOWN,
                            detail=prefix + "; ".join([*done, stop.words]),
                            secret=secret,
                            secret_label=label,
                        )
                    return self._undo_new_key(user, new_id, prefix, done, stop)
                retired.append(old.id)
            return ExecutionResult(
                outcome=Outcome.COMPLETED,
                detail=prefix + "; ".join([*done, *self._retire(user, retired)]) + ".",
                secret=secret,
                secret_label=label,
            )
        except Stopped as stop:
            return ExecutionResult(
                outcome=stop.outcome, detail=prefix + "; ".join([*done, stop.words])
            )

    def _undo_new_key(
        self, user: str, new_id: str, prefix: str, done: list[str], stop: Stopped
    ) -> ExecutionResult:
        """The old key could not be switched off: take the new one back so nothing half-done
        is left behind (two working keys, one of them unknown to its owner)."""
        return taken_back(
            prefix,
            done,
            stop,
            lambda: self._call(
                f"delete the new access key {new_id} again",
                partial(self._iam.delete_access_key, UserName=user, AccessKeyId=new_id),
                changes=True,
            ),
            by_hand=f". Delete access key {new_id} by hand: nobody holds its secret.",
            undone=f"; the new key {new_id} was deleted again, the old key is unchanged.",
        )

    def _retire(self, user: str, key_ids: list[str]) -> list[str]:
        """Record on the user when each deactivated key may go; words for the result."""
        if not key_ids:
            return ["there was no old active key to deactivate"]
        grace = format_duration(self.config.grace_period)
        deadline = _iso(self._clock() + timedelta(seconds=self.config.grace_period))
        words = [f"old key {key_id} deactivated; delete after {grace}" for key_id in key_ids]
        try:
            self._call(
                "record when the old key may be deleted",
                partial(
                    self._iam.tag_user,
                    UserName=user,
                    Tags=[{"Key": RETIRE_TAG_PREFIX + k, "Value": deadline} for k in key_ids],
                ),
                changes=True,
            )
        except Stopped as stop:
            words.append(
                f"{stop.words}: the clean-up job will not see it, so delete "
                f"{', '.join(key_ids)} by hand after {deadline}"
            )
        else:
            words.append(f"the clean-up job deletes it from {deadline}")
        return words

    def _forget_retirement(self, user: str, key_id: str) -> None:
        try:
            self._call(
                "remove the clean-up tag",
                partial(self._iam.untag_user, UserName=user, TagKeys=[RETIRE_TAG_PREFIX + key_id]),
                changes=True,
            )
        except Stopped as stop:
            log.warning("aws_iam: user %s, key %s: %s", user, key_id, stop.words)

    def _access_keys(self, user: str) -> list[_Key]:
        listed = self._call(
            "list its access keys",
            partial(self._iam.list_access_keys, UserName=user),
            changes=False,
        )
        keys = []
        for meta in listed.get("AccessKeyMetadata", []):
            key_id, status = meta.get("AccessKeyId"), meta.get("Status")
            if key_id and status:
                created = meta.get("CreateDate") or datetime.min.replace(tzinfo=UTC)
                keys.append(_Key(key_id, status == "Active", created))
        return keys

    # ---- clean-up (in a worker thread) -------------------------------------------------------

    def _delete_expired_keys(self, now: datetime) -> KeyCleanupReport:
        deleted: list[str] = []
        waiting: list[str] = []
        problems: list[str] = []
        try:
            users = self._users()
        except Stopped as stop:
            return KeyCleanupReport(problems=(f"could not list IAM users: {stop.words}",))
        for user in users:
            try:
                due, later = self._retirements(user, now)
                waiting.extend(f"{user}/{key_id} until {_iso(when)}" for key_id, when in later)
                if due:
                    self._delete_due(user, due, deleted, problems)
            except Stopped as stop:
                problems.append(f"user {user}: {stop.words}")
        return KeyCleanupReport(
            deleted=tuple(deleted), waiting=tuple(waiting), problems=tuple(problems)
        )

    def _users(self) -> list[str]:
        names: list[str] = []
        marker: str | None = None
        while True:
            page = self._call(
                "list IAM users",
                (
                    partial(self._iam.list_users, PathPrefix=self.config.path_prefix, Marker=marker)
                    if marker
                    else partial(self._iam.list_users, PathPrefix=self.config.path_prefix)
                ),
                changes=False,
            )
            names.extend(u["UserName"] for u in page.get("Users", []))
            marker = page.get("Marker") if page.get("IsTruncated") else None
            if not marker:
                return names

    def _retirements(
        self, user: str, now: datetime
    ) -> tuple[list[str], list[tuple[str, datetime]]]:
        """(keys due for deletion, keys still in their grace period) from the user's tags."""
        due: list[str] = []
        later: list[tuple[str, datetime]] = []
        marker: str | None = None
        while True:
            page = self._call(
                f"list the tags of IAM user {user}",
                (
                    partial(self._iam.list_user_tags, UserName=user, Marker=marker)
                    if marker
                    else partial(self._iam.list_user_tags, UserName=user)
                ),
                changes=False,
            )
            for tag in page.get("Tags", []):
                if not tag["Key"].startswith(RETIRE_TAG_PREFIX):
                    continue
                key_id = tag["Key"].removeprefix(RETIRE_TAG_PREFIX)
                try:
                    when = datetime.strptime(tag["Value"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                except ValueError:
                    when = now  # an unreadable deadline: treat as due, the key must be inactive
                if when <= now:
                    due.append(key_id)
                else:
                    later.append((key_id, when))
            marker = page.get("Marker") if page.get("IsTruncated") else None
            if not marker:
                return due, later

    def _delete_due(
        self, user: str, due: list[str], deleted: list[str], problems: list[str]
    ) -> None:
        keys = {k.id: k for k in self._access_keys(user)}
        for key_id in due:
            key = keys.get(key_id)
            if key is not None and key.active:
                problems.append(
                    f"{user}/{key_id} was switched back on, so it was not deleted: delete it or "
                    f"remove the tag {RETIRE_TAG_PREFIX}{key_id} from the user"
                )
                continue
            try:
                if key is not None:
                    self._call(
                        f"delete the old access key {key_id}",
                        partial(self._iam.delete_access_key, UserName=user, AccessKeyId=key_id),
                        changes=True,
                    )
                    deleted.append(f"{user}/{key_id}")
                self._call(
                    "remove the clean-up tag",
                    partial(
                        self._iam.untag_user, UserName=user, TagKeys=[RETIRE_TAG_PREFIX + key_id]
                    ),
                    changes=True,
                )
            except Stopped as stop:
                problems.append(f"{user}/{key_id}: {stop.words}")

    # ---- one AWS call ------------------------------------------------------------------------

    def _call(self, step: str, call: Callable[[], T], *, changes: bool) -> T:
        """Make one IAM call; turn every failure into words and a truthful outcome.

        ``changes`` says whether the call changes anything: a change that got no clear answer
        is UNKNOWN (it may have happened), a read that failed is FAILED (nothing happened).
        """
        attempt = 0
        while True:
            if changes:
                time_to_change(step, self.config.connect_timeout + self.config.read_timeout)
            try:
                return call()
            except ClientError as exc:
                error = exc.response.get("Error", {})
                meta = exc.response.get("ResponseMetadata", {})
                code = str(error.get("Code") or "Error")
                message = _short(str(error.get("Message") or ""))
                status = int(meta.get("HTTPStatusCode") or 0)
                if code in _THROTTLING_CODES or status == 429:
                    wait = self._throttle_wait(attempt, meta.get("HTTPHeaders", {}))
                    if wait is not None:
                        attempt += 1
                        time.sleep(wait)
                        continue
                    raise Stopped(
                        Outcome.FAILED,
                        f"AWS kept throttling the request to {step} ({code}) after "
                        f"{attempt + 1} tries; it was not carried out. Try again in a few minutes",
                    ) from None
                said = f"{code}: {message}" if message else code
                if changes and status in _UNCLEAR_STATUSES:
                    raise Stopped(
                        Outcome.UNKNOWN,
                        f"AWS answered HTTP {status} ({said}) to the request to {step}: it may "
                        "or may not have happened. Check the user's access keys in IAM before "
                        "trying again",
                    ) from None
                raise Stopped(Outcome.FAILED, f"AWS refused to {step} ({said})") from None
            except (NoCredentialsError, PartialCredentialsError):
                raise Stopped(
                    Outcome.FAILED,
                    f"no usable AWS credentials to {step}: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an IAM role",
                ) from None
            except NotConnected as exc:
                raise Stopped(
                    Outcome.FAILED,
                    f"could not reach AWS IAM to {step} ({type(exc).__name__}); nothing was sent",
                ) from None
            except BotoCoreError as exc:
                if changes:
                    raise Stopped(
                        Outcome.UNKNOWN,
                        f"no clear answer from AWS IAM to the request to {step} "
                        f"({type(exc).__name__}, read timeout {self.config.read_timeout:g}s): it "
                        "may or may not have happened. Check the user's access keys in IAM "
                        "before trying again",
                    ) from None
                raise Stopped(
                    Outcome.FAILED,
                    f"no answer from AWS IAM to {step} ({type(exc).__name__}); nothing was changed",
                ) from None

    def _throttle_wait(self, attempt: int, headers: Mapping[str, str]) -> float | None:
        """Seconds to wait before retrying a throttled call, or None to give up."""
        if attempt >= self.config.throttle_retries:
            return None
        retry_after = str(headers.get("retry-after", "")).strip()
        if retry_after.isdigit():
            wait = float(retry_after)
            return wait if wait <= _MAX_THROTTLE_WAIT else None
        backoff = min(_MAX_THROTTLE_WAIT, 0.5 * 2.0**attempt)
        return backoff * secrets.SystemRandom().uniform(0.5, 1.0)


def build(config: AwsIamConfig | Mapping[str, Any]) -> AwsIamConnector:
    """The connector from its policy-file block; a wrong setting is a clear start-up error."""
    if isinstance(config, AwsIamConfig):
        return AwsIamConnector(config)
    _reject_inline_credentials(config)
    try:
        parsed = AwsIamConfig.model_validate(config)
    except ValidationError as exc:
        raise config_problem("aws_iam", exc) from None
    return AwsIamConnector(parsed)


PLUGIN = ConnectorPlugin(
    type="aws_iam",
    config=AwsIamConfig,
    build=build,
    changes=lambda config: in_words({Action.ROTATE_SECRET}),
    check=AwsIamConnector.check,
    rotation=True,
    cleanup=AwsIamConnector.delete_expired_keys,
)
