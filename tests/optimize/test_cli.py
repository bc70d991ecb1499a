"""`modelship optimize` as a subprocess, the way the optimization Job runs it.

Errors: exit 1, exactly one readable line on stderr, no traceback, and an ok=false summary in the termination log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelship.api.report import Report, ShipDecision, Summary
from modelship.fetch import sha256_path

from .conftest import cli_env, error_line, read_summary, run_cli


def _fake_h5(path: Path) -> Path:
    """An HDF5 file that passes the header checks (enough for errors raised before TensorFlow loads)."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = "{}"
    return path


def _opt(**data: Any) -> str:
    body = {"steps": [{"type": "quantize", "quantize": {"mode": "dynamic"}}], "data": data}
    return json.dumps(body)


EVAL = {"uri": "pvc://d/eval.npz", "format": "npz"}


def test_corrupt_model(tmp_path: Path) -> None:
    model = tmp_path / "model.h5"
    model.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)  # an HDF5 signature, then garbage
    term = tmp_path / "term.log"
    proc = run_cli("--model", str(model), "--optimization-json", _opt(evaluation=EVAL), "--out", str(tmp_path / "o"),
                   "--termination-log", str(term))  # fmt: skip
    line = error_line(proc)
    assert str(model) in line and "HDF5" in line
    summary = read_summary(term)
    assert summary["ok"] is False and summary["error"] == line.removeprefix("modelship optimize: error: ")
    assert summary["sourceDigest"] == sha256_path(model)
    assert Report.model_validate_json((tmp_path / "o" / "report.json").read_text()).summary.ok is False


def test_digest_mismatch_fails_before_anything_runs(tmp_path: Path) -> None:
    model = tmp_path / "model.h5"
    model.write_bytes(b"not even read")
    pinned = "sha256:" + "ab" * 32
    term = tmp_path / "term.log"
    proc = run_cli("--model", str(model), "--digest", pinned, "--optimization-json", _opt(evaluation=EVAL),
                   "--out", str(tmp_path / "o"), "--termination-log", str(term))  # fmt: skip
    line = error_line(proc)
    assert "digest mismatch" in line and pinned in line and sha256_path(model) in line
    assert "HDF5" not in line  # the content was never inspected
    assert read_summary(term)["ok"] is False


def test_empty_calibration_set(tmp_path: Path) -> None:
    model = _fake_h5(tmp_path / "model.h5")
    (tmp_path / "pvc" / "d").mkdir(parents=True)
    np.savez(tmp_path / "pvc" / "d" / "eval.npz", x=np.zeros((4, 1)), y=np.zeros(4))
    np.savez(tmp_path / "pvc" / "d" / "cal.npz", x=np.zeros((0, 1)))
    opt = json.dumps(
        {
            "steps": [{"type": "quantize", "quantize": {"mode": "int8"}}],
            "data": {"evaluation": EVAL, "calibration": {"uri": "pvc://d/cal.npz", "format": "npz", "labels": None}},
        }
    )
    env = cli_env(MODELSHIP_TERMINATION_LOG=str(tmp_path / "term.log"))
    proc = run_cli("--model", str(model), "--optimization-json", opt, "--out", str(tmp_path / "o"),
                   "--pvc-root", str(tmp_path / "pvc"), env=env)  # fmt: skip
    line = error_line(proc)
    assert "calibration data pvc://d/cal.npz: the data set holds no samples" in line
    assert read_summary(tmp_path / "term.log")["ok"] is False


def test_invalid_optimization_is_rejected_by_the_api_rules(tmp_path: Path) -> None:
    model = _fake_h5(tmp_path / "model.h5")
    opt = json.dumps({"steps": [{"type": "quantize", "quantize": {"mode": "int8"}}], "data": {"evaluation": EVAL}})
    proc = run_cli("--model", str(model), "--optimization-json", opt, "--out", str(tmp_path / "o"),
                   "--termination-log", str(tmp_path / "t"))  # fmt: skip
    assert "int8 and int16x8 quantization need calibration data" in error_line(proc)
    proc = run_cli("--model", str(model), "--optimization-json", "{not json", "--out", str(tmp_path / "o"),
                   "--termination-log", str(tmp_path / "t"))  # fmt: skip
    assert "--optimization-json is not valid JSON" in error_line(proc)


@pytest.mark.parametrize("model", ["saved_model", "saved_model/saved_model.pb", "model.tflite"])
def test_an_output_directory_that_holds_the_model_is_refused(tmp_path: Path, model: str) -> None:
    """The outputs are cleared before they are written: a model at OUT/saved_model (or OUT/model.tflite) was
    deleted, then read ('internal error: FileNotFoundError') or replaced by the result."""
    out = tmp_path / "o"
    (out / "saved_model" / "variables").mkdir(parents=True)
    (out / "saved_model" / "saved_model.pb").write_bytes(b"the user's graph")
    (out / "model.tflite").write_bytes(b"the user's TFL3")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}  # report.json: the run's failure report
    for uri in (str(out / model), f"file://{out / model}", f"pvc://o/{model}"):
        proc = run_cli("--model", uri, "--optimization-json", _opt(evaluation=EVAL), "--out", str(out),
                       "--pvc-root", str(tmp_path), "--termination-log", str(tmp_path / "t"))  # fmt: skip
        line = error_line(proc)
        assert line.startswith(f"modelship optimize: error: --out {out}: the run writes "), line
        assert line.endswith(f"and would replace the model {uri}: choose another --out"), line
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "report.json"} == before


def test_a_spec_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    """A model file given as --spec: before, 'internal error: UnicodeDecodeError', exit 75."""
    spec = _fake_h5(tmp_path / "model.h5")
    proc = run_cli("--spec", str(spec), "--out", str(tmp_path / "o"), "--termination-log", str(tmp_path / "t"))
    assert error_line(proc) == (
        f"modelship optimize: error: --spec {spec}: not a text file (expected ModelDeployment YAML)"
    )


@pytest.mark.parametrize("uri", ["file:///data/eval.npz", "/data/eval.npz", "eval.npz"])
def test_a_local_data_path_gets_the_pvc_root_advice(tmp_path: Path, uri: str) -> None:
    """Data URIs need a scheme; a user's first try is a path or file://, and the pattern alone did not say what to
    write instead."""
    model = _fake_h5(tmp_path / "model.h5")
    proc = run_cli("--model", str(model), "--optimization-json", _opt(evaluation={"uri": uri, "format": "npz"}),
                   "--out", str(tmp_path / "o"), "--termination-log", str(tmp_path / "t"))  # fmt: skip
    line = error_line(proc)
    assert "data.evaluation.uri" in line
    assert line.endswith("; a local file is pvc://DIR/FILE with --pvc-root ROOT (it reads ROOT/DIR/FILE)"), line


@pytest.mark.parametrize("where", ["under-a-file", "is-a-file", "read-only"])
def test_an_output_directory_it_cannot_write_is_refused_before_anything_runs(tmp_path: Path, where: str) -> None:
    """Before, the optimization ran to its end and failed writing: 'internal error: OSError', exit 75 (temporary)."""
    model = _fake_h5(tmp_path / "model.h5")
    (tmp_path / "afile").write_text("x")
    out = {
        "under-a-file": tmp_path / "afile" / "out",
        "is-a-file": tmp_path / "afile",
        "read-only": Path("/proc/modelship-out"),  # writable by no one, root included
    }[where]
    term = tmp_path / "term.log"
    proc = run_cli("--model", str(model), "--optimization-json", _opt(evaluation=EVAL), "--out", str(out),
                   "--termination-log", str(term))  # fmt: skip
    line = error_line(proc)
    assert line.startswith(f"modelship optimize: error: --out {out}: "), line
    assert "internal error" not in line and "HDF5" not in line  # the model was never read
    assert read_summary(term)["failure"] == "Permanent"


@pytest.mark.slow
def test_label_shape_mismatch_after_tensorflow_loads(linear_example: Any, tmp_path: Path) -> None:
    bad = linear_example.root / linear_example.claim / "linear" / "bad_labels.npz"
    np.savez(bad, x=np.zeros((5, 1), np.float32), y=np.zeros((5, 3), np.float32))
    opt = linear_example.optimization.wire()
    opt["data"]["evaluation"]["uri"] = linear_example.uri(bad)
    proc = run_cli("--model", str(linear_example.model), "--optimization-json", json.dumps(opt),
                   "--out", str(tmp_path / "o"), "--pvc-root", str(linear_example.root),
                   "--termination-log", str(tmp_path / "t"))  # fmt: skip
    line = error_line(proc)  # TensorFlow's own start-up chatter must not reach stderr either
    assert "labels have shape (3) per sample but the model outputs (1)" in line


@pytest.mark.slow
def test_end_to_end_as_the_operator_runs_it(linear_example: Any, tmp_path: Path) -> None:
    out, term, plot = tmp_path / "out", tmp_path / "term.log", tmp_path / "plot.png"
    digest = sha256_path(linear_example.model)
    proc = run_cli("--model", str(linear_example.model), "--format", "h5", "--digest", digest,
                   "--optimization-json", json.dumps(linear_example.optimization.wire()),
                   "--out", str(out), "--pvc-root", str(linear_example.root), "--termination-log", str(term),
                   "--plot", str(plot), "--latency-seconds", "0.1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip() == "", proc.stderr[-3000:]
    summary = Summary.from_line(term.read_text())
    assert summary.ok and summary.decision == ShipDecision.OPTIMIZED and summary.source_digest == digest
    assert summary.artifact == "model.tflite" and summary.artifact_digest == sha256_path(out / "model.tflite")
    report = Report.model_validate_json((out / "report.json").read_text())
    assert report.summary == summary and report.steps[0].name == "quantize:int8"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "quantize:int8" in proc.stdout and "gate passed" in proc.stdout.replace("\n", " ")


KERAS3_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras

    assert keras.__version__.startswith("3"), keras.__version__
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(0, 1, (200, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 1).astype("int64")
    layers = keras.layers
    m = keras.Sequential([
        keras.Input((4,)), layers.Dense(16, activation="relu"), layers.Dense(2, activation="softmax"),
    ])
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=30, verbose=0)
    out = sys.argv[1]
    m.save(out + "/model.keras")
    m.export(out + "/exported", verbose=False)
    np.savez(out + "/data/d/eval.npz", x=x, y=y)
    """
)


@pytest.fixture(scope="module")
def keras3_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras 3 .keras file and a Keras 3 model.export() SavedModel, made in a process without tf-keras selected."""
    root = tmp_path_factory.mktemp("keras3")
    (root / "data" / "d").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", KERAS3_SCRIPT, str(root)], env=env, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.mark.slow
def test_keras3_keras_file_is_refused_with_advice(keras3_models: Path, tmp_path: Path) -> None:
    proc = run_cli("--model", str(keras3_models / "model.keras"), "--optimization-json", _opt(evaluation=EVAL),
                   "--out", str(tmp_path / "o"), "--termination-log", str(tmp_path / "t"))  # fmt: skip
    line = error_line(proc)
    assert "is a Keras 3." in line and "model.export(DIR)" in line and "tf-keras" in line


@pytest.mark.slow
def test_keras3_export_gets_post_training_quantization_only(keras3_models: Path, tmp_path: Path) -> None:
    opt = {
        "steps": [
            {"type": "prune", "prune": {"targetSparsity": 0.5}},
            {"type": "quantize", "quantize": {"mode": "dynamic"}},
        ],
        "data": {"evaluation": EVAL},
        "gate": {"maxDrop": 0.05},
    }
    out = tmp_path / "o"
    proc = run_cli("--model", str(keras3_models / "exported"), "--optimization-json", json.dumps(opt),
                   "--out", str(out), "--pvc-root", str(keras3_models / "data"), "--termination-log",
                   str(tmp_path / "t"), "--latency-seconds", "0.1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = Report.model_validate_json((out / "report.json").read_text())
    assert report.model_format == "savedmodel"
    assert any("only post-training quantization applies" in n for n in report.notes)
    prune, quant = report.steps
    assert prune.skipped and "prune skipped" in prune.notes[0] and "post-training quantization" in prune.notes[0]
    assert not quant.skipped and quant.measurement.metric is not None
    assert report.summary.candidate == "dynamic" and (out / "model.tflite").is_file()


HIDE_SKLEARN = """
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    # scikit-learn as if it were not installed (the `examples` extra left out)
    def find_spec(self, name, path=None, target=None):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
from modelship.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("example", ["digits-mlp", "digits-cnn", "two-inputs"])
def test_a_digits_example_without_scikit_learn_names_the_extra(tmp_path: Path, example: str) -> None:
    term = tmp_path / "term.log"
    proc = subprocess.run(
        [sys.executable, "-c", HIDE_SKLEARN, "optimize", "--example", example, "--out", str(tmp_path / "o"),
         "--termination-log", str(term)],
        capture_output=True, text=True, env=cli_env(), timeout=300, check=False,
    )  # fmt: skip
    line = error_line(proc)  # exit 1 (the input is at fault: no retry helps), one line, no traceback
    assert f"the {example} example" in line and "scikit-learn is not installed" in line
    assert "No module named 'sklearn'" in line
    assert "install the 'examples' extra, e.g. pip install 'modelship[examples]'" in line
    summary = read_summary(term)
    assert summary["ok"] is False and summary["failure"] == "Permanent"
    assert not (tmp_path / "o" / "example").exists() or not any((tmp_path / "o" / "example").rglob("*.h5"))


def test_the_examples_extra_carries_scikit_learn() -> None:
    import tomllib

    from modelship.optimize.examples import SKLEARN_EXTRA

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert any(req.startswith("scikit-learn") for req in project["optional-dependencies"][SKLEARN_EXTRA])


def _blocked_report(strategy: str = "Steps", **summary: Any) -> Report:
    fields: dict[str, Any] = {
        "ok": True, "metricName": "accuracy", "baseline": 0.9711, "value": 0.8, "drop": 0.1711, "gate": "Failed",
        "decision": "Blocked", "candidate": "quantize:int8",
        "message": "gate failed for quantize:int8: accuracy 0.8 vs baseline 0.9711: drop 0.1711 > maxDrop 0.01 "
        "(absolute); onFail Block: blocked, nothing new ships",
    }  # fmt: skip
    fields.update(summary)
    return Report.model_validate(
        {
            "summary": {k: v for k, v in fields.items() if v is not None},
            "strategy": strategy,
            "gate": {"maxDrop": 0.01, "dropType": "absolute", "onFail": "Block"},
            "steps": [{"name": "quantize:int8", "passed": False, "measurement": {"metric": 0.8, "drop": 0.1711}}],
        }
    )


def test_the_table_title_reads_as_a_title_not_an_error_line() -> None:
    from io import StringIO

    from modelship.optimize.render import print_report

    out = StringIO()
    print_report(_blocked_report(), file=out)
    first = out.getvalue().splitlines()[0]
    assert not first.startswith("modelship optimize:")  # the prefix of the error and warning lines
    assert first.strip() == "Variants of the Steps optimization, by accuracy"


def test_a_blocked_run_says_what_was_blocked_and_why_in_the_gates_numbers(tmp_path: Path) -> None:
    from modelship.optimize.render import last_line

    line = last_line(_blocked_report(), tmp_path)
    assert line == (
        "Blocked: nothing ships, the gate rejected quantize:int8: its accuracy 0.8 against the original model's "
        f"0.9711 is worse by 0.1711, more than the gate's maxDrop 0.01 (absolute), and onFail is Block; only the "
        f"report was written: {tmp_path / 'report.json'}"
    )
    assert "nothing (blocked)" not in line
    auto = last_line(_blocked_report("Auto", candidate="prune+int8"), tmp_path)
    assert "no candidate passed the gate (its pick was prune+int8): its accuracy 0.8" in auto
    # without the numbers (nothing was judged), the gate's own message says it
    bare = last_line(_blocked_report(candidate=None, value=None, drop=None, message="nothing passed"), tmp_path)
    assert bare.startswith("Blocked: nothing ships, nothing passed; only the report was written: ")
    shipped = _blocked_report(decision="Optimized", gate="Passed", artifact="model.tflite")
    assert last_line(shipped, tmp_path) == (
        f"Optimized: {tmp_path / 'model.tflite'}; report {tmp_path / 'report.json'}"
    )


def test_fail_on_block_is_opt_in_and_its_exit_code_is_its_own() -> None:
    from modelship.api.report import EXIT_CODES
    from modelship.optimize.cli import EXIT_BLOCKED, exit_code

    assert EXIT_BLOCKED not in {0, 1, 2, 130, *EXIT_CODES.values()}  # 2: argparse's usage error
    blocked = _blocked_report()
    assert exit_code(blocked, fail_on_block=False) == 0  # the operator's Job: the decision is in the summary
    assert exit_code(blocked, fail_on_block=True) == EXIT_BLOCKED
    shipped = _blocked_report(decision="Optimized", gate="Passed", artifact="model.tflite")
    assert exit_code(shipped, fail_on_block=True) == 0


@pytest.mark.slow
def test_fail_on_block_fails_a_blocked_run_as_a_ci_step_would_see_it(linear_example: Any, tmp_path: Path) -> None:
    from modelship.api.optimization import Gate
    from modelship.optimize.cli import EXIT_BLOCKED

    # evaluation up to x=10, calibration only [-1, 4]: int8 clips at 7 and the gate fails (see test_linear)
    data = linear_example.optimization.data.model_copy(update={"evaluation": linear_example.data_ref("eval_wide")})
    strict = linear_example.optimization.model_copy(update={"data": data, "gate": Gate(max_drop=0.05)})
    out, term = tmp_path / "out", tmp_path / "term.log"
    proc = run_cli("--model", str(linear_example.model), "--optimization-json", json.dumps(strict.wire()),
                   "--out", str(out), "--pvc-root", str(linear_example.root), "--termination-log", str(term),
                   "--latency-seconds", "0.05", "--fail-on-block")  # fmt: skip
    assert proc.returncode == EXIT_BLOCKED, proc.stderr[-3000:]
    assert proc.stderr.strip() == "", proc.stderr[-3000:]  # not an error: the run finished, the gate said no
    summary = Summary.from_line(term.read_text())
    assert summary.ok and summary.decision == ShipDecision.BLOCKED
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("Blocked: nothing ships, the gate rejected ") and "maxDrop 0.05 (absolute)" in last
    assert not (out / "model.tflite").exists()
