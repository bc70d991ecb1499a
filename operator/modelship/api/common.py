"""Shared building blocks of the ModelDeployment API: the wire convention (camelCase), references, resources."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

# A non-negative Kubernetes quantity ("500m", "2Gi", "1", "1e3"): the API server's grammar (a number, then one
# binary or decimal SI suffix or an exponent) without the minus sign, since every quantity of the spec is an
# amount of a resource; "-1", "1.2.3", "512mb" or "1Mm" are refused at admission, naming the field, not later
# by the API server in a child the operator writes.
QUANTITY_PATTERN = r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?$"
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DnsSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        validate_default=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it goes to the API server: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(ApiModel):
    """A reference to an object in the ModelDeployment's own namespace."""

    name: DnsSubdomain
    """Name of the referenced object."""


class KeyReference(ApiModel):
    """A reference to one key of a Secret or ConfigMap in the ModelDeployment's namespace."""

    name: DnsSubdomain
    """Name of the Secret or ConfigMap."""
    key: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key inside it."""


class Toleration(ApiModel):
    """A pod toleration (same fields as core/v1 Toleration)."""

    key: str | None = None
    """Taint key the toleration applies to; empty matches all keys (with operator Exists)."""
    operator: Annotated[str, StringConstraints(pattern=r"^(Exists|Equal)$")] | None = None
    """Exists or Equal (default Equal)."""
    value: str | None = None
    """Taint value the toleration matches (operator Equal)."""
    effect: Annotated[str, StringConstraints(pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """How long a NoExecute taint is tolerated before eviction."""


class ResourceRequirements(ApiModel):
    """Compute resources of a container (same shape as core/v1 ResourceRequirements)."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    """Minimum resources the scheduler reserves, e.g. {cpu: 500m, memory: 1Gi}."""
    limits: dict[str, Quantity] = Field(default_factory=dict)
    """Maximum resources the container may use, e.g. {memory: 1Gi}."""


def camel(name: str) -> str:
    """snake_case -> camelCase, as on the wire."""
    return to_camel(name)


_SPACES = re.compile(r"\s+")


def one_line(text: str) -> str:
    """Collapse whitespace: descriptions and messages are shown on one line by kubectl."""
    return _SPACES.sub(" ", text).strip()


def _wire_default(value: Any) -> Any:
    if isinstance(value, ApiModel):
        # the whole object, not {}: the API server checks a default against the CEL rules as it stands
        return value.wire()
    if isinstance(value, list):
        return [_wire_default(v) for v in value]
    return getattr(value, "value", value)


def nested(factory: Callable[[], Any]) -> Any:
    """A field whose default is built by ``factory``, with the same default declared in the CRD, so the API
    server fills nested objects exactly as pydantic does (and CEL rules can rely on them being present)."""
    default = _wire_default(factory())

    def extra(schema: dict[str, Any]) -> None:
        schema["default"] = default

    return Field(default_factory=factory, json_schema_extra=extra)
