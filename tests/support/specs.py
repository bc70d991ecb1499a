"""Valid and invalid ModelDeployment documents shared by the unit tests (pydantic, schema + CEL) and the
integration tests (the real API server)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def valid_doc(name: str = "digits") -> dict[str, Any]:
    """A complete valid ModelDeployment touching every section."""
    return {
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "pvc://models/digits/cnn.h5", "format": "h5"},
            "optimization": {
                "steps": [
                    {"type": "prune", "prune": {"targetSparsity": 0.8}},
                    {"type": "quantize", "quantize": {"mode": "int8"}},
                ],
                "data": {
                    "calibration": {"uri": "pvc://models/digits/train.npz", "format": "npz"},
                    "evaluation": {"uri": "pvc://models/digits/test.npz", "format": "npz"},
                },
                "gate": {"maxDrop": 0.01},
            },
            "build": {"repository": "registry.local:5000/models/digits"},
            "serving": {"replicas": 2},
        },
    }


Mutation = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class InvalidCase:
    id: str
    mutate: Mutation
    field: str
    """A fragment of the field path every validator must name in its message."""


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        last = keys[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _del(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[keys[-1]]

    return mutate


def _all(*mutations: Mutation) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        for m in mutations:
            m(doc)

    return mutate


INVALID: list[InvalidCase] = [
    InvalidCase("unknown-uri-scheme", _set("spec.model.uri", "ftp://host/model.h5"), "uri"),
    InvalidCase("uri-with-space", _set("spec.model.uri", "s3://bucket/my model.h5"), "uri"),
    InvalidCase("pvc-uri-without-path", _set("spec.model.uri", "pvc://models"), "uri"),
    InvalidCase("wrong-model-format", _set("spec.model.format", "onnx"), "format"),
    InvalidCase("missing-model-uri", _del("spec.model.uri"), "uri"),
    InvalidCase("bad-digest", _set("spec.model.digest", "md5:abc"), "digest"),
    InvalidCase("negative-replicas", _set("spec.serving.replicas", -1), "replicas"),
    InvalidCase("replicas-too-many", _set("spec.serving.replicas", 5000), "replicas"),
    InvalidCase("port-out-of-range", _set("spec.serving.port", 80), "port"),
    InvalidCase("wrong-protocol", _set("spec.serving.protocol", "grpc-web"), "protocol"),
    InvalidCase("wrong-hardware-target", _set("spec.serving.hardware", {"target": "tpu"}), "target"),
    InvalidCase("gpu-target-zero-gpus", _set("spec.serving.hardware", {"target": "gpu", "gpu": {"count": 0}}), "gpu"),
    InvalidCase("arm64-without-arm64-platform", _set("spec.serving.hardware", {"target": "arm64"}), "platforms"),
    InvalidCase(
        "max-below-min-replicas",
        _set("spec.serving.autoscaling", {"enabled": True, "minReplicas": 5, "maxReplicas": 2}),
        "maxReplicas",
    ),
    InvalidCase(
        "min-replicas-zero",
        _set("spec.serving.autoscaling", {"enabled": True, "minReplicas": 0}),
        "minReplicas",
    ),
    InvalidCase("max-drop-negative", _set("spec.optimization.gate.maxDrop", -0.1), "maxDrop"),
    InvalidCase("accuracy-max-drop-above-one", _set("spec.optimization.gate.maxDrop", 5), "maxDrop"),
    InvalidCase(
        "relative-max-drop-above-one",
        _set("spec.optimization.gate", {"maxDrop": 2, "dropType": "relative"}),
        "maxDrop",
    ),
    InvalidCase("wrong-drop-type", _set("spec.optimization.gate.dropType", "percent"), "dropType"),
    InvalidCase("wrong-on-fail", _set("spec.optimization.gate.onFail", "Ignore"), "onFail"),
    InvalidCase("int8-without-calibration", _del("spec.optimization.data.calibration"), "data"),
    InvalidCase("no-evaluation-data", _del("spec.optimization.data.evaluation"), "data"),
    InvalidCase("sparsity-above-limit", _set("spec.optimization.steps.0.prune.targetSparsity", 1.5), "targetSparsity"),
    InvalidCase("wrong-step-type", _set("spec.optimization.steps.0.type", "distill"), "type"),
    InvalidCase(
        "step-params-mismatch",
        _set("spec.optimization.steps.0", {"type": "prune", "cluster": {"numberOfClusters": 8}}),
        "steps",
    ),
    InvalidCase(
        "too-few-clusters",
        _set("spec.optimization.steps.0", {"type": "cluster", "cluster": {"numberOfClusters": 1}}),
        "numberOfClusters",
    ),
    InvalidCase(
        "low-rank-rank-and-energy",
        _set("spec.optimization.steps.0", {"type": "lowRank", "lowRank": {"rank": 8, "energy": 0.9}}),
        "lowRank",
    ),
    InvalidCase("wrong-quantize-mode", _set("spec.optimization.steps.1.quantize.mode", "int4"), "mode"),
    InvalidCase(
        "two-quantize-steps",
        _set("spec.optimization.steps.0", {"type": "quantize", "quantize": {"mode": "dynamic"}}),
        "steps",
    ),
    InvalidCase(
        "fine-tune-without-data",
        _set("spec.optimization.steps.0.fineTune", {"epochs": 2}),
        "data",
    ),
    InvalidCase("steps-strategy-without-steps", _set("spec.optimization.steps", []), "steps"),
    InvalidCase("custom-metric-without-callable", _set("spec.optimization.metric", {"type": "custom"}), "callable"),
    InvalidCase(
        "custom-metric-without-allow-code",
        _set("spec.optimization.metric", {"type": "custom", "callable": "mymetrics:score"}),
        "allowCode",
    ),
    InvalidCase("wrong-data-format", _set("spec.optimization.data.evaluation.format", "parquet"), "format"),
    InvalidCase(
        "kaniko-two-platforms",
        _all(_set("spec.build.engine", "kaniko"), _set("spec.build.platforms", ["linux/amd64", "linux/arm64"])),
        "platforms",
    ),
    InvalidCase(
        "features-and-inputs",
        _all(
            _set("spec.optimization.data.evaluation.features", "x"),
            _set("spec.optimization.data.evaluation.inputs", {"first": "x1", "second": "x2"}),
        ),
        "inputs",
    ),
    InvalidCase("inputs-empty-map", _set("spec.optimization.data.calibration.inputs", {}), "inputs"),
    InvalidCase("inputs-empty-input-name", _set("spec.optimization.data.evaluation.inputs", {"": "x1"}), "inputs"),
    InvalidCase("inputs-empty-array-name", _set("spec.optimization.data.evaluation.inputs", {"first": ""}), "inputs"),
    InvalidCase("inputs-not-a-map", _set("spec.optimization.data.evaluation.inputs", ["x1", "x2"]), "inputs"),
    InvalidCase("metric-output-empty", _set("spec.optimization.metric", {"type": "accuracy", "output": ""}), "output"),
    InvalidCase("bad-repository", _set("spec.build.repository", "Registry/UPPER"), "repository"),
    InvalidCase("wrong-platform", _set("spec.build.platforms", ["windows/amd64"]), "platforms"),
    InvalidCase("wrong-build-engine", _set("spec.build.engine", "docker"), "engine"),
    InvalidCase("bad-quantity", _set("spec.serving.resources", {"requests": {"cpu": "lots"}}), "cpu"),
    # the API server would refuse these only in the Deployment or Job the operator writes (ApplyRefused, late)
    InvalidCase("negative-quantity", _set("spec.serving.resources", {"requests": {"cpu": "-1"}}), "cpu"),
    InvalidCase("two-dots-quantity", _set("spec.serving.resources", {"limits": {"memory": "1.2.3Gi"}}), "memory"),
    InvalidCase("doubled-suffix-quantity", _set("spec.serving.resources", {"limits": {"memory": "1Mm"}}), "memory"),
    InvalidCase("negative-shm-size", _set("spec.serving.shmSize", "-64Mi"), "shmSize"),
    InvalidCase("wrong-service-type", _set("spec.serving.service", {"type": "ExternalName"}), "type"),
    InvalidCase("metrics-port-is-the-port", _set("spec.serving.metricsPort", 8080), "metricsPort"),
    InvalidCase(
        "fractional-request-bytes", _set("spec.serving.limits", {"maxRequestBytes": "1.5Gi"}), "maxRequestBytes"
    ),
    InvalidCase("tiny-request-bytes", _set("spec.serving.limits", {"maxRequestBytes": "100"}), "maxRequestBytes"),
    InvalidCase(
        "canary-without-canary-strategy",
        _set("spec.serving.rollout", {"strategy": "RollingUpdate", "canary": {"steps": [{"weight": 20}]}}),
        "canary",
    ),
    InvalidCase(
        "canary-weight-over-90",
        _set("spec.serving.rollout", {"strategy": "Canary", "canary": {"steps": [{"weight": 95}]}}),
        "weight",
    ),
    InvalidCase(
        "canary-without-steps", _set("spec.serving.rollout", {"strategy": "Canary", "canary": {"steps": []}}), "steps"
    ),
    InvalidCase(
        "shadow-percent-zero",
        _set("spec.serving.rollout", {"strategy": "Canary", "canary": {"shadow": {"percent": 0}}}),
        "percent",
    ),
    InvalidCase(
        "agreement-over-one",
        _set("spec.serving.rollout", {"strategy": "Canary", "canary": {"analysis": {"minAgreement": 1.5}}}),
        "minAgreement",
    ),
    InvalidCase(
        "latency-quantile-one",
        _set("spec.serving.rollout", {"strategy": "Canary", "canary": {"analysis": {"latencyQuantile": 1.0}}}),
        "latencyQuantile",
    ),
    InvalidCase(
        "latency-quantile-below-median",
        _set("spec.serving.rollout", {"strategy": "Canary", "canary": {"analysis": {"latencyQuantile": 0.3}}}),
        "latencyQuantile",
    ),
    InvalidCase(
        "unknown-comparison",
        _set("spec.serving.rollout", {"strategy": "Canary", "canary": {"analysis": {"comparison": "L2"}}}),
        "comparison",
    ),
    InvalidCase("queue-of-zero", _set("spec.serving.limits", {"maxQueuedRequests": 0}), "maxQueuedRequests"),
    InvalidCase(
        "tflite-with-optimization",
        _all(_set("spec.model.format", "tflite"), _set("spec.model.uri", "pvc://models/digits/model.tflite")),
        "optimization",
    ),
    InvalidCase(
        "data-set-service-account",
        _set("spec.optimization.data.evaluation.credentials", {"serviceAccountName": "reader"}),
        "serviceAccountName",
    ),
    InvalidCase("secret-inline", _set("spec.model.credentials", {"accessKey": "AKIA..."}), "credentials"),
    InvalidCase("gs-scheme-removed", _set("spec.model.uri", "gs://bucket/model.h5"), "uri"),
    InvalidCase(
        "https-model-format-not-inferable",
        _all(_del("spec.model.format"), _set("spec.model.uri", "https://models.example.com/download?id=3")),
        "format",
    ),
    InvalidCase(
        "inferred-tflite-with-optimization",
        _all(_del("spec.model.format"), _set("spec.model.uri", "s3://bucket/digits/model.TFLITE")),
        "optimization",
    ),
    InvalidCase("mlflow-without-tracking-server", _set("spec.model.uri", "models:/digits/3"), "credentials"),
    InvalidCase("name-too-long", _set("metadata.name", "a" * 50), "name"),
    InvalidCase("name-starts-with-digit", _set("metadata.name", "1digits"), "name"),
    InvalidCase("suspend-not-bool", _set("spec.suspend", "yes"), "suspend"),
]


def invalid_doc(case: InvalidCase) -> dict[str, Any]:
    doc = copy.deepcopy(valid_doc())
    case.mutate(doc)
    return doc
