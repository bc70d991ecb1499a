"""Validate objects against the generated CRD the way the API server does: structural defaults, then the
OpenAPI schema, then every CEL rule (evaluated with cel-python) at every node present in the object."""

from __future__ import annotations

import copy
import datetime
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "modelship.io_modeldeployments.yaml"


@cache
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def root_schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Structural defaulting: fill absent properties that have a default, recursively, where the parent exists."""
    if isinstance(obj, dict) and "properties" in schema:
        for name, prop in schema["properties"].items():
            if name not in obj and "default" in prop:
                obj[name] = copy.deepcopy(prop["default"])
            if name in obj:
                obj[name] = apply_defaults(prop, obj[name])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in obj]
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: apply_defaults(schema["additionalProperties"], v) for k, v in obj.items()}
    return obj


_ENV = celpy.Environment()


@cache
def _program(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule))


def _typed(schema: dict[str, Any], obj: Any) -> Any:
    """JSON numbers in `type: number` fields are doubles in the API server's CEL, even when written as 5."""
    if schema.get("type") == "number" and isinstance(obj, int) and not isinstance(obj, bool):
        return float(obj)
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        return {k: _typed(props.get(k, extra), v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_typed(schema.get("items") or {}, v) for v in obj]
    return obj


def _cel_errors(schema: dict[str, Any], obj: Any, path: str) -> list[str]:
    errors: list[str] = []
    for v in schema.get("x-kubernetes-validations", []):
        result = _program(v["rule"]).evaluate({"self": celpy.json_to_cel(obj)})
        if isinstance(result, Exception) or not bool(result):
            where = path + v.get("fieldPath", "")
            errors.append(f"{where}: Invalid value: {v['message']}")
    if isinstance(obj, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name in obj:
                errors += _cel_errors(prop, obj[name], f"{path}.{name}")
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def _unknown_fields(schema: dict[str, Any], obj: Any, path: str) -> list[str]:
    """Strict field validation (kubectl's default): fields the schema does not declare are errors."""
    errors: list[str] = []
    if isinstance(obj, dict) and "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for key, value in obj.items():
            if key not in schema["properties"]:
                errors.append(f'{path}.{key}: unknown field "{key}"')
            else:
                errors += _unknown_fields(schema["properties"][key], value, f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            errors += _unknown_fields(schema["items"], item, f"{path}[{i}]")
    return errors


def _json_ready(obj: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(obj, default_flow_style=None)) if not isinstance(obj, datetime.date) else obj


def validate(doc: dict[str, Any]) -> list[str]:
    """Messages the API server would give (schema first; CEL only when the schema passes, as it does)."""
    schema = root_schema()
    obj = apply_defaults(schema, copy.deepcopy(_json_ready(doc)))
    validator = jsonschema.Draft4Validator(schema)  # OpenAPI v3.0 keeps draft-4 bounds
    errors = _unknown_fields(schema, obj, "") + [
        ".".join(str(p) for p in e.absolute_path) + f": {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]
    if errors:
        return errors
    return _cel_errors(schema, _typed(schema, obj), "")
