"""An operator's configuration mistakes, run as `twokey serve` runs: each stops the command with
plain sentences naming the setting and what to do, exit 2, never a traceback or a secret."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AUDIT_KEY = "a-test-audit-key-that-is-long-enough"
SECRET = "do-not-echo-this-secret-0123456789"


def twokey(cwd: Path, *argv: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`twokey ARGV` (default: serve) in a subprocess, with only these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "TWOKEY_"))}
    for name in ("HOST", "PORT", "LOG_LEVEL", "SLACK_", "MICROSOFT_", "TEAMS_"):
        env = {k: v for k, v in env.items() if not k.startswith(name)}
    env.update(settings, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *(argv or ("serve",))],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    assert "Unclosed" not in output, output  # what start-up opened, it closed
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


@pytest.fixture
def own_redis(redis_url: str, namespace: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "TWOKEY_NAMESPACE": namespace,
        "TWOKEY_AUDIT_KEY": AUDIT_KEY,
        "TWOKEY_ACCEPT_EVICTION_RISK": "true",
    }


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("PORT", "abc", "PORT should be a whole number (at least 1, at most 65535)"),
        ("PORT", "70000", "PORT should be a whole number (at least 1, at most 65535)"),
        ("LOG_LEVEL", "verbose", "LOG_LEVEL should be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        ("TEAMS_ALLOWED_TENANTS", "tenant-1", "TEAMS_ALLOWED_TENANTS should be a JSON list"),
        ("TWOKEY_AUDIT_KEYS_PREVIOUS", SECRET, "TWOKEY_AUDIT_KEYS_PREVIOUS should be a JSON list"),
        ("TWOKEY_POLICY", "", "TWOKEY_POLICY is set but empty"),
        ("REDIS_URL", "", "REDIS_URL is set but empty"),
    ],
)
def test_a_bad_setting_is_named_in_a_sentence(
    tmp_path: Path, setting: str, value: str, words: str
) -> None:
    err = refused(twokey(tmp_path, **{setting: value}), f"twokey: bad setting: {words}")
    assert "validation error" not in err and "pydantic" not in err, err


def test_every_bad_setting_is_named_even_beside_a_malformed_list(tmp_path: Path) -> None:
    """A list that is not JSON once hid every other mistake."""
    err = refused(
        twokey(tmp_path, PORT="abc", SLACK_ALLOWED_TEAMS="T1", LOG_LEVEL="loud"),
        "PORT should be a whole number",
        "SLACK_ALLOWED_TEAMS should be a JSON list",
        "LOG_LEVEL should be DEBUG",
    )
    assert "T1" not in err.replace("T0123456", "")


def test_a_misspelt_setting_is_refused_not_left_to_its_default(tmp_path: Path) -> None:
    """TWOKEY_POLICIY and REDIS_ULR were ignored: twokey ran the example policy on an embedded
    Redis without a word. Near misses of a setting that is not set are named, in the
    environment and in .env alike; other tools' names and a policy's *_env secrets are not."""
    (tmp_path / ".env").write_text("twokey_audt_key=" + SECRET + "\n")
    err = refused(
        twokey(
            tmp_path,
            TWOKEY_POLICIY=str(tmp_path / "policy.yaml"),
            REDIS_ULR="redis://127.0.0.1:6379/0",
            TWOKEY_OIDC_CLIENT_SECRET=SECRET,
            SLACK_WEBHOOK_FOR_BUILDS="https://example.invalid/",
        ),
        "twokey: bad setting: REDIS_ULR is not a setting twokey knows: did you mean REDIS_URL?",
        "TWOKEY_AUDT_KEY is not a setting twokey knows: did you mean TWOKEY_AUDIT_KEY?",
        "TWOKEY_POLICIY is not a setting twokey knows: did you mean TWOKEY_POLICY? (as it is, "
        "TWOKEY_POLICY is not set and keeps its default)",
    )
    assert "OIDC" not in err and "WEBHOOK" not in err, err


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (
            {"SLACK_SIGNING_SECRET": SECRET},
            "SLACK_SIGNING_SECRET is set but SLACK_BOT_TOKEN is not",
        ),
        ({"SLACK_BOT_TOKEN": SECRET}, "neither SLACK_SIGNING_SECRET"),
        ({"MICROSOFT_APP_PASSWORD": SECRET}, "MICROSOFT_APP_ID is not"),
        (
            {"MICROSOFT_APP_ID": "11111111-1111-1111-1111-111111111111"},
            "MICROSOFT_APP_PASSWORD is not",
        ),
    ],
)
def test_half_a_chat_channel_is_refused_not_left_off(
    tmp_path: Path, settings: dict[str, str], words: str
) -> None:
    refused(twokey(tmp_path, **settings, TWOKEY_DEMO="true"), words)


GUID = "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (
            {"SLACK_BOT_TOKEN": "xapp-" + SECRET, "SLACK_APP_TOKEN": "xoxb-" + SECRET},
            "SLACK_BOT_TOKEN holds an app-level token (xapp-...): it belongs in SLACK_APP_TOKEN",
        ),
        (
            {"SLACK_BOT_TOKEN": "xoxp-" + SECRET, "SLACK_SIGNING_SECRET": SECRET},
            "SLACK_BOT_TOKEN is a user token (xoxp-...)",
        ),
        (
            {"SLACK_BOT_TOKEN": "xoxb-" + SECRET, "SLACK_APP_TOKEN": SECRET},
            "SLACK_APP_TOKEN is not an app-level token",
        ),
        (
            {"MICROSOFT_APP_ID": "not-a-guid", "MICROSOFT_APP_PASSWORD": SECRET},
            "MICROSOFT_APP_ID should be the bot's Microsoft App ID, a GUID",
        ),
        (
            {
                "MICROSOFT_APP_ID": GUID,
                "MICROSOFT_APP_PASSWORD": SECRET,
                "MICROSOFT_APP_TENANT_ID": "abc",
            },
            "MICROSOFT_APP_TENANT_ID should be your Microsoft Entra tenant id",
        ),
        (
            {
                "MICROSOFT_APP_ID": GUID,
                "MICROSOFT_APP_PASSWORD": SECRET,
                "MICROSOFT_APP_TENANT_ID": GUID,
                "TEAMS_ALLOWED_TENANTS": '["contoso"]',
            },
            "TEAMS_ALLOWED_TENANTS should list tenant ids",
        ),
    ],
    ids=[
        "slack-tokens-swapped",
        "slack-user-token",
        "slack-app-token-not-xapp",
        "teams-app-id-not-guid",
        "teams-tenant-not-guid",
        "teams-allowed-not-guids",
    ],
)
def test_what_cannot_be_a_chat_credential_is_refused_before_serving(
    tmp_path: Path, settings: dict[str, str], words: str
) -> None:
    """Swapped Slack tokens or an app id that is no GUID started, and failed at the first
    message (or Socket Mode retried forever) while /readyz said ready."""
    refused(twokey(tmp_path, **settings, TWOKEY_DEMO="true"), f"twokey: {words}")


def test_a_port_in_use_is_named_without_a_traceback(
    tmp_path: Path, own_redis: dict[str, str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = twokey(tmp_path, **own_redis, PORT=port)
    refused(result, f"cannot listen on 127.0.0.1:{port}", "set PORT to a free port")


def test_a_host_that_does_not_resolve_is_named(tmp_path: Path, own_redis: dict[str, str]) -> None:
    refused(twokey(tmp_path, **own_redis, HOST="no-such-host.invalid"), "HOST=no-such-host.invalid")


def test_a_missing_policy_file_names_twokey_policy(
    tmp_path: Path, own_redis: dict[str, str]
) -> None:
    missing = tmp_path / "nope.yaml"
    refused(
        twokey(tmp_path, **own_redis, TWOKEY_POLICY=str(missing)),
        f"TWOKEY_POLICY={missing} cannot be used",
        "Point TWOKEY_POLICY at your policy file",
    )


def test_a_policy_folder_is_called_a_folder(tmp_path: Path, own_redis: dict[str, str]) -> None:
    refused(twokey(tmp_path, **own_redis, TWOKEY_POLICY=str(tmp_path)), "it is a folder")


def test_refused_redis_credentials_are_not_called_unreachable(
    tmp_path: Path, own_redis: dict[str, str]
) -> None:
    url = own_redis["REDIS_URL"].replace("redis://", f"redis://no-such-user:{SECRET}@", 1)
    err = refused(
        twokey(tmp_path, **{**own_redis, "REDIS_URL": url}), "refused twokey's credentials"
    )
    assert "Cannot reach" not in err


def test_a_redis_url_of_another_scheme_lists_every_scheme(tmp_path: Path) -> None:
    refused(
        twokey(tmp_path, REDIS_URL="http://127.0.0.1:6379/0", TWOKEY_AUDIT_KEY=AUDIT_KEY),
        "redis+sentinel://",
        "redis+cluster://",
    )


def test_a_data_dir_twokey_cannot_write_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    refused(
        twokey(tmp_path, TWOKEY_DATA_DIR=str(blocker / "data")),
        "Cannot start the embedded Valkey",
        "TWOKEY_DATA_DIR",
    )


def test_a_short_audit_key_says_what_to_set(tmp_path: Path, own_redis: dict[str, str]) -> None:
    err = refused(
        twokey(tmp_path, **{**own_redis, "TWOKEY_AUDIT_KEY": "short-key"}),
        "TWOKEY_AUDIT_KEY must be at least 16 characters: set it to a long random string",
    )
    assert "short-key" not in err


def test_a_teams_setting_refused_at_mount_leaves_nothing_open(
    tmp_path: Path, own_redis: dict[str, str]
) -> None:
    """The Teams channel opens its HTTP session, then refuses a setting: it closes it again
    (no "Unclosed client session" after the sentence)."""
    result = twokey(
        tmp_path,
        MICROSOFT_APP_ID="00000000-0000-0000-0000-0000000000b0",
        MICROSOFT_APP_PASSWORD=SECRET,
        MICROSOFT_APP_TYPE="SingleTenant",
        TWOKEY_DEMO="true",
        **own_redis,
    )
    refused(result, "MICROSOFT_APP_TYPE=SingleTenant needs MICROSOFT_APP_TENANT_ID")


@pytest.fixture(params=["answers-http", "hangs-up"])
def not_redis(request: pytest.FixtureRequest) -> object:
    """A port where something that is not Redis answers: an HTTP server, or one that reads
    what it does not understand and hangs up (PostgreSQL does so)."""
    import threading

    reply = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    if request.param == "hangs-up":
        reply = b""

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def answer() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    conn.sendall(reply)
                except OSError:
                    pass

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


@pytest.mark.parametrize("argv", [(), ("audit", "verify")], ids=["serve", "audit-verify"])
def test_a_redis_url_at_something_else_says_it_is_not_redis(
    tmp_path: Path, own_redis: dict[str, str], not_redis: int, argv: tuple[str, ...]
) -> None:
    url = f"redis://127.0.0.1:{not_redis}/0"
    refused(
        twokey(tmp_path, *argv, **{**own_redis, "REDIS_URL": url}),
        f"Something answered at {url}, but not in the Redis protocol",
    )


@pytest.mark.parametrize("accept", ["true", "false"])
def test_a_database_the_server_does_not_have_is_named(
    tmp_path: Path, own_redis: dict[str, str], accept: str
) -> None:
    """Not "CONFIG GET is disabled" (whose advice then led to a traceback)."""
    from urllib.parse import urlsplit

    url = urlsplit(own_redis["REDIS_URL"])._replace(path="/99").geturl()
    settings = {**own_redis, "REDIS_URL": url, "TWOKEY_ACCEPT_EVICTION_RISK": accept}
    err = refused(twokey(tmp_path, **settings), "has no such database")
    assert "CONFIG GET" not in err


@pytest.mark.parametrize("argv", [("audit", "verify"), ("requests", "list"), ("review", "list")])
def test_a_command_run_where_serve_never_ran_says_where_it_looked(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    """On the embedded defaults, not "intact, 0 events" from a store just made empty."""
    err = refused(twokey(tmp_path, *argv), "there is no twokey data in", "TWOKEY_DATA_DIR")
    assert "REDIS_URL" in err
    assert not (tmp_path / ".twokey").exists()  # nothing was made
