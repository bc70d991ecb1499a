"""Error texts bound for status, Events and termination messages carry no credentials (modelship.api.redact) and the
optimizer knows which values are its secrets (modelship.credentials)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from modelship.api.redact import REDACTED, redact
from modelship.credentials import known_secrets

PLANTED = "s3cr3t-Pl4nted-value"


@pytest.mark.parametrize(
    "text",
    [
        f"GET https://alice:{PLANTED}@models.example.com/m.h5: 403",
        f"environ({{'HOME': '/tmp', 'AWS_SECRET_ACCESS_KEY': '{PLANTED}', 'PATH': '/usr/bin'}})",
        f"AWS_SECRET_ACCESS_KEY={PLANTED} python -m modelship",
        f"request failed: Authorization: Bearer {PLANTED}",
        f'{{"password": "{PLANTED}", "user": "bob"}}',
        f"MLFLOW_TRACKING_TOKEN: {PLANTED}",
        f"key -----BEGIN RSA PRIVATE KEY-----\nMIIE{PLANTED}\n-----END RSA PRIVATE KEY----- end",
    ],
)
def test_credentials_are_removed(text: str) -> None:
    out = redact(text)
    assert PLANTED not in out and REDACTED in out


def test_known_values_are_removed_wherever_they_appear() -> None:
    out = redact(f"model x{PLANTED}y not found", secrets=[PLANTED, "ab"])
    assert out == f"model x{REDACTED}y not found"  # too short a value ("ab") is not searched for


def test_access_key_ids_and_one_bounded_line() -> None:
    out = redact("key AKIAABCDEFGHIJKLMNOP\nnext line " + "x" * 5000, limit=100)
    assert "AKIA" not in out and "\n" not in out and len(out) == 100 and out.endswith("...")


def test_ordinary_errors_are_left_alone() -> None:
    text = "pvc://models/digits/cnn.h5: no such file or directory; expected an HDF5 Keras model (.h5)"
    assert redact(text) == text
    assert (
        redact("accuracy 0.98 -> 0.97 (drop 0.01 <= 0.01 absolute)")
        == "accuracy 0.98 -> 0.97 (drop 0.01 <= 0.01 absolute)"
    )


def test_known_secrets_are_the_mounted_files_and_secret_named_variables(tmp_path: Path) -> None:
    creds = tmp_path / "sources" / "model" / "credentials"
    creds.mkdir(parents=True)
    (creds / "AWS_SECRET_ACCESS_KEY").write_text(PLANTED + "\n")
    auth = base64.b64encode(b"robot:registry-pass-99").decode()
    (tmp_path / "push").mkdir()
    (tmp_path / "push" / ".dockerconfigjson").write_text(json.dumps({"auths": {"r.example": {"auth": auth}}}))
    (creds / "..2026_11_28_data").mkdir()  # a Secret volume's timestamped dir (reached through symlinks): skipped
    secrets = known_secrets(tmp_path, env={"MY_API_TOKEN": "env-token-value", "HOME": "/tmp"})
    assert {PLANTED, "registry-pass-99", auth, "env-token-value"} <= secrets
    assert "/tmp" not in secrets
    assert known_secrets(tmp_path / "missing", env={}) == set()


def test_the_working_directory_is_not_a_secret(tmp_path: Path) -> None:
    """PWD and OLDPWD match 'pwd' but hold the shell's directories: a CLI error naming a file under the directory
    it was run from keeps its path."""
    env = {"PWD": "/tmp/walkthrough-demo", "OLDPWD": "/home/alice/models", "DB_PWD": "db-pass-1234"}
    secrets = known_secrets(tmp_path, env=env)
    assert secrets == {"db-pass-1234"}
    text = "pvc://x/y.h5: /tmp/walkthrough-demo/x/y.h5 does not exist"
    assert redact(text, secrets) == text
