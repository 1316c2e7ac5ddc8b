"""`twokey directory check FILE`, and a policy and a directory file swapped: named as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from app.connector_setup import check_policy_file

ROOT = Path(__file__).resolve().parents[2]
DIRECTORY = ROOT / "app" / "connectors" / "example_directory.yaml"
POLICY = ROOT / "app" / "policy" / "example_policy.yaml"


def test_a_valid_directory_is_summed_up(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["directory", "check", str(DIRECTORY)]) == 0
    out = capsys.readouterr().out
    assert "a valid sandbox directory: 12 people (1 disabled), 2 non-human identities" in out
    assert "helpdesk-leads" in out


def test_every_mistake_is_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(
        "version: 1\npeople:\n"
        "  - {id: bob, email: bob@example.com, groups: [helpdesk]}\n"
        "  - {id: bob, email: bob2@example.com}\n"
        "nhis:\n  - {name: api, owner: nobody}\n"
    )
    assert main(["directory", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "2 problems" in out and "bob" in out and "nobody" in out


def test_a_policy_given_as_the_directory_is_called_a_policy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["directory", "check", str(POLICY)]) == 1
    assert "this looks like a policy file" in capsys.readouterr().out


def test_a_directory_given_as_the_policy_is_called_a_directory() -> None:
    code, text = check_policy_file(DIRECTORY)
    assert code == 1
    assert "this looks like a sandbox directory file" in text
    assert text.count("\n  ") == 1  # that one sentence, not a screen of missing fields
