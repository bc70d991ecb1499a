"""The README's no-cluster path: `hack/demo/local` trains, optimizes, serves and calls the embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("example", ["linear", "digits-mlp"])
def test_demo_end_to_end(tmp_path: Path, example: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'operator'}", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "modelship_dev.local_demo", "--example", example, "--work-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "predictions over HTTP" in proc.stdout
    report = json.loads((tmp_path / "opt" / "report.json").read_text())
    assert report["summary"]["ok"] is True and report["summary"]["gate"] == "Passed"
    assert (tmp_path / "opt" / report["summary"]["artifact"]).is_file()
    if example == "linear":
        # the table shows the served answers for x = 4: 2 * 4 - 1 = 7 within the gate
        row = next(line for line in proc.stdout.splitlines() if "x=4 " in line)
        served = [float(v) for v in row.replace("│", " ").split()[2:4]]
        assert all(abs(v - 7) < 0.25 for v in served), row
