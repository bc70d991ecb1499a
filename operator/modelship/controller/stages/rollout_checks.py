"""Where a Deployment stands with a revision's rollout, from its status (and its pods, when listed): whether it runs
the pod template the operator renders now, has rolled it out (fully, or at minReplicas under an HPA), how many
replicas the rollout must reach and how many of the new template's pods are available. Pure; the deploy and verify
stages judge with them."""

from __future__ import annotations

from typing import Any

from ...api.modeldeployment import ModelDeployment
from ...resources.meta import TEMPLATE_ANNOTATION
from ..observe import DeploymentObservation
from ..podhealth import PodHealth, newest_template_hash, of_template


def wanted_replicas(md: ModelDeployment, desired: dict[str, Any], dep: DeploymentObservation | None) -> int:
    """Replicas the rollout must reach: the spec's, or under an HPA the Deployment's count but never fewer than
    minReplicas (a new Deployment starts at 1; the HPA controller raises it to minReplicas)."""
    if "replicas" in desired["spec"]:
        return int(desired["spec"]["replicas"])
    current = dep.replicas if dep else 1
    auto = md.spec.serving.autoscaling
    return max(current, auto.min_replicas) if auto.enabled else current


def same_template(dep: DeploymentObservation, desired: dict[str, Any]) -> bool:
    """The live Deployment runs the pod template the operator renders now, as far as its annotation tells (a
    Deployment an older operator applied has none: revision and image decide alone). False in the pass that
    applies a changed template: that pass still sees the template before it."""
    want = (desired["metadata"].get("annotations") or {}).get(TEMPLATE_ANNOTATION)
    return dep.template is None or want is None or dep.template == want


def rollout_complete(md: ModelDeployment, dep: DeploymentObservation | None, desired: dict[str, Any], rev: str) -> bool:
    if dep is None or dep.revision != rev or not same_template(dep, desired):
        return False
    want_image = desired["spec"]["template"]["spec"]["containers"][0]["image"]
    want = wanted_replicas(md, desired, dep)
    return (
        dep.image == want_image
        and dep.replicas == want
        and dep.observed_generation >= dep.generation
        and dep.updated_replicas == want
        and dep.status_replicas == want
        and dep.available_replicas >= want
    )


ROLLED_OUT = "NewReplicaSetAvailable"
"""The Deployment controller's Progressing reason once the newest template is fully rolled out; it keeps it while
the Deployment only scales and replaces it as soon as it sees a new template (NewReplicaSetCreated,
FoundNewReplicaSet, ReplicaSetUpdated) or the deadline passes (ProgressDeadlineExceeded)."""


def autoscaled_floor(md: ModelDeployment, desired: dict[str, Any]) -> int | None:
    """minReplicas while an HPA owns the Deployment's count (the manifest leaves spec.replicas out), else None."""
    auto = md.spec.serving.autoscaling
    return auto.min_replicas if auto.enabled and "replicas" not in desired["spec"] else None


def template_rolled_out(dep: DeploymentObservation | None, desired: dict[str, Any], rev: str) -> bool:
    """The Deployment runs ``rev``'s template (revision, image) and its controller finished rolling that template
    out: every pod it counts is of it (updated = all), none of an old one, whatever the count is moving to."""
    if dep is None or dep.revision != rev or not same_template(dep, desired):
        return False
    return (
        dep.image == desired["spec"]["template"]["spec"]["containers"][0]["image"]
        and dep.progress_reason == ROLLED_OUT
        and dep.updated_replicas == dep.status_replicas
    )


def serves_at_floor(
    dep: DeploymentObservation | None, desired: dict[str, Any], rev: str, floor: int, routed: int, lag_ok: bool
) -> bool:
    """``dep`` runs ``rev``'s template fully rolled out (the Deployment controller's word, kept while only its count
    moves) and at least ``floor`` of its pods are available and ``routed`` (ready endpoints of the Service that
    brings them traffic), whatever count an autoscaler is moving it to. A status the controller has not caught up
    with (observedGeneration behind) is trusted only when ``lag_ok`` (the caller judged this template rolled out
    before, and nothing but a count can have moved since) and the Deployment carries the operator's template
    digest; otherwise the unobserved change may be a new template, and False."""
    if dep is None:
        return False
    if dep.observed_generation < dep.generation and (not lag_ok or dep.template is None):
        return False
    return template_rolled_out(dep, desired, rev) and dep.available_replicas >= floor and routed >= floor


def judged_pods(
    pods: tuple[PodHealth, ...] | None, dep: DeploymentObservation | None, desired: dict[str, Any]
) -> tuple[PodHealth, ...] | None:
    """The serving pods whose health speaks for the template the operator renders now: none (None) until the
    Deployment runs it and its controller has observed it, then only the pods of its newest ReplicaSet (by
    pod-template-hash, the one the Progressing condition names). A fix that keeps the revision (a higher memory
    limit) is a new template: the old template's crash-looping pods, still there while the fixed ones come up, are
    not its crash loop (nor described with its new limit), and ContainerHealthy's clock starts again with it."""
    if pods is None or dep is None or not same_template(dep, desired) or dep.observed_generation < dep.generation:
        return None
    return of_template(pods, newest_template_hash(dep.name, dep.progress_message))


def newest_available(
    dep: DeploymentObservation | None, desired: dict[str, Any], rev: str, pods: tuple[PodHealth, ...] | None
) -> tuple[int, int]:
    """How many pods of the template the operator renders now for ``rev`` are available, as (fewest, most): one
    number when it is known. The Deployment's availableReplicas counts the pods of every template, the old ones
    that still serve during a rollout included, and updatedReplicas counts the newest template's pods, available or
    not: neither is it, nor is their minimum (while old pods are available, it counts them as new ones). So:

    - none while the Deployment does not run that template (another revision, or the pass that applies a changed
      one);
    - the pods of its newest ReplicaSet that are Ready (``judged_pods``: listed in this pass, the template its
      Progressing condition names), exact: the operator sets no minReadySeconds, so a Ready pod is available;
    - else from its status alone: at least availableReplicas less the pods of older templates (status.replicas less
      updatedReplicas, each of which may be available), at most the fewer of updatedReplicas and
      availableReplicas; the two meet when no older pod is left or all of them are available."""
    if dep is None or dep.revision != rev or not same_template(dep, desired):
        return 0, 0
    if pods is not None and newest_template_hash(dep.name, dep.progress_message) is not None:
        ready = sum(1 for p in pods if p.ready and p.revision == rev)
        return ready, ready
    older = max(0, dep.status_replicas - dep.updated_replicas)
    most = max(0, min(dep.updated_replicas, dep.available_replicas))
    return min(most, max(0, dep.available_replicas - older)), most
