"""The words an operator reads when a file named by a setting cannot be used."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.connectors.sandbox import DirectoryFileError, SandboxDirectory
from app.policy import PolicyFileError, load_policy


def test_an_unquoted_phone_number_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "people.yaml"
    path.write_text(
        "version: 1\npeople:\n  - id: alice\n    email: alice@example.com\n"
        "    phone: +447700900123\n"
    )
    with pytest.raises(DirectoryFileError) as caught:
        SandboxDirectory.from_file(path)
    message = str(caught.value)
    assert "people[0] 'alice', field phone: write the phone number in quotes" in message
    assert "'+447700900123'" in message and "Input should be" not in message


def test_a_directory_folder_names_twokey_directory(tmp_path: Path) -> None:
    with pytest.raises(DirectoryFileError) as caught:
        SandboxDirectory.from_file(tmp_path)
    assert "is a folder: point TWOKEY_DIRECTORY at the directory YAML file" in str(caught.value)


def test_a_policy_folder_is_called_a_folder(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError) as caught:
        load_policy(tmp_path)
    assert "it is a folder; give the path of the policy YAML file" in str(caught.value)
