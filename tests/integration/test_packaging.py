"""A plain, non-editable `pip install .` must carry everything twokey loads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_scripts_examples_and_assets(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("twokey-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    lua = {p.name for p in (ROOT / "app/store/lua").glob("*.lua")}
    assert lua and {f"app/store/lua/{n}" for n in lua} <= names
    assert "app/policy/example_policy.yaml" in names
    assert "app/connectors/example_directory.yaml" in names
    assert "app/py.typed" in names
    static = (
        [p for p in (ROOT / "app/playground/static").rglob("*") if p.is_file()]
        if (ROOT / "app/playground/static").is_dir()
        else []
    )
    for path in static:
        assert path.relative_to(ROOT).as_posix() in names, path
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "twokey = app.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
