"""The README's first command, for real: `twokey serve` on its embedded defaults.

No REDIS_URL, no policy, no directory: an embedded Valkey starts with its data in the working
folder, the example policy and sandbox directory load, and the server answers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_on_embedded_defaults(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "TWOKEY_"))}
    env.update(PORT=str(port))
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("twokey serve did not become ready")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        page = httpx.get(f"http://127.0.0.1:{port}/playground")
        assert page.status_code == 200 and "never for production" in page.text.lower()
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    assert "embedded_valkey_started" in output
    assert f"twokey listening on http://127.0.0.1:{port}" in output
    assert f"http://127.0.0.1:{port}/playground" in output
    assert (tmp_path / ".twokey" / "valkey").is_dir()
    assert (tmp_path / ".twokey" / "audit.key").exists()
    assert list((tmp_path / ".twokey" / "valkey").rglob("*.aof")), "append-only file is on"
