"""The IdentityProvider contract, run against every connector plugin on its own stand-in.

What the core relies on from any connector, whatever the provider: it declares itself through
its plugin; it changes only what it says it supports and only for the request it was handed;
a supported change ends COMPLETED with the one-time secret in the result and nowhere else
(not in the words, a repr or the logs); a refusal ends FAILED and a lost answer UNKNOWN, never
an exception; and `connectors check` changes nothing. A new identity provider proves itself
by passing this suite (add its ``<type>_subject`` fixture in conftest.py).
"""

from __future__ import annotations

import logging

import pytest
import structlog

from app.connectors.checks import CheckResult
from app.connectors.registry import PLUGINS
from app.domain.models import Action, Principal
from app.ports import ExecutionResult, Outcome
from tests.connectors import request_for
from tests.contract.conftest import SUBJECTS, Subject


def test_every_registered_plugin_is_under_contract() -> None:
    assert sorted(plugin.type for plugin in PLUGINS) == sorted(SUBJECTS)


def test_the_plugin_says_what_it_built(subject: Subject) -> None:
    plugin = subject.plugin
    assert plugin.type == subject.settings["type"]
    config = plugin.config.model_validate(subject.settings)
    assert subject.connector.name == config.model_dump()["name"]
    assert plugin.changes(config)
    if plugin.directory is not None:
        directory = plugin.directory(subject.connector)
        assert directory is None or callable(directory.find_by_email)
    if plugin.rotation:  # rotators rotate NHI secrets and nothing else
        assert subject.action is Action.ROTATE_SECRET
        assert not subject.connector.supports(Action.RESET_PASSWORD, subject.target)


async def test_a_supported_change_completes_and_its_secret_is_in_the_result_only(
    subject: Subject, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    before = subject.changes()
    assert subject.connector.supports(subject.action, subject.target)

    with structlog.testing.capture_logs() as events:
        result = await execute(subject)

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert subject.changes() != before, "the stand-in saw no change"
    assert result.secret is not None and result.secret_label
    secret = result.secret.get_secret_value()
    shown = [result.detail, repr(result), str(result), repr(subject.connector)]
    logged = [caplog.text, *map(repr, caplog.records), *map(repr, events), *capsys.readouterr()]
    for text in shown + logged:
        for hidden in [secret, *subject.credentials]:
            assert hidden not in text, "a secret reached words, a repr or the logs"


async def test_an_unsupported_change_is_refused_before_any_call(subject: Subject) -> None:
    action, target = unsupported(subject)
    before = subject.changes()

    result = await subject.connector.execute(action, target, request_for(action, target))

    assert result.outcome is Outcome.FAILED and result.secret is None
    assert result.detail
    assert subject.changes() == before


async def test_a_change_for_another_request_is_refused_before_any_call(subject: Subject) -> None:
    other = Principal(id="someone-else", display_name="Someone Else", kind=subject.target.kind)
    before = subject.changes()

    result = await subject.connector.execute(
        subject.action, subject.target, request_for(subject.action, other)
    )

    assert result.outcome is Outcome.FAILED and result.secret is None
    assert subject.changes() == before


async def test_a_refusal_is_failed_with_words_not_an_exception(subject: Subject) -> None:
    if subject.refuse_next is None:
        pytest.skip(f"the {subject.plugin.type} stand-in cannot be made to refuse")
    subject.refuse_next()

    result = await execute(subject)

    assert result.outcome is Outcome.FAILED, result.detail
    assert result.detail and result.secret is None


async def test_a_lost_answer_is_unknown_not_failed_or_an_exception(subject: Subject) -> None:
    if subject.lose_next is None:
        pytest.skip(f"the {subject.plugin.type} stand-in cannot be made to lose an answer")
    subject.lose_next()

    result = await execute(subject)

    assert result.outcome is Outcome.UNKNOWN, result.detail
    assert result.detail
    if result.secret is not None:  # a secret that may be in force still goes to the owner
        assert result.secret.get_secret_value() not in result.detail


async def test_check_is_read_only(subject: Subject) -> None:
    check = subject.plugin.check
    assert check is not None, "every connector offers read-only checks"
    before = subject.changes()

    results = await check(subject.for_checks)

    assert results and all(isinstance(result, CheckResult) for result in results)
    assert subject.changes() == before, "`connectors check` changed something"
    words = " ".join(f"{r.what} {r.detail}" for r in results)
    for hidden in subject.credentials:
        assert hidden not in words


# ---- helpers ----------------------------------------------------------------------------------


async def execute(subject: Subject) -> ExecutionResult:
    request = request_for(subject.action, subject.target)
    return await subject.connector.execute(subject.action, subject.target, request)


def unsupported(subject: Subject) -> tuple[Action, Principal]:
    """A change this connector does not make for its target: the first action it refuses."""
    for action in Action:
        if not subject.connector.supports(action, subject.target):
            return action, subject.target
    raise AssertionError(f"{subject.plugin.type} claims to support every action")
