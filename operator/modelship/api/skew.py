"""Reading a ModelDeployment that a newer CRD serves: version skew between the installed CRD and this operator.

The CRD can be newer than the running operator (a Helm upgrade mid-rollout, CRDs applied before the operator image
rolls, Argo CD syncing CRDs first). The API server then returns fields the operator's models do not know: spec
fields (often filled in by the newer CRD's defaults, which the API server applies on every read) and status fields
a newer operator wrote. The models reject unknown fields (``ApiModel``: ``extra="forbid"``), which is right for a
local YAML file (a typo there is an error: ``ModelDeployment.from_body`` stays strict for the CLI), but the
operator reads objects from the API server through ``read_served``:

- **status** is the operators' own record: a field this operator does not know was written by a newer one. It is
  left out of the parsed status (``read_status``) and put back, as it is, into every status this operator writes
  (``keep_unknown``), so the merge patch never removes it. So is a top-level field this operator knows whose value
  it cannot read (a newer operator's enum value): ``read_status`` reports it (``StatusReading.unreadable``) and a
  status write leaves it as it is unless it sets the field itself (``controller.skew.keep_unknown_status``).
- **spec** is the tenant's: a field this operator does not know is a setting it cannot honour, never silently
  ignored: ``UnsupportedFields`` names every such path. One exception: a field whose value is what the served CRD's
  schema defaults it to (when the operator can read the served CRD) is a newer CRD defaulting a field, not the
  tenant asking for anything; it is left out (``Reading.tolerated``). Compatible API evolution keeps a new field's
  default at the old behaviour, which is what this operator does.

Everything here is pure: paths and values in, paths and values out. "Known" is the structural schema this
operator's CRD is generated from (``api.crd.openapi_schema``), walked as the API server walks a structural schema
(``properties``, ``additionalProperties``, ``items``, ``x-kubernetes-preserve-unknown-fields``).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import ValidationError

from .. import API_VERSION, __version__
from .crd import openapi_schema
from .modeldeployment import ModelDeployment, ModelDeploymentSpec
from .status import ModelDeploymentStatus

Path = tuple[str | int, ...]
"""Where a field is: object keys (str) and list indexes (int), from the root of spec or status."""
Schema = Mapping[str, Any]
"""A structural OpenAPI v3 schema node (as in a CRD's openAPIV3Schema)."""

KOPF_STATUS_KEY = "kopf"
"""kopf's own progress record in status (legacy storage): neither ours to know nor ours to remove."""
VALUE_TEXT_LIMIT = 80


@functools.cache
def known_spec_schema() -> Schema:
    """The spec schema this operator knows (the one its CRD is generated from)."""
    return openapi_schema(ModelDeploymentSpec)


@functools.cache
def known_status_schema() -> Schema:
    """The status schema this operator knows."""
    return openapi_schema(ModelDeploymentStatus)


def path_text(root: str, path: Path, indexes: bool = True) -> str:
    """``spec.optimization.steps[1].prune`` (``[]`` for every index when ``indexes`` is False)."""
    out = root
    for part in path:
        out += (f"[{part}]" if indexes else "[]") if isinstance(part, int) else f".{part}"
    return out


def _free_form(node: Schema) -> bool:
    """Anything goes below this node: nothing in it is unknown."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return True
    return node.get("properties") is None and not isinstance(node.get("additionalProperties"), Mapping)


def _child(node: Schema, key: str | int) -> Schema | None:
    """The schema of ``key`` below ``node``: a property, a map value, a list item; None when it declares none."""
    if isinstance(key, int):
        items = node.get("items")
        return items if isinstance(items, Mapping) else None
    props = node.get("properties") or {}
    if key in props:
        sub = props[key]
        return sub if isinstance(sub, Mapping) else None
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def unknown_fields(schema: Schema, data: Any) -> list[Path]:
    """Every field of ``data`` that ``schema`` does not declare (the outermost one: nothing below it is listed),
    in document order."""
    out: list[Path] = []
    _walk(schema, data, (), out)
    return out


def _walk(node: Schema, data: Any, path: Path, out: list[Path]) -> None:
    if isinstance(data, Mapping):
        if _free_form(node):
            return
        for key, value in data.items():
            sub = _child(node, key)
            if sub is None:
                out.append((*path, key))
            else:
                _walk(sub, value, (*path, key), out)
    elif isinstance(data, list):
        items = _child(node, 0)
        if items is not None:
            for i, value in enumerate(data):
                _walk(items, value, (*path, i), out)


def schema_at(schema: Schema, path: Path) -> Schema | None:
    """The schema node of ``path``; None when the schema does not declare it."""
    node: Schema | None = schema
    for part in path:
        if node is None:
            return None
        node = _child(node, part)
    return node


def value_at(data: Any, path: Path) -> Any:
    for part in path:
        data = data[part]
    return data


def defaulted(node: Schema, value: Any) -> Any:
    """``value`` with the schema's defaults filled in below it, as the API server's structural defaulting does
    (a missing property with a ``default`` gets a copy of it, then everything is defaulted further down)."""
    if isinstance(value, Mapping):
        props = node.get("properties") or {}
        out = dict(value)
        for key, sub in props.items():
            if key not in out and isinstance(sub, Mapping) and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
        for key, item in out.items():
            sub_node = _child(node, key)
            if sub_node is not None:
                out[key] = defaulted(sub_node, item)
        return out
    if isinstance(value, list):
        items = _child(node, 0)
        return [defaulted(items, v) for v in value] if items is not None else value
    return value


def served_default(schema: Schema, path: Path) -> tuple[bool, Any]:
    """(True, the value the API server gives ``path`` when it is not set) when ``schema`` declares a default
    there; (False, None) when it declares none."""
    node = schema_at(schema, path)
    if node is None or "default" not in node:
        return False, None
    return True, defaulted(node, copy.deepcopy(node["default"]))


def without(data: Any, paths: list[Path]) -> Any:
    """A copy of ``data`` with the fields at ``paths`` (each ending in an object key) removed (``data`` itself
    when there are none)."""
    if not paths:
        return data
    out = copy.deepcopy(data)
    for path in paths:
        parent = value_at(out, path[:-1])
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    return out


def keep_unknown(schema: Schema, current: Any, desired: Any) -> Any:
    """``desired`` with every field of ``current`` that ``schema`` does not declare put back as it is, where
    ``desired`` still has its parent: a JSON merge patch from ``current`` to the result leaves a newer operator's
    fields alone. Items of a list keyed by ``x-kubernetes-list-map-keys`` (conditions) are matched by their keys;
    other lists are replaced whole (as a merge patch does) and keep nothing."""
    if isinstance(current, Mapping) and isinstance(desired, Mapping):
        if _free_form(schema):
            return desired
        out = dict(desired)
        for key, have in current.items():
            sub = _child(schema, key)
            if sub is None:
                out.setdefault(key, copy.deepcopy(have))
            elif key in out:
                out[key] = keep_unknown(sub, have, out[key])
        return out
    if isinstance(current, list) and isinstance(desired, list) and schema.get("x-kubernetes-list-type") == "map":
        keys = tuple(schema.get("x-kubernetes-list-map-keys") or ())
        items = _child(schema, 0)
        if not keys or items is None:
            return desired

        def key_of(item: Any) -> tuple[Any, ...] | None:
            return tuple(item.get(k) for k in keys) if isinstance(item, Mapping) else None

        by_key = {key_of(item): item for item in current}
        return [keep_unknown(items, by_key[key_of(w)], w) if key_of(w) in by_key else w for w in desired]
    return desired


@dataclass(frozen=True)
class UnknownField:
    """A field of the object that this operator's models do not declare."""

    path: str
    """As on the wire: ``spec.serving.turbo``."""
    value: Any

    def describe(self) -> str:
        text = json.dumps(self.value, sort_keys=True, default=str)
        if len(text) > VALUE_TEXT_LIMIT:
            text = text[: VALUE_TEXT_LIMIT - 3] + "..."
        return f"{self.path} ({text})"


class UnsupportedFields(ValueError):
    """The spec sets fields this operator does not know: a newer CRD than the operator is installed."""

    def __init__(self, fields: tuple[UnknownField, ...], schema_read: bool) -> None:
        self.fields = fields
        self.schema_read = schema_read
        super().__init__(self.message())

    def message(self, serving_revision: str | None = None) -> str:
        """The condition message: every field with its value, this operator's version, what to do."""
        names = ", ".join(f.describe() for f in self.fields)
        verb = "is" if len(self.fields) == 1 else "are"
        keeps = f" (revision {serving_revision} keeps serving)" if serving_revision else ""
        text = (
            f"{names} {verb} not known to this operator (modelship {__version__}, {API_VERSION}): the installed "
            f"ModelDeployment CRD is newer than the operator. Upgrade the operator to a version that knows "
            f"{'it' if len(self.fields) == 1 else 'them'}, or remove {'it' if len(self.fields) == 1 else 'them'} "
            f"from the spec; until then nothing is changed{keeps}"
        )
        if not self.schema_read:
            text += (
                ". This operator cannot read the installed CRD (no list on customresourcedefinitions: a namespaced "
                "install), so a field that a newer CRD only defaults is not told apart from one the spec sets"
            )
        return text


@dataclass(frozen=True)
class Reading:
    """A ModelDeployment as read from the API server, and what of it this operator left out."""

    md: ModelDeployment
    tolerated: tuple[UnknownField, ...] = ()
    """Spec fields left out: each holds the value the served CRD defaults it to."""
    ignored: tuple[str, ...] = ()
    """Status fields left out: written by a newer operator (or unreadable to this one)."""


class StatusReading(NamedTuple):
    """What ``read_status`` made of a raw status."""

    status: ModelDeploymentStatus
    ignored: tuple[str, ...]
    """The paths left out: fields this operator does not know, and the top-level fields in ``unreadable``."""
    unreadable: frozenset[str]
    """Top-level keys this operator knows whose values it cannot read (a newer operator's enum value, as
    ``status.rollout`` with a phase this one lacks): a status write leaves them as they are unless it sets them."""


def read_status(raw: Any) -> StatusReading:
    """The status this operator can read of ``raw``, and the paths it left out: fields it does not know, and
    top-level fields whose values it cannot read (a newer operator's enum value). Never raises."""
    if not isinstance(raw, Mapping):
        return StatusReading(ModelDeploymentStatus(), (), frozenset())
    raw = {k: v for k, v in raw.items() if k != KOPF_STATUS_KEY}
    unknown = unknown_fields(known_status_schema(), raw)
    data: dict[str, Any] = without(raw, unknown)
    ignored = [path_text("status", p) for p in unknown]
    unreadable: set[str] = set()
    while True:
        try:
            return StatusReading(ModelDeploymentStatus.model_validate(data), tuple(ignored), frozenset(unreadable))
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]} & data.keys()
            if not bad:
                return StatusReading(ModelDeploymentStatus(), (*ignored, "status"), frozenset(unreadable | data.keys()))
            ignored += [f"status.{k}" for k in sorted(bad)]
            unreadable |= bad
            data = {k: v for k, v in data.items() if k not in bad}


def read_served(body: Mapping[str, Any], served_spec: Callable[[], Schema | None]) -> Reading:
    """Parse a ModelDeployment as the API server served it (see the module's docstring for the policy).

    ``served_spec`` gives the spec schema of the CRD the API server serves (None when the operator cannot read it);
    it is asked only when the spec has fields this operator does not know. Raises ``UnsupportedFields`` for
    spec fields it cannot honour, ``pydantic.ValidationError`` for a spec that is invalid besides."""
    spec = body.get("spec")
    unknown = unknown_fields(known_spec_schema(), spec)
    tolerated: list[UnknownField] = []
    if unknown:
        served = served_spec()
        unsupported: list[UnknownField] = []
        for path in unknown:
            field = UnknownField(path_text("spec", path), value_at(spec, path))
            found, default = served_default(served, path) if served is not None else (False, None)
            (tolerated if found and default == field.value else unsupported).append(field)
        if unsupported:
            raise UnsupportedFields(tuple(unsupported), schema_read=served is not None)
    status, ignored, _ = read_status(body.get("status"))
    md = ModelDeployment.model_validate({**body, "spec": without(spec, unknown), "status": {}})
    return Reading(md.model_copy(update={"status": status}), tuple(tolerated), ignored)


def served_spec_schema(crd: Mapping[str, Any], version: str) -> Schema | None:
    """The spec schema of ``version`` in a CustomResourceDefinition as the API server returns it."""
    for v in (crd.get("spec") or {}).get("versions") or []:
        if v.get("name") == version:
            root = ((v.get("schema") or {}).get("openAPIV3Schema") or {}).get("properties") or {}
            spec = root.get("spec")
            return spec if isinstance(spec, Mapping) else None
    return None
