"""The container image's promises, read from the Dockerfile (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    split: list[list[tuple[str, str]]] = []
    for word, rest in instructions():
        if word == "FROM":
            split.append([])
        split[-1].append((word, rest))
    return split


def test_the_image_is_built_in_one_stage_and_run_from_a_pinned_slim_base() -> None:
    build, final = stages()
    for stage in (build, final):
        base = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    assert any(word == "COPY" and "--from=build" in rest for word, rest in final)


def test_the_final_stage_has_no_build_tools_and_runs_as_a_numeric_non_root_user() -> None:
    final = stages()[-1]
    text = " ".join(rest for _, rest in final)
    assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", text)
    [user] = [rest for word, rest in final if word == "USER"]
    uid = user.split(":")[0]
    assert uid.isdecimal() and int(uid) >= 1000


def test_it_checks_its_own_health_and_keeps_data_in_a_volume() -> None:
    final = dict(stages()[-1])
    assert "/healthz" in final["HEALTHCHECK"]
    assert "TWOKEY_DATA_DIR=/var/lib/twokey" in " ".join(
        rest for word, rest in stages()[-1] if word == "ENV"
    )
    assert "/var/lib/twokey" in final["VOLUME"]
    assert '"twokey", "serve"' in final["CMD"]


def test_only_what_the_image_needs_is_sent_to_the_build() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "everything is left out unless named"
    for needed in ("!pyproject.toml", "!README.md", "!LICENSE", "!app/"):
        assert needed in ignore
    copied = [rest for word, rest in stages()[0] if word == "COPY"]
    assert copied == ["pyproject.toml README.md LICENSE ./", "app ./app"]


def test_the_kubernetes_manifest_runs_the_image_as_its_user() -> None:
    manifest = (ROOT / "manifests" / "kubernetes" / "twokey.yaml").read_text()
    [user] = [rest for word, rest in stages()[-1] if word == "USER"]
    assert f"runAsUser: {user.split(':')[0]}" in manifest
    assert "readOnlyRootFilesystem: true" in manifest
