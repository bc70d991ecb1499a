"""The ModelDeployment resource (modelship.io/v1alpha1): one object from a model file to a served, optimized model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StringConstraints, model_validator

from .build import Build, Platform
from .common import ApiModel, nested
from .optimization import MetricType, Optimization
from .rules import Rule, enforce, rules_schema
from .serving import HardwareTarget, Serving
from .source import ModelFormat, ModelSource
from .status import ModelDeploymentStatus

SPEC_RULES: tuple[Rule, ...] = (
    Rule(
        cel="self.serving.hardware.target != 'arm64' || !has(self.build) || !self.build.enabled "
        "|| self.build.platforms.exists(p, p == 'linux/arm64')",
        message="hardware target arm64 needs linux/arm64 in build.platforms",
        check=lambda m: (
            m.serving.hardware.target != HardwareTarget.ARM64
            or not m.build.enabled
            or Platform.ARM64 in m.build.platforms
        ),
        field_path=".build.platforms",
    ),
    Rule(
        cel="!(has(self.model.format) ? self.model.format == 'tflite' "
        ": self.model.uri.matches('(?i)\\\\.tflite$')) || !has(self.optimization) || !self.optimization.enabled",
        message="a tflite model is served as is: set optimization.enabled to false",
        check=lambda m: m.model.inferred_format() != ModelFormat.TFLITE or not m.optimization.enabled,
        field_path=".optimization.enabled",
    ),
    Rule(
        cel="!has(self.optimization) || !has(self.optimization.metric) || !has(self.optimization.metric.type) "
        "|| self.optimization.metric.type != 'custom' || (has(self.model.allowCode) && self.model.allowCode)",
        message="a custom metric is Python code run by the optimization Job: set model.allowCode to true "
        "(the platform's policy must allow it)",
        check=lambda m: m.optimization.metric.type != MetricType.CUSTOM or m.model.allow_code,
        field_path=".model.allowCode",
    ),
)


class ModelDeploymentSpec(ApiModel):
    """Desired state: which model, how to optimize it, how to package it, how to serve it."""

    model_config = ConfigDict(json_schema_extra=rules_schema(SPEC_RULES))

    model: ModelSource
    """The trained model."""
    optimization: Optimization = Field(default_factory=lambda: Optimization(enabled=False))
    """Optimization and accuracy gate (disabled when omitted)."""
    build: Build = Field(default_factory=lambda: Build(enabled=False))
    """Serving-image build (disabled when omitted: the stock runtime serves the artifact from the artifact volume)."""
    serving: Serving = nested(Serving)
    """Serving."""
    suspend: StrictBool = False
    """true scales serving to zero and starts no new Jobs; everything else is kept."""

    @model_validator(mode="after")
    def _rules(self) -> ModelDeploymentSpec:
        enforce(self, SPEC_RULES)
        return self


NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH = 45


class ObjectMeta(ApiModel):
    """The part of metadata the operator relies on; everything else passes through untouched."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)]
    """Name; also the name of the Service and Deployment, so a DNS-1035 label of at most 45 characters."""
    namespace: str | None = None
    """Namespace."""
    uid: str | None = None
    """UID (set by the API server)."""
    generation: int | None = None
    """Spec generation (set by the API server)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations."""


class ModelDeployment(ApiModel):
    """A TensorFlow/Keras model optimized behind an accuracy gate, built into an image and served."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["modelship.io/v1alpha1"] = Field(default="modelship.io/v1alpha1", alias="apiVersion")
    """modelship.io/v1alpha1."""
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    """ModelDeployment."""
    metadata: ObjectMeta
    """Standard object metadata."""
    spec: ModelDeploymentSpec
    """Desired state."""
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)
    """Observed state."""

    @classmethod
    def from_body(cls, body: Any) -> ModelDeployment:
        """Parse an object as read from the API server or a YAML file."""
        return cls.model_validate(dict(body))
