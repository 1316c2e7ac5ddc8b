"""The Host header the playground accepts: a loopback name and at most a port, nothing after."""

from __future__ import annotations

import pytest

from app.playground.web import _host_name, is_loopback


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("127.0.0.1:3000", True),
        ("localhost:3000", True),
        ("[::1]:3000", True),
        ("[::1]", True),
        ("127.0.0.1.evil.example", False),  # DNS rebinding: a name, not an address
        ("localhost.evil.example:3000", False),
        ("[::1].evil.example", False),  # trailing words after the bracketed address
        ("[::1]@evil.example:3000", False),
        ("127.0.0.1:evil.example", False),  # a "port" that is not one
        ("evil.example:3000", False),
    ],
)
def test_only_a_loopback_host_with_at_most_a_port_is_accepted(header: str, accepted: bool) -> None:
    assert is_loopback(_host_name(header)) is accepted
