"""The whole desired state of one ModelDeployment, as a pure function of its spec and its stage results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.modeldeployment import ModelDeployment
from ..api.serving import RolloutStrategy
from ..config import OperatorConfig
from .artifact import artifact_target
from .canary import canary_service
from .kinds import HORIZONTAL_POD_AUTOSCALER, NETWORK_POLICY, POD_DISRUPTION_BUDGET
from .optimize_job import optimize_job
from .revision import revision as compute_revision
from .route import http_route
from .serving import (
    ServedArtifact,
    deployment,
    desired_replicas,
    horizontal_pod_autoscaler,
    network_policy,
    pod_disruption_budget,
    service,
)
from .volumes import artifact_claim


@dataclass(frozen=True)
class ServingPlan:
    """Serving objects for one revision. Optional objects are None when the spec turns them off, which tells
    the operator to delete any it created before."""

    deployment: dict[str, Any]
    service: dict[str, Any]
    hpa: dict[str, Any] | None
    pdb: dict[str, Any] | None
    network_policy: dict[str, Any] | None

    def objects(self) -> list[dict[str, Any]]:
        return [o for o in (self.deployment, self.service, self.hpa, self.pdb, self.network_policy) if o is not None]

    def optional(self) -> dict[str, dict[str, Any] | None]:
        """Kind -> object (None: turned off) of the objects the spec can turn off: the pruned kinds."""
        return {
            HORIZONTAL_POD_AUTOSCALER.kind: self.hpa,
            POD_DISRUPTION_BUDGET.kind: self.pdb,
            NETWORK_POLICY.kind: self.network_policy,
        }


def serving_plan(
    md: ModelDeployment,
    revision: str,
    config: OperatorConfig,
    image: str | None,
    artifact: ServedArtifact | None = None,
    mirror_from: str | None = None,
) -> ServingPlan:
    return ServingPlan(
        deployment=deployment(md, revision, config, image, desired_replicas(md), artifact, mirror_from),
        service=service(md),
        hpa=horizontal_pod_autoscaler(md),
        pdb=pod_disruption_budget(md),
        network_policy=network_policy(md, config.operator_namespace),
    )


def render_all(md: ModelDeployment, config: OperatorConfig, image: str | None = None) -> list[dict[str, Any]]:
    """Every object the spec leads to, in the order the stages create them (for `modelship render`)."""
    rev = compute_revision(md.spec)
    objects: list[dict[str, Any]] = [artifact_claim(md, config)]
    # the optimization Job always runs: it fetches and verifies the model, and with optimization disabled it
    # still converts it to the served format and measures it
    objects.append(optimize_job(md, rev, config))
    if md.spec.build.enabled:
        from .build_job import UNKNOWN_DIGEST, build_job  # the image-build builder lives beside its engine settings

        # the artifact's digest is known once the optimization Job reported it: render shows a placeholder
        objects.append(build_job(md, rev, UNKNOWN_DIGEST, config))
        if image is None and md.spec.build.repository:
            image = f"{md.spec.build.repository}:{rev}"
    target = artifact_target(md, config, rev)  # build disabled: the artifact the optimization Job will push
    artifact = ServedArtifact(target.reference) if target is not None and image is None else None
    objects += serving_plan(md, rev, config, image, artifact).objects()
    if md.spec.serving.rollout.strategy == RolloutStrategy.CANARY:
        # the candidate's Service (where the stable pods read a candidate's mirror settings); the candidate's
        # Deployment exists only while a new revision is verified
        objects.append(canary_service(md))
        route = http_route(md, 0)  # trafficRouting.gatewayAPI: everything to the stable Service until a rollout
        if route is not None:
            objects.append(route)
    return objects
