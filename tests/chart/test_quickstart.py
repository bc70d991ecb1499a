"""The kind quick start (docs/kind-quickstart.md): its files are well-formed, its Helm values render, and the
seed Job's program writes exactly the files examples/linear-regression.yaml reads. The kind cluster itself
cannot run here (no node image); the doc says which steps CI proves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import numpy as np
import pytest
import yaml

from modelship.config import OperatorConfig
from tests.chart.helm import CHART, REPO_ROOT, Helm, container_env, one

QUICKSTART = CHART / "docs" / "quickstart"
DOC = REPO_ROOT / "docs" / "kind-quickstart.md"
EXAMPLE = REPO_ROOT / "examples" / "linear-regression.yaml"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_kind_config() -> None:
    (cfg,) = _docs(REPO_ROOT / "kind-config.yaml")
    assert (cfg["apiVersion"], cfg["kind"]) == ("kind.x-k8s.io/v1alpha4", "Cluster")
    assert [n["role"] for n in cfg["nodes"]] == ["control-plane", "worker"]
    (patch,) = cfg["containerdConfigPatches"]
    assert 'config_path = "/etc/containerd/certs.d"' in patch


def test_seed_manifests_are_valid_and_fill_the_claim_the_example_reads() -> None:
    claim, job = _docs(QUICKSTART / "seed-models.yaml")
    for obj in (claim, job):
        kubernetes_validate.validate(obj, "1.34", strict=True)
    example = yaml.safe_load(EXAMPLE.read_text())
    uris = [example["spec"]["model"]["uri"], example["spec"]["optimization"]["data"]["evaluation"]["uri"]]
    claims = {u.split("/")[2] for u in uris}
    assert claims == {claim["metadata"]["name"]} == {"models"}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"] == "models"
    assert container["image"] == f"modelship/optimizer:{OperatorConfig().images.optimizer.split(':')[1]}"
    pod_sc = job["spec"]["template"]["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.slow
def test_seed_program_writes_what_the_example_reads(tmp_path: Path) -> None:
    _, job = _docs(QUICKSTART / "seed-models.yaml")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-c"]
    env = {
        **os.environ,
        **{e["name"]: e["value"] for e in container["env"]},
        "MODELS_DIR": str(tmp_path / "models"),
        "WORK_DIR": str(tmp_path / "work"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO_ROOT / "operator"),
    }
    proc = subprocess.run([sys.executable, "-c", container["args"][0]], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    example = yaml.safe_load(EXAMPLE.read_text())
    model_uri = example["spec"]["model"]["uri"]  # pvc://models/linear-regression/model.h5
    evaluation = example["spec"]["optimization"]["data"]["evaluation"]
    model = tmp_path / model_uri.removeprefix("pvc://")
    assert model.is_file() and model.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
    data = np.load(tmp_path / evaluation["uri"].removeprefix("pvc://"))
    x, y = data[evaluation["features"]], data[evaluation["labels"]]
    assert x.shape == y.shape and x.shape[1] == 1 and len(x) >= 50
    np.testing.assert_allclose(y, 2 * x - 1, rtol=1e-6)


def test_kind_values_render_and_point_at_the_quickstart_images(helm: Helm) -> None:
    objs = helm.template(value_files=[QUICKSTART / "kind-values.yaml"], release="modelship")
    for obj in objs:
        kubernetes_validate.validate(obj, "1.34", strict=True)
    dep = one(objs, "Deployment", "modelship")  # the doc's `kubectl logs deploy/modelship`
    images = OperatorConfig.from_env(container_env(dep)).images
    example = yaml.safe_load(EXAMPLE.read_text())
    registry = example["spec"]["build"]["repository"].split("/")[0]
    # the build's base image comes from the registry the build pushes to (one insecure-registry setting)
    assert images.serving.split("/")[0] == registry == "registry.modelship-system.svc.cluster.local:5000"
    assert images.optimizer == OperatorConfig().images.optimizer  # kind load docker-image'd
    assert images.buildkit == "docker.io/moby/buildkit:rootless"


def test_doc_names_files_that_exist_and_the_mirrors_match_the_example() -> None:
    text = DOC.read_text()
    for path in sorted(set(re.findall(r"(?<![\w/.])((?:charts|examples|hack|crds)/[\w./-]+|kind-config\.yaml)", text))):
        assert (REPO_ROOT / path.rstrip(".")).exists(), path
    registry = yaml.safe_load(EXAMPLE.read_text())["spec"]["build"]["repository"].split("/")[0]
    assert f'"{registry}"' in text  # a containerd mirror for the registry build Jobs push to
    assert "kind-config.yaml" in text and "helm install modelship charts/modelship" in text
    assert "What our CI proves" in text
