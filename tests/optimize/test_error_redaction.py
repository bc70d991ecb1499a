"""The optimizer's failure summary (the termination message the operator copies into status and Events) and its
stderr line never carry a credential: a secret planted in the environment, in a mounted credentials file or in a
URL's userinfo does not come out, even when the error text itself is an environment dump."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.optimize.conftest import cli_env, error_line, read_summary, run_cli

PLANTED = "planted-S3CRET-0042"
PLANTED_FILE = "planted-F1LE-SECRET-7781"


def test_a_url_with_userinfo_never_reaches_the_summary(tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    proc = run_cli("--model", f"http://modeluser:{PLANTED}@127.0.0.1:9/model.h5", "--format", "h5",
                   "--optimization-json", json.dumps({"enabled": False}), "--out", str(tmp_path / "out"),
                   "--termination-log", str(term))  # fmt: skip
    line = error_line(proc) if proc.returncode == 1 else proc.stderr
    summary = read_summary(term)
    assert summary["ok"] is False
    for text in (line, json.dumps(summary), proc.stdout, (tmp_path / "out" / "report.json").read_text()):
        assert PLANTED not in text and PLANTED_FILE not in text


@pytest.mark.slow
def test_an_environment_dump_in_an_error_is_redacted(tmp_path: Path, linear_example: Any) -> None:
    """A custom metric (allowCode) that fails with the process environment and the model source's credentials
    file in its message: neither the planted secret variable's value nor the file's (a Secret mounted where the
    operator's --sources-json says) is in the summary, the report or the stderr line."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "AWS_SECRET_ACCESS_KEY").write_text(PLANTED_FILE + "\n")
    (tmp_path / "dumpenv.py").write_text(
        "import os\n\ndef score(y_true, y_pred):\n"
        f"    key = open({str(creds / 'AWS_SECRET_ACCESS_KEY')!r}).read().strip()\n"
        "    raise ValueError('key ' + key + ' env: ' + repr(dict(os.environ)))\n"
    )
    opt = linear_example.optimization.wire()
    opt["metric"] = {"type": "custom", "callable": "dumpenv:score"}
    term = tmp_path / "termination-log"
    env = cli_env(PYTHONPATH=f"{tmp_path}:{cli_env()['PYTHONPATH']}", AWS_SECRET_ACCESS_KEY=PLANTED,
                  UNRELATED_SETTING=f"x{PLANTED}x")  # fmt: skip
    proc = run_cli("--model", str(linear_example.model), "--optimization-json", json.dumps(opt), "--out",
                   str(tmp_path / "out"), "--termination-log", str(term), "--pvc-root", str(linear_example.root),
                   "--sources-json", json.dumps({"model": {"credentialsDir": str(creds)}}),
                   "--allow-code", env=env)  # fmt: skip
    line = error_line(proc)
    assert "custom metric dumpenv:score failed: key [redacted] env:" in line
    summary = read_summary(term)
    assert summary["failure"] == "Permanent" and len(summary["error"]) <= 1024
    for text in (line, json.dumps(summary), (tmp_path / "out" / "report.json").read_text()):
        assert PLANTED not in text and PLANTED_FILE not in text
