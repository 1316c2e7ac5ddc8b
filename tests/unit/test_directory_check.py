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


def docs_inventory() -> str:
    """The NHI inventory example of docs/directory.md, as an operator copies it."""
    text = (ROOT / "docs" / "directory.md").read_text()
    return text.split("```yaml inventory\n", 1)[1].split("```", 1)[0]


def test_the_documented_nhi_inventory_is_checked_as_an_inventory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was refused ("people: required, but missing"), though `twokey serve` takes it."""
    path = tmp_path / "inventory.yaml"
    path.write_text(docs_inventory())
    assert main(["directory", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: a valid NHI inventory: 3 non-human identities, owned by 3 people" in out


def test_an_inventory_mistake_is_located(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(docs_inventory().replace("  - name: ci-deployer\n", "  - name: billing-api\n"))
    assert main(["directory", "check", str(path)]) == 1
    assert "billing-api" in capsys.readouterr().out


def test_a_file_that_is_not_there_cannot_be_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 (could not run), as `policy check` does; no word of TWOKEY_DIRECTORY, which the
    command did not read."""
    assert main(["directory", "check", str(tmp_path / "absent.yaml")]) == 2
    said = capsys.readouterr().err
    assert said == f"twokey: cannot read {tmp_path / 'absent.yaml'}: No such file or directory\n"
