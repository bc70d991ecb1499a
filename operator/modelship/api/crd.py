"""Generate the ModelDeployment CustomResourceDefinition from the pydantic models.

The pydantic JSON schema is turned into a structural OpenAPI v3 schema: references inlined, ``Optional``
unwrapped (an absent field is the Kubernetes way to say "unset"), titles dropped, descriptions kept on every
field, CEL rules carried through as ``x-kubernetes-validations``.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .. import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from .common import one_line
from .modeldeployment import MAX_NAME_LENGTH, NAME_PATTERN, ModelDeploymentSpec
from .status import ModelDeploymentStatus


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _unwrap_optional(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, {type: null}]`` -> X, keeping the outer description/default."""
    variants = node.get("anyOf")
    if not variants:
        return node
    non_null = [v for v in variants if v.get("type") != "null"]
    if len(non_null) != 1:
        raise ValueError(f"cannot express union in a structural schema: {variants}")
    inner = dict(non_null[0])
    for key, value in node.items():
        if key != "anyOf":
            inner[key] = value
    if inner.get("default", ...) is None:
        del inner["default"]
    return inner


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = _unwrap_optional(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key == "additionalProperties" and value is False:
            continue  # the API server prunes (and with strict field validation rejects) unknown fields
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020 (pydantic) -> OpenAPI v3.0 (Kubernetes): bound + boolean flag
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "description":
            out[key] = one_line(value)
            continue
        if key in ("properties",):
            out[key] = {name: _structural(prop) for name, prop in value.items()}
            continue
        out[key] = _structural(value)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _check_descriptions(node: Any, path: str) -> None:
    if not isinstance(node, dict):
        return
    for name, prop in (node.get("properties") or {}).items():
        if not prop.get("description"):
            raise ValueError(f"{path}.{name} has no description (add a docstring under the field)")
        _check_descriptions(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        _check_descriptions(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        _check_descriptions(node["additionalProperties"], f"{path}{{}}")


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    """Structural OpenAPI v3 schema of one pydantic model, as the CRD wants it."""
    raw = model.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
    defs = raw.pop("$defs", {})
    schema = _structural(_resolve(raw, defs))
    assert isinstance(schema, dict)
    return schema


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Revision", "type": "string", "jsonPath": ".status.revision"},
        {
            "name": "Size",
            "type": "string",
            "jsonPath": ".status.optimization.sizeRatio",
            "description": "gzip size of the original over gzip size of the optimized artifact",
        },
        {
            "name": "Acc-Drop",
            "type": "number",
            "jsonPath": ".status.optimization.metricDrop",
            "description": "metric drop of the shipped artifact against the original",
        },
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        # `kubectl get md -o wide`: why it is not Ready (ClaimNotFound, NameConflict, ...) without a describe
        {
            "name": "Reason",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "description": "reason of the Ready condition",
        },
        {
            "name": "Message",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
            "description": "message of the Ready condition: what happens now, or what to fix",
        },
    ]


def crd() -> dict[str, Any]:
    """The complete CustomResourceDefinition manifest."""
    spec_schema = openapi_schema(ModelDeploymentSpec)
    status_schema = openapi_schema(ModelDeploymentStatus)
    _check_descriptions(spec_schema, "spec")
    _check_descriptions(status_schema, "status")
    root = {
        "type": "object",
        "description": "A TensorFlow/Keras model optimized behind an accuracy gate, built into an image and served.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion of this representation (modelship.io/v1alpha1).",
            },
            "kind": {"type": "string", "description": "Kind of this representation (ModelDeployment)."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.matches('{NAME_PATTERN}') "
                f"&& size(self.metadata.name) <= {MAX_NAME_LENGTH}",
                "message": f"metadata.name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
                "(it names the Service and Deployment)",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "modelship", "app.kubernetes.io/part-of": "modelship"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "modelship"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.serving.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _printer_columns(),
                }
            ],
        },
    }


# Plain scalars that YAML 1.1 readers (Go's yaml, so kubectl and helm) take for booleans; PyYAML (YAML 1.1
# without y/n) would leave some of them unquoted.
_YAML11_BOOLS = {"y", "Y", "n", "N", "yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF",
                 "true", "True", "TRUE", "false", "False", "FALSE"}  # fmt: skip


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if value in _YAML11_BOOLS else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def crd_yaml() -> str:
    """The CRD as YAML, exactly as committed in crds/ (strings that Go YAML would read as booleans quoted)."""
    header = "# Generated by `modelship crd` from operator/modelship/api; do not edit by hand.\n"
    return header + yaml.dump(crd(), Dumper=_Dumper, sort_keys=False, width=120)
