"""Shared fixtures for the optimizer tests: example models are trained once per session.

Keras 2 (tf-keras) must be selected before TensorFlow is first imported in this process.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelship.api.optimization import Optimization
from modelship.api.report import Report

OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"
LATENCY_SECONDS = 0.1


@pytest.fixture(scope="session")
def example_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("examples")


@pytest.fixture(scope="session")
def linear_example(example_root: Path) -> Any:
    from modelship.optimize import examples

    return examples.linear(example_root)


@pytest.fixture(scope="session")
def mlp_example(example_root: Path) -> Any:
    from modelship.optimize import examples

    return examples.digits(example_root, "mlp")


@pytest.fixture(scope="session")
def cnn_example(example_root: Path) -> Any:
    from modelship.optimize import examples

    return examples.digits(example_root, "cnn")


@pytest.fixture(scope="session")
def two_inputs_example(example_root: Path) -> Any:
    from modelship.optimize import examples

    return examples.two_inputs(example_root)


@pytest.fixture
def run_optimizer(tmp_path: Path) -> Callable[..., tuple[Report, Path]]:
    """Run the library on an example with an optimization; (report, output directory)."""
    from modelship.optimize import pipeline

    counter = iter(range(1000))

    def run(example: Any, optimization: Optimization, **kwargs: Any) -> tuple[Report, Path]:
        out = tmp_path / f"out{next(counter)}"
        req = pipeline.Request(
            model=str(kwargs.pop("model", example.model)),
            optimization=optimization,
            out_dir=out,
            pvc_root=str(example.root),
            speed_seconds=LATENCY_SECONDS,
            **kwargs,
        )
        return pipeline.optimize(req), out

    return run


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_")}
    env["PYTHONPATH"] = str(OPERATOR_DIR) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`modelship optimize ARGS` in a fresh interpreter (as the Job runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "modelship", "optimize", *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=timeout,
        check=False,
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The CLI's stderr must be exactly one readable error line, without a traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("modelship optimize: error: ")
    return lines[0]


def read_summary(path: Path) -> dict[str, Any]:
    text = path.read_text()
    assert text.count("\n") == 1 and len(text.encode()) <= 4096
    data: dict[str, Any] = json.loads(text)
    return data


def tflite_predict(path: Path, x: Any) -> Any:
    """Outputs of a .tflite file on float inputs, one sample at a time (independent of the optimizer's runner)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    ys = []
    for row in x:
        it.set_tensor(inp["index"], row[None].astype(np.float32))
        it.invoke()
        ys.append(it.get_tensor(out["index"])[0].copy())
    return np.stack(ys)


def gzip9(path: Path) -> int:
    import gzip

    return len(gzip.compress(path.read_bytes(), 9))
