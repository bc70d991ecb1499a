"""Settings shared by the Jobs the operator runs (optimization and image build)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .common import ApiModel, ResourceRequirements, Toleration


class JobSettings(ApiModel):
    """How a stage's Job runs: image, resources, placement, limits and retries."""

    image: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    """Container image; by default the operator's configured image for this stage (pinned by digest in the chart)."""
    resources: ResourceRequirements | None = None
    """Compute resources of the Job's container."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Extra node labels the Job's pod must match."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Extra tolerations of the Job's pod."""
    active_deadline_seconds: Annotated[int, Field(ge=30, le=7 * 24 * 3600)] = 3600
    """Wall-clock limit of one attempt; the Job fails when it is exceeded."""
    backoff_limit: Annotated[int, Field(ge=0, le=10)] = 2
    """Pod retries inside one Job before the Job counts as failed."""
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations added to the Job's pod (e.g. for sidecar injection opt-out or cost allocation)."""
