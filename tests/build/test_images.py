"""The real thing on a real engine: a digits model built into the serving image, run read-only as a
non-root user behind a loopback port, answering both protocols like the TFLite interpreter, and stopping
cleanly. Plus the shape of the three runtime images."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelship.build.local import build_local

from .conftest import ensure_image
from .digits import DigitsOutput, interpreter_predict, make_digits_output

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TAG = "modelship-test/digits:rdigits0001"
NAMES = ("operator", "serving", "optimizer")


def http(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsOutput:
    return make_digits_output(tmp_path_factory.mktemp("digits") / "out")


@pytest.fixture(scope="module")
def model_image(docker_client: Any, serving_image: str, digits: DigitsOutput) -> Iterator[Any]:
    lines: list[str] = []
    t0 = time.monotonic()
    image = build_local(digits.path, TAG, base_image=serving_image, name="digits", on_line=lines.append)
    print(f"built {TAG} in {time.monotonic() - t0:.1f}s, {image.size} bytes")
    assert any(line.startswith("Step ") for line in lines), "the build log is streamed"
    yield image
    docker_client.images.remove(TAG, force=True)


@contextlib.contextmanager
def serve_container(client: Any, tag: str, mem_limit: str = "512m") -> Iterator[tuple[Any, str]]:
    """Run a model image the strict way (read-only root, /tmp tmpfs, no capabilities, loopback-only port);
    yield it once ready with its base URL; remove it afterwards."""
    container = client.containers.run(
        tag,
        detach=True,
        read_only=True,
        tmpfs={"/tmp": "rw,size=64m"},
        ports={"8080/tcp": ("127.0.0.1", None)},  # loopback only, a free port
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        mem_limit=mem_limit,
        environment={"MODELSHIP_WORKERS": "1"},
    )
    try:
        container.reload()
        port = container.ports["8080/tcp"][0]["HostPort"]
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if http("GET", f"{base}/v2/health/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            container.reload()
            if container.status != "running" or time.monotonic() > deadline:
                raise AssertionError(f"server not ready ({container.status}):\n{container.logs().decode()[-3000:]}")
            time.sleep(0.5)
        yield container, base
    finally:
        container.remove(force=True)


def predict_both(base: str, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same batch through TF Serving REST and OIP v2."""
    status, body = http("POST", f"{base}/v1/models/{name}:predict", {"instances": x.tolist()})
    assert status == 200, body
    v1 = np.asarray(body["predictions"], dtype=np.float32).reshape(len(x), -1)
    _, meta = http("GET", f"{base}/v2/models/{name}")
    inp = meta["inputs"][0]["name"]
    request = {"inputs": [{"name": inp, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    status, body = http("POST", f"{base}/v2/models/{name}/infer", request)
    assert status == 200, body
    out = body["outputs"][0]
    v2 = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]).reshape(len(x), -1)
    return v1, v2


@pytest.fixture(scope="module")
def running(docker_client: Any, model_image: Any) -> Iterator[tuple[Any, str]]:
    with serve_container(docker_client, TAG) as pair:
        yield pair


def test_image_metadata(model_image: Any, digits: DigitsOutput, serving_image: str) -> None:
    labels = model_image.labels
    assert labels["modelship.io/artifact-digest"] == digits.digest
    assert labels["modelship.io/revision"] == "rdigits0001"
    assert labels["org.opencontainers.image.base.name"] == serving_image
    assert labels["modelship.io/decision"] == "Optimized"
    assert model_image.context.model_path == "/model/model.tflite"
    assert model_image.context.name == "digits"


def test_runs_as_non_root_on_a_read_only_root(docker_client: Any, running: tuple[Any, str]) -> None:
    container, _ = running
    attrs = docker_client.api.inspect_container(container.id)
    assert attrs["Config"]["User"] == "65532:65532"
    assert attrs["HostConfig"]["ReadonlyRootfs"] is True
    rc, out = container.exec_run(["id", "-u"])
    assert rc == 0 and out.decode().strip() == "65532"
    rc, out = container.exec_run(["sh", "-c", "touch /model/x || touch /opt/venv/x"])
    assert rc != 0 and b"Read-only file system" in out


def test_health_endpoints(running: tuple[Any, str]) -> None:
    _, base = running
    assert http("GET", f"{base}/v2/health/live")[0] == 200
    assert http("GET", f"{base}/v2/health/ready")[0] == 200
    status, meta = http("GET", f"{base}/v2/models/digits")
    assert status == 200 and meta["name"] == "digits"


def test_predict_through_both_protocols_matches_the_interpreter(running: tuple[Any, str], digits: DigitsOutput) -> None:
    _, base = running
    v1, v2 = predict_both(base, "digits", digits.x)
    np.testing.assert_allclose(v1, digits.expected, atol=1e-5)
    np.testing.assert_allclose(v2, digits.expected, atol=1e-5)
    assert (v1.argmax(1) == v2.argmax(1)).all() and (v2.argmax(1) == digits.expected.argmax(1)).all()


def test_docker_healthcheck_turns_healthy(docker_client: Any, running: tuple[Any, str]) -> None:
    container, _ = running
    deadline = time.monotonic() + 60
    while True:
        health = docker_client.api.inspect_container(container.id)["State"].get("Health") or {}
        if health.get("Status") == "healthy":
            break
        assert health.get("Status") != "unhealthy", health
        assert time.monotonic() < deadline, f"still {health.get('Status')}: {health.get('Log')}"
        time.sleep(1)


def test_zz_docker_stop_drains_cleanly(docker_client: Any, running: tuple[Any, str]) -> None:
    """Last: SIGTERM -> drain -> exit 0 within the grace period (runs after the others in this module)."""
    container, _ = running
    grace = 20
    t0 = time.monotonic()
    container.stop(timeout=grace)
    elapsed = time.monotonic() - t0
    state = docker_client.api.inspect_container(container.id)["State"]
    logs = container.logs().decode()[-2000:]
    assert state["ExitCode"] == 0, logs
    assert not state["OOMKilled"]
    assert elapsed < grace, f"took {elapsed:.1f}s: killed at the end of the grace period?\n{logs}"


def test_runtime_images_shape(docker_client: Any, serving_image: str) -> None:
    """Non-root, venv at /opt/venv, no compiler in the final stage; serving far smaller than the optimizer."""
    sizes = {}
    tags = {name: serving_image if name == "serving" else ensure_image(docker_client, name) for name in NAMES}
    for name, tag in tags.items():
        image = docker_client.images.get(tag)
        assert image.attrs["Config"]["User"] == "65532:65532", name
        sizes[name] = int(image.attrs["Size"])
        out = docker_client.containers.run(
            tag,
            entrypoint=["sh", "-c", "id -u; test -x /opt/venv/bin/modelship && echo venv; "
                        "command -v gcc cc g++ make || echo no-compiler"],
            remove=True,
            read_only=True,
        ).decode().split()  # fmt: skip
        assert out == ["65532", "venv", "no-compiler"], (name, out)
    out = docker_client.containers.run(tags["operator"], ["--version"], remove=True, read_only=True).decode()
    assert out.strip() == "modelship 0.1.0"
    print("image sizes:", sizes)
    assert sizes["serving"] * 5 < sizes["optimizer"], sizes


def test_the_serving_image_reads_large_json_natively(docker_client: Any, serving_image: str) -> None:
    """libmsjson, built in the image's own native stage, is where the server looks for it and loads there (the
    final stage has no compiler: test_runtime_images_shape), its quantize bound for the workers' inputs too."""
    code = (
        "from modelship.serve import jsonparse, nativequant; print(jsonparse.describe()); "
        "print('quantize', 'native' if nativequant.QUANTIZE is not None else 'numpy')"
    )
    out = docker_client.containers.run(
        serving_image, entrypoint=["/opt/venv/bin/python", "-c", code], remove=True, read_only=True
    ).decode()
    # the image's own build (on its base, x86-64): the FP32 fast path built in
    assert out.startswith(
        "native (msjson 2, simdjson 3.12.3 number parsing, f32 fast path; /opt/venv/lib/modelship/libmsjson.so)"
    ), out
    assert out.splitlines()[-1] == "quantize native", out


def test_refused_before_the_engine_builds(tmp_path: Path, docker_client: Any, serving_image: str) -> None:
    from modelship.build.context import ContextError

    from .support import write_output

    src = write_output(tmp_path / "out", b"x")
    (src / "model.tflite").write_bytes(b"y")
    before = {i.id for i in docker_client.images.list()}
    with pytest.raises(ContextError, match="digest mismatch"):
        build_local(src, "modelship-test/refused:1", base_image=serving_image, client=docker_client)
    assert {i.id for i in docker_client.images.list()} == before


def test_the_optimizers_own_output_builds_and_serves(tmp_path: Path, docker_client: Any, serving_image: str) -> None:
    """The real interface: `modelship optimize` (the seed's y = 2x - 1, int8 behind the gate) writes the output
    directory; it is built into an image and served, answering like the interpreter."""
    from modelship.optimize import examples
    from modelship.optimize.pipeline import Request, optimize

    ex = examples.linear(tmp_path / "pvc")
    out = tmp_path / "out"
    report = optimize(
        Request(
            model=ex.model_uri,
            optimization=ex.optimization,
            out_dir=out,
            pvc_root=str(ex.root),
            speed_seconds=0.2,
            revision="rlinear0001",
        )
    )
    assert report.summary.ok and report.summary.artifact == "model.tflite"
    tag = "modelship-test/linear:rlinear0001"
    image = build_local(out, tag, base_image=serving_image, name="linear")
    try:
        assert image.labels["modelship.io/artifact-digest"] == report.summary.artifact_digest
        assert image.labels["modelship.io/revision"] == "rlinear0001"
        assert image.labels["modelship.io/metric-name"] == "mae"
        x = np.array([[-1.0], [0.0], [1.5], [3.0]], dtype=np.float32)
        expected = interpreter_predict(out / "model.tflite", x)
        with serve_container(docker_client, tag) as (container, base):
            v1, v2 = predict_both(base, "linear", x)
            container.stop(timeout=20)
            assert docker_client.api.inspect_container(container.id)["State"]["ExitCode"] == 0
        np.testing.assert_allclose(v1, expected, atol=1e-5)
        np.testing.assert_allclose(v2, expected, atol=1e-5)
        np.testing.assert_allclose(v1.ravel(), 2 * x.ravel() - 1, atol=0.1)  # it learned y = 2x - 1
    finally:
        docker_client.images.remove(tag, force=True)


def test_a_savedmodel_export_builds_on_the_tensorflow_runtime_and_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_client: Any, tf_serving_image: str
) -> None:
    """export format savedmodel: on the serving image (no TensorFlow) the container exited at start ('serving a
    SavedModel needs TensorFlow'), on the optimizer image before this change with 'No module named orjson'.
    `modelship build` without --base-image now builds it FROM the TensorFlow-capable runtime (the optimizer
    image), which serves it through both protocols like the SavedModel itself answers, and stops cleanly."""
    from modelship.api.optimization import Optimization
    from modelship.cli import main
    from modelship.optimize import examples, tfenv
    from modelship.optimize.pipeline import Request, optimize

    ex = examples.linear(tmp_path / "pvc")
    wire = {**ex.optimization.wire(), "export": {"format": "savedmodel"}}
    # nothing to prune in a Dense(1): the point is the export
    wire["steps"] = [{"type": "prune", "prune": {"targetSparsity": 0.0, "schedule": "Constant"}}]
    out = tmp_path / "out"
    report = optimize(Request(model=ex.model_uri, optimization=Optimization.model_validate(wire), out_dir=out,
                              pvc_root=str(ex.root), speed_seconds=0.2, revision="rlinsm0001"))  # fmt: skip
    assert report.summary.ok and report.summary.artifact == "saved_model", report.summary
    monkeypatch.setenv("MODELSHIP_OPTIMIZER_IMAGE", tf_serving_image)
    monkeypatch.delenv("MODELSHIP_SERVING_TENSORFLOW_IMAGE", raising=False)
    tag = "modelship-test/linear-savedmodel:rlinsm0001"
    assert main(["build", "--from", str(out), "--tag", tag, "--name", "linear"]) == 0
    try:
        image = docker_client.images.get(tag)
        assert image.labels["org.opencontainers.image.base.name"] == tf_serving_image
        assert image.labels["modelship.io/model-path"] == "/model/saved_model"
        x = np.array([[-1.0], [0.0], [1.5], [3.0]], dtype=np.float32)
        fn = tfenv.load().tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
        expected = next(iter(fn(**{next(iter(fn.structured_input_signature[1])): x}).values())).numpy()
        # the operator's default for a savedmodel export (resources/serving.py: SAVEDMODEL_RESOURCES)
        with serve_container(docker_client, tag, mem_limit="1g") as (container, base):
            _, meta = http("GET", f"{base}/v2/models/linear")
            assert meta["platform"] == "tensorflow_savedmodel", meta
            v1, v2 = predict_both(base, "linear", x)
            container.stop(timeout=20)
            assert docker_client.api.inspect_container(container.id)["State"]["ExitCode"] == 0
        np.testing.assert_allclose(v1, expected.reshape(len(x), -1), atol=1e-5)
        np.testing.assert_allclose(v2, expected.reshape(len(x), -1), atol=1e-5)
        np.testing.assert_allclose(v1.ravel(), 2 * x.ravel() - 1, atol=0.1)  # it learned y = 2x - 1
    finally:
        docker_client.images.remove(tag, force=True)
