"""The image-build stage: engine, destination repository, push credentials, platforms."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StrictBool, StringConstraints, model_validator

from .common import ApiModel, LocalObjectReference, nested
from .jobs import JobSettings
from .rules import Rule, enforce, rules_schema


class BuildEngine(StrEnum):
    """In-cluster builder."""

    BUILDKIT = "buildkit"
    KANIKO = "kaniko"


class Platform(StrEnum):
    """Target platform of the serving image."""

    AMD64 = "linux/amd64"
    ARM64 = "linux/arm64"


REPOSITORY_PATTERN = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$"
REGISTRY_PREFIX_PATTERN = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
"""A registry host, optionally with a path: the operator's default repository prefix (MODELSHIP_BUILD_REGISTRY)."""
REPOSITORY_MAX_LENGTH = 255

BUILD_RULES: tuple[Rule, ...] = (
    Rule(
        cel="!has(self.engine) || self.engine != 'kaniko' || size(self.platforms) == 1",
        message="kaniko builds one platform: use engine buildkit for a multi-platform image",
        check=lambda m: m.engine != BuildEngine.KANIKO or len(m.platforms) == 1,
        field_path=".platforms",
    ),
)


def _operator_default(schema: dict[str, Any]) -> None:
    """No default in the CRD: an object that leaves the field out is completed by the operator's configuration
    (``resources.defaults``), which tells "left out" from "set" by the field not being in ``model_fields_set``."""
    schema.pop("default", None)


class Build(ApiModel):
    """How the optimized model is packaged into a serving image and pushed."""

    model_config = ConfigDict(json_schema_extra=rules_schema(BUILD_RULES))

    enabled: StrictBool = True
    """false serves the artifact from the artifact volume with the stock runtime image (no build, no push)."""
    engine: BuildEngine = Field(default=BuildEngine.BUILDKIT, json_schema_extra=_operator_default)
    """buildkit (rootless) or kaniko. Left out: the operator's default engine (the chart's build.engine, buildkit
    unless the platform changed it)."""
    repository: (
        Annotated[str, StringConstraints(pattern=REPOSITORY_PATTERN, max_length=REPOSITORY_MAX_LENGTH)] | None
    ) = None
    """Repository to push to, e.g. registry.example.com/models/digits; the tag is the revision. Unset: the
    operator's default registry (the chart's build.registry) + /<namespace>/<name>; required when the operator
    has none."""
    push_secret_ref: LocalObjectReference | None = None
    """Secret of type kubernetes.io/dockerconfigjson with push credentials for the registry."""
    insecure_registry: StrictBool = False
    """Push over plain HTTP (for an in-cluster registry without TLS)."""
    platforms: Annotated[list[Platform], Field(min_length=1, max_length=2)] = nested(lambda: [Platform.AMD64])
    """Platforms to build; linux/amd64 and linux/arm64 together give a multi-platform image."""
    base_image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    """Base of the model image; by default the Modelship serving runtime image."""
    job: JobSettings = nested(JobSettings)
    """How the build Job runs."""

    @model_validator(mode="after")
    def _rules(self) -> Build:
        enforce(self, BUILD_RULES)
        return self
