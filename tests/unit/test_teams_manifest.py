"""The Teams app package: a manifest valid against its published schema, icons Teams accepts,
and the zip command that fills in the bot id."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema

ROOT = Path(__file__).resolve().parents[2]
TEAMS = ROOT / "manifests" / "teams"
SCHEMA = json.loads((ROOT / "tests" / "schemas" / "teams-manifest.schema.json").read_text())


def manifest() -> dict[str, object]:
    return dict(json.loads((TEAMS / "manifest.json").read_text()))


def test_the_manifest_is_valid_against_the_published_schema() -> None:
    jsonschema.Draft4Validator(SCHEMA).validate(manifest())


def test_the_manifest_lists_commands_for_every_scope() -> None:
    [bot] = manifest()["bots"]  # type: ignore[misc]
    scopes = {s for lst in bot["commandLists"] for s in lst["scopes"]}
    assert scopes == {"personal", "team", "groupChat"}


def png_size(path: Path) -> tuple[int, int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, _depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, colour


def test_icons_have_the_sizes_teams_needs() -> None:
    assert png_size(TEAMS / "color.png")[:2] == (192, 192)
    width, height, colour = png_size(TEAMS / "outline.png")
    assert (width, height) == (32, 32) and colour == 6  # RGBA: a transparent background


def test_the_package_command_zips_with_the_app_id(tmp_path: Path) -> None:
    out = tmp_path / "twokey.zip"
    app_id = "12345678-1234-1234-1234-123456789abc"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "teams-package"), app_id, "--out", str(out)],
        check=True,
        capture_output=True,
    )
    with zipfile.ZipFile(out) as package:
        assert sorted(package.namelist()) == ["color.png", "manifest.json", "outline.png"]
        packed = json.loads(package.read("manifest.json"))
    assert packed["bots"][0]["botId"] == app_id
    jsonschema.Draft4Validator(SCHEMA).validate(packed)
