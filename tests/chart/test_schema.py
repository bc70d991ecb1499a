"""values.schema.json: a wrong value fails `helm template` (and so `helm install`/`upgrade`/`lint`) with a
message that names the value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.helm import CHART, Helm

SCHEMA = json.loads((CHART / "values.schema.json").read_text())

# values (--set-json), fragments the error must contain
BAD: list[tuple[dict[str, Any], list[str]]] = [
    ({"operator.logLevel": "LOUD"}, ["/operator/logLevel", "'DEBUG', 'INFO'"]),
    ({"operator.logFormat": "xml"}, ["/operator/logFormat", "'json', 'plain'"]),
    ({"operator.workers": 0}, ["/operator/workers", "minimum"]),
    ({"operator.workers": "4"}, ["/operator/workers", "integer"]),
    ({"operator.watchNamespaces": ["Team_A"]}, ["/operator/watchNamespaces/0", "does not match pattern"]),
    ({"operator.watchNamespaces": "team-a"}, ["/operator/watchNamespaces", "array"]),
    ({"operator.watchNamespaces": ["a", "a"]}, ["/operator/watchNamespaces", "are equal"]),
    ({"image.digest": "sha256:abc"}, ["/image/digest", "^sha256:[a-f0-9]{64}$"]),
    ({"image.digest": "abc123"}, ["/image/digest"]),
    ({"image.pullPolicy": "Sometimes"}, ["/image/pullPolicy", "'Always', 'IfNotPresent', 'Never'"]),
    ({"image.repository": "Registry.Example/Op"}, ["/image/repository", "does not match pattern"]),
    ({"images.serving": {"repository": "modelship/serving", "digest": "md5:00"}}, ["/images/serving/digest"]),
    ({"images.buildkit.tag": "has space"}, ["/images/buildkit/tag"]),
    ({"images.servingTensorflow": {"repository": "Bad/Repo"}}, ["/images/servingTensorflow/repository"]),
    ({"imag": {"tag": "x"}}, ["additional properties 'imag' not allowed"]),
    ({"replicaCount": 2}, ["additional properties 'replicaCount' not allowed"]),
    ({"operator.watchNamespace": ["a"]}, ["/operator", "additional properties 'watchNamespace' not allowed"]),
    ({"securityContext.runAsNonRoot": False}, ["/securityContext/runAsNonRoot", "true"]),
    ({"securityContext.allowPrivilegeEscalation": True}, ["/securityContext/allowPrivilegeEscalation", "false"]),
    ({"securityContext.capabilities": {"drop": ["NET_RAW"]}}, ["/securityContext/capabilities/drop"]),
    ({"securityContext.capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}, ["/securityContext/capabilities/add"]),
    ({"podSecurityContext.runAsNonRoot": False}, ["/podSecurityContext/runAsNonRoot"]),
    ({"jobs.maxAttempts": 0}, ["/jobs/maxAttempts", "minimum"]),
    ({"jobs.retryBaseSeconds": -1}, ["/jobs/retryBaseSeconds", "minimum"]),
    ({"jobs.ttlSecondsAfterFinished": "1h"}, ["/jobs/ttlSecondsAfterFinished", "integer"]),
    ({"metrics.port": 70000}, ["/metrics/port", "maximum"]),
    ({"metrics.serviceMonitor.interval": "often"}, ["/metrics/serviceMonitor/interval"]),
    ({"analysis.prometheus.podMonitor.interval": "often"}, ["/analysis/prometheus/podMonitor/interval"]),
    ({"analysis.prometheus.podMonitor.enable": True}, ["additional properties 'enable' not allowed"]),
    ({"build.engine": "docker"}, ["/build/engine", "'buildkit', 'kaniko'"]),
    ({"build.registry": "https://registry.example.com/models"}, ["/build/registry"]),
    ({"build.registry": "Registry.Example/models"}, ["/build/registry"]),
    ({"build.registry": "registry.example.com/a__b"}, ["/build/registry"]),
    ({"artifacts.storageSize": "lots"}, ["/artifacts/storageSize", "does not match pattern"]),
    ({"operator.resyncSeconds": 0}, ["/operator/resyncSeconds"]),
    ({"extraEnv": [{"value": "x"}]}, ["/extraEnv/0", "missing property 'name'"]),
]


@pytest.mark.parametrize(
    ("values", "fragments"), BAD, ids=[next(iter(v)) + "-" + str(i) for i, (v, _) in enumerate(BAD)]
)
def test_wrong_values_are_rejected_with_a_message(helm: Helm, values: dict[str, Any], fragments: list[str]) -> None:
    err = helm.template_error(values)
    assert "values don't meet the specifications of the schema" in err, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in:\n{err}"


def test_install_checks_the_schema_too(helm: Helm) -> None:
    """`helm install --dry-run=client` (no cluster) validates values the same way."""
    proc = helm.run("install", "ms", str(CHART), "--dry-run=client", "--set", "operator.logFormat=xml", check=False)
    assert proc.returncode != 0 and "/operator/logFormat" in proc.stderr, proc.stderr


@pytest.mark.parametrize("path", [CHART / "values.yaml", *sorted((CHART / "ci").glob("*.yaml"))], ids=lambda p: p.name)
def test_shipped_values_are_valid(path: Path) -> None:
    """The defaults and every ci/ file pass the schema (checked here by an independent validator too)."""
    values = yaml.safe_load(path.read_text())
    if path.name != "values.yaml":  # overlays: merged over the defaults, as helm does
        values = _merge(yaml.safe_load((CHART / "values.yaml").read_text()), values)
    jsonschema.Draft7Validator(SCHEMA).validate(values)


def test_schema_covers_every_default_key() -> None:
    """Every key in values.yaml is declared in the schema, so typos in overrides are caught
    (additionalProperties: false everywhere except Kubernetes objects passed through as they are)."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    open_objects = {"/resources", "/podSecurityContext", "/securityContext"}

    def walk(schema: dict[str, Any], values: dict[str, Any], path: str) -> None:
        if path in open_objects:
            return
        assert schema.get("additionalProperties") is False, f"{path or '/'} accepts unknown keys"
        props = schema["properties"]
        for key, value in values.items():
            assert key in props, f"{path}/{key} is not in values.schema.json"
            if isinstance(value, dict) and "properties" in props[key]:
                walk(props[key], value, f"{path}/{key}")

    walk(SCHEMA, defaults, "")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_build_registry_pattern_is_the_operators() -> None:
    """The chart refuses exactly what the operator would refuse at start (MODELSHIP_BUILD_REGISTRY)."""
    from modelship.api.build import REGISTRY_PREFIX_PATTERN

    registry = SCHEMA["properties"]["build"]["properties"]["registry"]
    (pattern,) = [a["pattern"] for a in registry["anyOf"] if "pattern" in a]
    assert pattern == REGISTRY_PREFIX_PATTERN
