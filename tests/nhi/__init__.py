"""Tests of the NHI secret-rotation connectors (AWS IAM, Vault), with helpers they share."""

from __future__ import annotations

import logging

import pytest

from app.domain.models import Action, Plan, Principal, PrincipalKind, Request


def nhi(principal_id: str, system: str, *, tags: frozenset[str] = frozenset()) -> Principal:
    """A non-human identity owned by alice, living in ``system``."""
    return Principal(
        id=principal_id,
        kind=PrincipalKind.NHI,
        display_name=principal_id.removeprefix("nhi:"),
        owner_id="alice",
        system=system,
        tags=tags,
    )


def rotation_request(target: Principal, request_id: str = "TK-7R0TATE1") -> Request:
    """An approved rotate-secret request for ``target``, as the core hands it to a connector."""
    return Request(
        id=request_id,
        ticket="INC-4242",
        action=Action.ROTATE_SECRET,
        target_id=target.id,
        target_name=target.name,
        target_kind=target.kind,
        target_system=target.system,
        owner_id=target.owner_id or "alice",
        requester_id="bob",
        reason_code="suspected-leak",
        plan=Plan(rule="nhi", tier="high"),
        created_at=1_700_000_000_000,
        expires_at=1_700_000_000_000 + 3_600_000,
    )


def assert_never_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """No captured record, message, argument or traceback contains any of ``secrets``."""
    assert caplog.records, "nothing was logged at all: the capture is not working"
    everything = [caplog.text]
    for record in caplog.records:
        everything.append(record.getMessage())
        everything.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            everything.append(repr(record.exc_info[1]))
    text = "\n".join(everything)
    for secret in secrets:
        assert secret, "an empty secret cannot be searched for"
        assert secret not in text, "a secret reached the logs"


def capture_everything(caplog: pytest.LogCaptureFixture) -> None:
    """Capture every logger at DEBUG, as an operator turning on full logging would."""
    caplog.set_level(logging.DEBUG)
