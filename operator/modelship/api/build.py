"""The image-build stage: engine, destination repository, push credentials, platforms."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

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

BUILD_RULES: tuple[Rule, ...] = (
    Rule(
        cel="!self.enabled || has(self.repository)",
        message="an enabled build needs repository (registry/path to push the serving image to)",
        check=lambda m: not m.enabled or m.repository is not None,
        field_path=".repository",
    ),
)


class Build(ApiModel):
    """How the optimized model is packaged into a serving image and pushed."""

    model_config = ConfigDict(json_schema_extra=rules_schema(BUILD_RULES))

    enabled: StrictBool = True
    """false serves the artifact from the artifact volume with the stock runtime image (no build, no push)."""
    engine: BuildEngine = BuildEngine.BUILDKIT
    """buildkit (rootless, default) or kaniko."""
    repository: Annotated[str, StringConstraints(pattern=REPOSITORY_PATTERN, max_length=255)] | None = None
    """Repository to push to, e.g. registry.example.com/models/digits; the tag is the revision."""
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
