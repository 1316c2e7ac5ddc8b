"""The checkout is all the tests and scripts need: nothing reads a file outside the repository.

A test that reads a folder beside the checkout (the Okta spec once came from one) passes on
one machine and fails everywhere else. Every file under tests/, scripts/ and app/ is scanned for
the ways code reaches outside: ``Path(__file__)`` climbed above the repository root (worked
out from each file's real place, not guessed), ``$(dirname "$0")/..`` climbed too far in a
script, a relative path into ``..``, and absolute paths into someone's workspace or home.
Planted examples prove each rule still catches what it is for.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SIBLING = "sha" + "red"
"""The folder beside the checkout that the Okta spec was once read from; spelled in two
pieces so that this file, which plants such paths on purpose, never holds one whole."""
SCANNED = ("tests", "scripts", "app")
SUFFIXES = {".py", ".sh", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".json", ""}

_FILE_CLIMB = re.compile(
    r"Path\(\s*__file__\s*\)(?:\.(?:resolve|absolute)\(\))?(?P<steps>(?:\.parents\[\d+\]|\.parent\b)+)"
)
_DIRNAME_CLIMB = re.compile(
    r"(?P<dirnames>(?:os\.path\.dirname\(\s*)+)(?:os\.path\.(?:abspath|realpath)\(\s*)?__file__"
)
_SCRIPT_CLIMB = re.compile(
    r"dirname\s+\"?\$(?:0|\{BASH_SOURCE\[0\]\}|BASH_SOURCE)\"?\)(?P<ups>(?:/\.\.)+)"
)
_OUTSIDE_WORDS = re.compile(
    rf"\.\./+{SIBLING}\b"  # the folder beside the checkout the Okta spec was read from
    rf"|\b{SIBLING}/specs\b"
    r"|(?:Path|open)\(\s*[rbf]?[\"']\.\.(?:/|[\"'])"  # Path("../x"), open("..")
    r"|/\s*[\"']\.\.[\"']"  # some_path / ".."
    r"|[\"'`\s=(](?:/work|/home|/Users|/root|/mnt)/"  # someone's workspace or home
    r"|~/"
)


def _climbs(steps: str) -> int:
    """How many folders up ``.parent`` / ``.parents[k]`` steps go from the file itself."""
    up = 0
    for step in re.findall(r"\.parents\[(\d+)\]|\.parent\b", steps):
        up += int(step) + 1 if step else 1
    return up


def escapes(relative: str, text: str) -> list[str]:
    """Every place in ``text`` (a file at ``relative`` in the repo) that reaches outside it."""
    file = ROOT / relative
    found: list[str] = []

    def check(up: int, where: str) -> None:
        target = file
        for _ in range(up):
            target = target.parent
        if not target.is_relative_to(ROOT):
            found.append(f"{relative}: {where.strip()} climbs to {target}, outside {ROOT}")

    for match in _FILE_CLIMB.finditer(text):
        check(_climbs(match.group("steps")), match.group(0))
    for match in _DIRNAME_CLIMB.finditer(text):
        check(match.group("dirnames").count("dirname"), match.group(0))
    for match in _SCRIPT_CLIMB.finditer(text):
        check(1 + match.group("ups").count(".."), match.group(0))
    for match in _OUTSIDE_WORDS.finditer(text):
        line = text[: match.start()].count("\n") + 1
        found.append(f"{relative}:{line}: {match.group(0).strip()!r} points outside the checkout")
    return found


def _scanned_files() -> list[Path]:
    files = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            if path == Path(__file__).resolve():
                continue  # its planted examples are meant to be caught
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in SUFFIXES and path.stat().st_size < 2_000_000:
                files.append(path)
    return files


def test_nothing_under_tests_scripts_or_app_reads_outside_the_repository() -> None:
    files = _scanned_files()
    assert len(files) > 100, "the scan must see the repository"
    problems: list[str] = []
    climbs = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        climbs += len(_FILE_CLIMB.findall(text)) + len(_SCRIPT_CLIMB.findall(text))
        problems += escapes(path.relative_to(ROOT).as_posix(), text)
    assert climbs >= 5, "the repository's own root look-ups must be seen (and pass)"
    assert problems == []


@pytest.mark.parametrize(
    ("relative", "line"),
    [
        (
            "tests/connectors/okta_standin.py",
            f'Path(__file__).resolve().parents[2].parent / "{SIBLING}/specs/okta/spec.yaml"',
        ),
        ("tests/connectors/okta_standin.py", "SPEC = Path(__file__).parents[2].parent"),
        ("tests/unit/test_x.py", "ROOT = Path(__file__).resolve().parents[3]"),
        ("tests/unit/test_x.py", "ROOT = Path(__file__).parent.parent.parent.parent"),
        (
            "tests/unit/test_x.py",
            "here = os.path.dirname(os.path.dirname(os.path.dirname("
            "os.path.dirname(os.path.abspath(__file__)))))",
        ),
        ("scripts/serve", 'cd "$(dirname "$0")/../.."'),
        ("tests/unit/test_x.py", 'spec = Path("../specs/okta.yaml")'),
        ("tests/unit/test_x.py", 'spec = ROOT / ".." / "specs"'),
        ("tests/unit/test_x.py", 'SPEC = "/work/specs/okta/management-minimal.yaml"'),
        ("scripts/test", "cp ~/specs/okta.yaml tests/"),
        ("scripts/test", "SPECS=/home/ci/specs"),
        ("tests/unit/test_x.py", f'os.environ.get("OKTA_SPEC", "../{SIBLING}/x.yaml")'),
    ],
)
def test_a_planted_escape_is_caught(relative: str, line: str) -> None:
    assert escapes(relative, f"from pathlib import Path\n{line}\n")


@pytest.mark.parametrize(
    ("relative", "line"),
    [
        ("tests/unit/test_x.py", "ROOT = Path(__file__).resolve().parents[2]"),
        ("tests/scenario/slack/test_x.py", 'M = Path(__file__).parents[3] / "manifests"'),
        ("tests/connectors/okta_standin.py", 'Path(__file__).with_name("specs") / "okta"'),
        ("tests/unit/test_x.py", "DOCS = Path(__file__).parent.parent.parent / 'docs'"),
        ("scripts/serve", 'cd "$(dirname "$0")/.."'),
        ("tests/playground/test_x.py", 'for hidden in ("../web.py", "vendor/../../web.py"):'),
        ("tests/nhi/test_x.py", '{"path": "/a/../b"}'),
        ("scripts/install-slapd.sh", "POLICY=/usr/sbin/policy-rc.d"),
    ],
)
def test_a_path_inside_the_repository_is_not_flagged(relative: str, line: str) -> None:
    assert escapes(relative, line + "\n") == []


def test_the_okta_spec_the_stand_in_reads_is_vendored_with_its_license() -> None:
    """Okta's spec (Apache-2.0) lives in the repository, unmodified, with where it came from."""
    folder = ROOT / "tests/connectors/specs/okta"
    notice = (folder / "NOTICE").read_text()
    assert "Apache License, Version 2.0" in notice and "okta-management-openapi-spec" in notice
    assert "Apache License" in (folder / "LICENSE").read_text()
    raw = gzip.decompress((folder / "management-minimal.yaml.gz").read_bytes())
    digest = re.search(r"\b[0-9a-f]{64}\b", notice)
    assert digest is not None and hashlib.sha256(raw).hexdigest() == digest.group(0)
    info = yaml.safe_load(raw[: raw.index(b"\nservers:")])["info"]
    assert info["license"]["name"] == "Apache-2.0" and info["version"] in notice

    from tests.connectors import okta_standin

    if "OKTA_SPEC" not in os.environ:
        assert okta_standin.SPEC_PATH.resolve().is_relative_to(ROOT)
        assert okta_standin.SPEC_PATH.resolve() == (folder / "management-minimal.yaml.gz")
