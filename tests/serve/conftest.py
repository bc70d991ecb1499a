from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from .fakes import FakeModel, ServerThread

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


@pytest.fixture
def fake_server() -> Iterator[ServerThread]:
    with ServerThread(FakeModel(two_inputs=True)) as s:
        yield s


@dataclass(frozen=True)
class Digits:
    dir: Path
    x: np.ndarray  # digits test images (n, 8, 8, 1) float32

    def path(self, kind: str) -> Path:
        return self.dir / f"digits_{kind}.tflite"

    @property
    def saved_model(self) -> Path:
        return self.dir / "digits_savedmodel"


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """Train the digits CNN and convert it (float32, int8, int8 I/O, float16, dynamic, SavedModel).

    Built in a subprocess so this test process never imports TensorFlow.
    """
    out = tmp_path_factory.mktemp("digits")
    here = str(Path(__file__).parent)
    code = (
        f"import sys, numpy as np; sys.path.insert(0, {here!r}); import modelgen; from pathlib import Path; "
        f"m = modelgen.build_digits(Path({str(out)!r})); np.save(Path({str(out)!r}) / 'x_test.npy', m.x_test); "
        f"np.save(Path({str(out)!r}) / 'y_test.npy', m.y_test)"
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([PY, "-c", code], check=True, env=env, capture_output=True, timeout=600)
    return Digits(out, np.load(out / "x_test.npy"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_cmd(*args: str) -> list[str]:
    """``modelship serve`` with ``args``; the metrics port is a free one unless given (tests run side by side)."""
    extra = [] if "--metrics-port" in args else ["--metrics-port", "0"]
    return [PY, "-m", "modelship.serve", *args, *extra]


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_")}
    env["PYTHONPATH"] = str(REPO / "operator") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def json_lines(text: str) -> list[dict[str, object]]:
    """Parse stderr of the server: every line must be a JSON object."""
    out = []
    for line in text.splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out
