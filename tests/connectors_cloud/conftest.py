"""Fixtures the Entra and Google connector tests share."""

from __future__ import annotations

import pytest

from tests.connectors_cloud.local_server import Waits


@pytest.fixture
def waits() -> Waits:
    return Waits()
