"""`twokey policy check` and start-up for the approver sign-in (oidc_reauth): a complete
``step_up.oidc`` is accepted; anything incomplete is refused, saying what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bootstrap import StartupError, build_runtime
from app.cli import main
from app.settings import Settings
from tests.helpers import policy_text

APPROVER = "  standard:\n    label: Standard\n    step_up: {approver: [oidc_reauth]}\n"
COMPLETE = (
    "step_up:\n  oidc:\n    issuer: https://example.okta.com/oauth2/default\n"
    "    client_id: 0oa1twokey\n    client_secret_env: TWOKEY_OIDC_CLIENT_SECRET\n"
    "    max_age: 5m\n    acr_values: [urn:okta:loa:2fa:any]\n"
    "    person_claim: preferred_username\n"
)


def written(tmp_path: Path, oidc: str, approver: str = APPROVER) -> Path:
    text = policy_text().replace("  standard:\n    label: Standard\n", approver) + oidc
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def checked(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["policy", "check", str(path)])
    return code, capsys.readouterr().out


def test_a_complete_oidc_approver_step_up_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = checked(written(tmp_path, COMPLETE), capsys)
    assert code == 0, out


@pytest.mark.parametrize(
    ("oidc", "words"),
    [
        ("", "oidc_reauth needs the identity provider approvers sign in again at"),
        (
            COMPLETE.replace("    client_secret_env: TWOKEY_OIDC_CLIENT_SECRET\n", ""),
            "incomplete: set client_secret_env",
        ),
        (
            COMPLETE.replace("    issuer: https://example.okta.com/oauth2/default\n", "").replace(
                "    client_id: 0oa1twokey\n", ""
            ),
            "incomplete: set issuer, client_id",
        ),
        (COMPLETE.replace("https://example.okta.com", "http://example.okta.com"), "https"),
        (COMPLETE.replace("TWOKEY_OIDC_CLIENT_SECRET", "hunter2-the-secret"), "NAME of"),
        (COMPLETE.replace("max_age: 5m", "max_age: 2h"), "the sign-in must be fresh"),
        (COMPLETE.replace("preferred_username", "'a b'"), "person_claim is a claim name"),
    ],
)
def test_an_incomplete_oidc_approver_step_up_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], oidc: str, words: str
) -> None:
    code, out = checked(written(tmp_path, oidc), capsys)
    assert code == 1 and words in out, out
    assert "hunter2" not in out


def test_oidc_reauth_verifies_approvers_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = "  standard:\n    label: Standard\n    step_up: {owner: [oidc_reauth]}\n"
    code, out = checked(written(tmp_path, COMPLETE, owner), capsys)
    assert code == 1 and "verifies approvers only" in out, out


@pytest.mark.parametrize(
    ("public_url", "secret", "words"),
    [
        (None, "s3cret", "TWOKEY_PUBLIC_URL"),
        ("https://twokey.example.com", None, "TWOKEY_OIDC_CLIENT_SECRET, which is not set"),
    ],
)
async def test_twokey_refuses_to_start_without_the_public_url_or_the_secret(
    tmp_path: Path,
    redis_url: str,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    public_url: str | None,
    secret: str | None,
    words: str,
) -> None:
    if secret is None:
        monkeypatch.delenv("TWOKEY_OIDC_CLIENT_SECRET", raising=False)
    else:
        monkeypatch.setenv("TWOKEY_OIDC_CLIENT_SECRET", secret)
    settings = Settings(
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_AUDIT_KEY="oidc-test-audit-key-long-enough",
        TWOKEY_ACCEPT_EVICTION_RISK=True,
        TWOKEY_PLAYGROUND=False,
        TWOKEY_POLICY=str(written(tmp_path, COMPLETE)),
        TWOKEY_DATA_DIR=str(tmp_path / "data"),
        TWOKEY_PUBLIC_URL=public_url,
    )
    with pytest.raises(StartupError, match=words):
        await build_runtime(settings)


@pytest.mark.parametrize(
    "url",
    [
        "http://twokey.example.com",
        "ftp://x",
        "https://u:p@twokey.example.com",
        "https://t/?a",
        # the path becomes the sign-in cookie's Path: nothing a browser rewrites or reads as more
        "https://t/twokey;Domain=example.com",
        "https://t/a/../twokey",
        "https://t/./twokey",
        "https://t//twokey",
        "https://t/two key",
        "https://t/two%20key",
    ],
)
def test_the_public_url_is_checked(url: str) -> None:
    with pytest.raises(ValueError, match="TWOKEY_PUBLIC_URL"):
        Settings(TWOKEY_PUBLIC_URL=url)
    assert Settings(TWOKEY_PUBLIC_URL="https://twokey.example.com/").public_url == (
        "https://twokey.example.com"
    )


@pytest.mark.parametrize(
    "url", ["https://tools.example.com/twokey", "https://tools.example.com/twokey/"]
)
def test_a_public_url_under_a_path_is_taken_with_or_without_its_trailing_slash(url: str) -> None:
    """A reverse proxy's prefix: the same links, redirect URI and cookie either way."""
    assert Settings(TWOKEY_PUBLIC_URL=url).public_url == "https://tools.example.com/twokey"
